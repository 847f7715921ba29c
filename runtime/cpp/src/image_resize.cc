// Port of Pillow's src/libImaging/Resample.c (BICUBIC, 8 bits per channel) and
// of the Transpose.c operations exif_transpose uses. Kept bit-exact on purpose:
// the floating-point coefficient code below follows Pillow's expression by
// expression, because a different rounding of one coefficient moves pixels by 1.
#include <cmath>
#include <cstring>
#include <vector>

#include "error.h"
#include "image.h"

namespace vlfront::impl {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
constexpr double kBicubicSupport = 2.0;

struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;   // per output: xmin, count
  std::vector<int32_t> k;    // out_size * ksize fixed-point weights
};

// precompute_coeffs + normalize_coeffs_8bpc from Resample.c.
Coeffs precompute(int in_size, float in0, float in1, int out_size) {
  Coeffs c;
  double filterscale, scale;
  filterscale = scale = static_cast<double>(in1 - in0) / out_size;
  if (filterscale < 1.0) filterscale = 1.0;
  const double support = kBicubicSupport * filterscale;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  std::vector<double> kk(static_cast<size_t>(out_size) * c.ksize, 0.0);
  c.bounds.resize(static_cast<size_t>(out_size) * 2);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double* k = &kk[static_cast<size_t>(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double w = bicubic_filter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x)
      if (ww != 0.0) k[x] /= ww;
    c.bounds[xx * 2] = xmin;
    c.bounds[xx * 2 + 1] = xmax;
  }
  c.k.resize(kk.size());
  for (size_t i = 0; i < kk.size(); ++i)
    c.k[i] = kk[i] < 0 ? static_cast<int>(-0.5 + kk[i] * (1 << kPrecisionBits))
                       : static_cast<int>(0.5 + kk[i] * (1 << kPrecisionBits));
  return c;
}

inline uint8_t clip8(int32_t ss) {
  const int32_t v = ss >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Rows [row0, row0 + rows) of src, horizontally resampled into dst (out_w x rows).
void horizontal(const uint8_t* src, int64_t src_stride, int64_t row0, int64_t rows, const Coeffs& c, int out_w,
                uint8_t* dst) {
  for (int64_t y = 0; y < rows; ++y) {
    const uint8_t* in = src + (row0 + y) * src_stride;
    uint8_t* out = dst + y * out_w * 3;
    for (int xx = 0; xx < out_w; ++xx) {
      const int xmin = c.bounds[xx * 2], xmax = c.bounds[xx * 2 + 1];
      const int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      const uint8_t* p = in + static_cast<int64_t>(xmin) * 3;
      for (int x = 0; x < xmax; ++x, p += 3) {
        s0 += p[0] * k[x];
        s1 += p[1] * k[x];
        s2 += p[2] * k[x];
      }
      out[xx * 3] = clip8(s0);
      out[xx * 3 + 1] = clip8(s1);
      out[xx * 3 + 2] = clip8(s2);
    }
  }
}

// Vertical pass over src (width w, rows `src_stride` bytes apart); `shift` is
// subtracted from each output row's first source row.
void vertical(const uint8_t* src, int64_t src_stride, int64_t w, const Coeffs& c, int out_h, int shift,
              uint8_t* dst) {
  std::vector<int32_t> acc(static_cast<size_t>(w) * 3);
  for (int yy = 0; yy < out_h; ++yy) {
    const int ymin = c.bounds[yy * 2] - shift, ymax = c.bounds[yy * 2 + 1];
    const int32_t* k = &c.k[static_cast<size_t>(yy) * c.ksize];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < ymax; ++y) {
      const uint8_t* row = src + static_cast<int64_t>(y + ymin) * src_stride;
      const int32_t ky = k[y];
      for (int64_t i = 0; i < w * 3; ++i) acc[i] += row[i] * ky;
    }
    uint8_t* out = dst + static_cast<int64_t>(yy) * w * 3;
    for (int64_t i = 0; i < w * 3; ++i) out[i] = clip8(acc[i]);
  }
}

}  // namespace

void resize_bicubic(const uint8_t* src, int64_t width, int64_t height, int64_t src_stride, int out_w, int out_h,
                    uint8_t* dst) {
  if (width <= 0 || height <= 0 || out_w <= 0 || out_h <= 0)
    throw Error(VLF_ERR_INVALID_ARGUMENT, "resize of an empty image");
  const bool need_h = out_w != width, need_v = out_h != height;
  if (!need_h && !need_v) {  // PIL returns a copy
    for (int64_t y = 0; y < height; ++y) std::memcpy(dst + y * width * 3, src + y * src_stride, width * 3);
    return;
  }
  const Coeffs ch = need_h ? precompute(static_cast<int>(width), 0.0f, static_cast<float>(width), out_w) : Coeffs{};
  const Coeffs cv = need_v ? precompute(static_cast<int>(height), 0.0f, static_cast<float>(height), out_h) : Coeffs{};
  if (!need_v) {
    horizontal(src, src_stride, 0, height, ch, out_w, dst);
    return;
  }
  if (!need_h) {
    vertical(src, src_stride, width, cv, out_h, 0, dst);
    return;
  }
  // Only the source rows the vertical pass reads go through the horizontal one.
  const int first = cv.bounds[0];
  const int last = cv.bounds[(out_h - 1) * 2] + cv.bounds[(out_h - 1) * 2 + 1];
  std::vector<uint8_t> tmp(static_cast<size_t>(last - first) * out_w * 3);
  horizontal(src, src_stride, first, last - first, ch, out_w, tmp.data());
  vertical(tmp.data(), static_cast<int64_t>(out_w) * 3, out_w, cv, out_h, first, dst);
}

void apply_orientation(RgbImage& im, int orientation) {
  if (orientation < 2 || orientation > 8) return;
  const int64_t w = im.width, h = im.height;
  const bool swap = orientation >= 5;  // 5..8 exchange width and height
  const int64_t ow = swap ? h : w, oh = swap ? w : h;
  std::vector<uint8_t> out(im.pixels.size());
  for (int64_t y = 0; y < oh; ++y) {
    for (int64_t x = 0; x < ow; ++x) {
      int64_t sx = 0, sy = 0;  // source pixel of output (x, y)
      switch (orientation) {
        case 2: sx = w - 1 - x; sy = y; break;          // FLIP_LEFT_RIGHT
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;  // ROTATE_180
        case 4: sx = x; sy = h - 1 - y; break;          // FLIP_TOP_BOTTOM
        case 5: sx = y; sy = x; break;                  // TRANSPOSE
        case 6: sx = y; sy = h - 1 - x; break;          // ROTATE_270 (clockwise 90)
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;  // TRANSVERSE
        case 8: sx = w - 1 - y; sy = x; break;          // ROTATE_90 (counter-clockwise)
      }
      std::memcpy(&out[(y * ow + x) * 3], &im.pixels[(sy * w + sx) * 3], 3);
    }
  }
  im.pixels.swap(out);
  im.width = ow;
  im.height = oh;
}

}  // namespace vlfront::impl
