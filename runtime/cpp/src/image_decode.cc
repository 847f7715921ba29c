// JPEG (libjpeg-turbo) and PNG (libpng) decoding to RGB, as Pillow's
// Image.open(...) + exif_transpose + convert("RGB") would give:
//  - JPEG: libjpeg's default IDCT and fancy upsampling, output RGB; grayscale
//    replicated; CMYK as Adobe-inverted CMYK then Pillow's cmyk2rgb; a file that
//    ends early is refused (Pillow: "image file is truncated"), other libjpeg
//    warnings are ignored as Pillow does.
//  - PNG: no gamma or colour management (Pillow applies none); alpha dropped;
//    palette expanded ignoring tRNS; 16-bit RGB/LA/RGBA keep the high byte
//    (Pillow's "RGB;16B" unpacking); 16-bit gray clips at 255 (Pillow's I;16 -> RGB).
//  - Orientation from the EXIF block (JPEG APP1, PNG eXIf or "Raw profile type
//    exif"), else from XMP (tiff:Orientation), as Pillow's getexif.
// libjpeg and libpng report errors by longjmp; each setjmp region below holds
// only trivially destructible locals, so no C++ destructor is skipped.
#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "error.h"
#include "image.h"

namespace vlfront::impl {

namespace {

Error image_error(const std::string& reason) { return Error(VLF_ERR_IMAGE, reason); }

uint32_t rd16(const uint8_t* p, bool le) { return le ? p[0] | (p[1] << 8) : (p[0] << 8) | p[1]; }
uint32_t rd32(const uint8_t* p, bool le) {
  return le ? p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24)
            : (static_cast<uint32_t>(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
}

// ---- JPEG --------------------------------------------------------------------

struct JpegErr {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

void jpeg_on_message(j_common_ptr cinfo, int level) {
  auto* err = reinterpret_cast<JpegErr*>(cinfo->err);
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) err->truncated = true;
}

struct JpegHeader {
  int64_t width = 0, height = 0;
  int components = 0;
  J_COLOR_SPACE color = JCS_UNKNOWN;
  std::string exif;  // APP1 "Exif\0\0" segments, Pillow-style concatenated
  std::string xmp;   // the last XMP APP1 packet
};

// Runs libjpeg on `data`: header into `hdr`; when `out` is non-null also the
// pixels, scaled by 1/scale (ceil(width / scale) * ceil(height / scale) * components
// bytes). Returns false and fills `message` on a libjpeg error.
bool run_jpeg(const uint8_t* data, size_t len, JpegHeader& hdr, uint8_t* out, int scale, char* message,
              bool& truncated) {
  jpeg_decompress_struct cinfo;
  JpegErr err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_on_error;
  err.mgr.emit_message = jpeg_on_message;
  err.truncated = false;
  err.message[0] = '\0';
  if (setjmp(err.jump)) {
    std::strncpy(message, err.message, JMSG_LENGTH_MAX);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(len));
  if (!out) jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  if (!out) {
    hdr.width = cinfo.image_width;
    hdr.height = cinfo.image_height;
    hdr.components = cinfo.num_components;
    hdr.color = cinfo.jpeg_color_space;
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
      const char* d = reinterpret_cast<const char*>(m->data);
      if (m->data_length >= 6 && std::memcmp(d, "Exif\0\0", 6) == 0) {
        if (hdr.exif.empty()) hdr.exif.assign(d, m->data_length);
        else hdr.exif.append(d + 6, m->data_length - 6);
      } else if (m->data_length >= 29 && std::memcmp(d, "http://ns.adobe.com/xap/1.0/\0", 29) == 0) {
        hdr.xmp.assign(d + 29, m->data_length - 29);
      }
    }
    jpeg_destroy_decompress(&cinfo);
    return true;
  }
  cinfo.out_color_space = hdr.components == 1 ? JCS_GRAYSCALE : hdr.components == 3 ? JCS_RGB : JCS_CMYK;
  cinfo.scale_num = 1;  // Pillow's draft: only the scale changes (dct_method and upsampling stay default)
  cinfo.scale_denom = static_cast<unsigned>(scale);
  jpeg_start_decompress(&cinfo);
  if (static_cast<int64_t>(cinfo.output_width) != (hdr.width + scale - 1) / scale ||
      static_cast<int64_t>(cinfo.output_height) != (hdr.height + scale - 1) / scale) {
    std::snprintf(message, JMSG_LENGTH_MAX, "unexpected scaled size %ux%u", cinfo.output_width, cinfo.output_height);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  const size_t row = static_cast<size_t>(cinfo.output_width) * cinfo.output_components;
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW rows[1] = {out + static_cast<size_t>(cinfo.output_scanline) * row};
    jpeg_read_scanlines(&cinfo, rows, 1);
  }
  truncated = err.truncated;
  if (!truncated) jpeg_finish_decompress(&cinfo);
  truncated = truncated || err.truncated;
  jpeg_destroy_decompress(&cinfo);
  return true;
}

int orientation_of(const std::string& exif, const std::string& xmp) {
  int o = 0;
  if (!exif.empty()) o = exif_orientation(reinterpret_cast<const uint8_t*>(exif.data()), exif.size());
  if (o == 0 && !xmp.empty()) o = xmp_orientation(xmp);
  return o;
}

RgbImage decode_jpeg(const uint8_t* data, size_t len, const ImageLimits& limits, int64_t draft_side) {
  JpegHeader hdr;
  char message[JMSG_LENGTH_MAX] = {0};
  bool truncated = false;
  if (!run_jpeg(data, len, hdr, nullptr, 1, message, truncated))
    throw image_error(std::string("cannot decode: JPEG: ") + message);
  check_image_dims(hdr.width, hdr.height, limits);
  if (hdr.components != 1 && hdr.components != 3 && hdr.components != 4)
    throw image_error("cannot decode: JPEG with " + std::to_string(hdr.components) + " components");
  const int scale = jpeg_draft_scale(hdr.width, hdr.height, draft_side);
  const int64_t width = (hdr.width + scale - 1) / scale, height = (hdr.height + scale - 1) / scale;
  std::vector<uint8_t> raw(static_cast<size_t>(width * height * hdr.components));
  if (!run_jpeg(data, len, hdr, raw.data(), scale, message, truncated))
    throw image_error(std::string("cannot decode: JPEG: ") + message);
  if (truncated) throw image_error("cannot decode: OSError: image file is truncated");

  RgbImage im;
  im.width = width;
  im.height = height;
  const size_t n = static_cast<size_t>(width * height);
  if (hdr.components == 3) {
    im.pixels.swap(raw);
  } else {
    im.pixels.resize(n * 3);
    for (size_t i = 0; i < n; ++i) {
      if (hdr.components == 1) {
        std::memset(&im.pixels[i * 3], raw[i], 3);
      } else {  // Pillow: "CMYK;I" (Adobe inverted) then cmyk2rgb
        const int k = 255 - raw[i * 4 + 3];  // un-invert: K = 255 - stored
        const int nk = 255 - k;
        for (int c = 0; c < 3; ++c) {
          const int cc = 255 - raw[i * 4 + c];
          int tmp = cc * nk + 128;
          const int v = nk - (((tmp >> 8) + tmp) >> 8);
          im.pixels[i * 3 + c] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
        }
      }
    }
  }
  apply_orientation(im, orientation_of(hdr.exif, hdr.xmp));
  return im;
}

// ---- PNG ---------------------------------------------------------------------

struct PngSource {
  const uint8_t* data;
  size_t len;
  size_t pos;
};

struct PngErr {
  char message[256];
};

void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (n > src->len - src->pos) png_error(png, "image file is truncated");
  std::memcpy(out, src->data + src->pos, n);
  src->pos += n;
}

void png_on_error(png_structp png, png_const_charp msg) {
  auto* err = static_cast<PngErr*>(png_get_error_ptr(png));
  std::snprintf(err->message, sizeof err->message, "%s", msg);
  png_longjmp(png, 1);
}
void png_on_warning(png_structp, png_const_charp) {}

struct PngInfo {
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  std::string exif, xmp, raw_exif_hex;
  uint8_t palette[256 * 3];  // PLTE, entries past its end a gray ramp (as Pillow's palette starts)
};

void collect_png_text(png_structp png, png_infop info, PngInfo& pi) {
  png_textp text = nullptr;
  int n = 0;
  png_get_text(png, info, &text, &n);
  for (int i = 0; i < n; ++i) {
    const std::string key = text[i].key ? text[i].key : "";
    const size_t len = text[i].itxt_length ? text[i].itxt_length : text[i].text_length;
    if (key == "XML:com.adobe.xmp" && text[i].text) pi.xmp.assign(text[i].text, len);
    if (key == "Raw profile type exif" && text[i].text) pi.raw_exif_hex.assign(text[i].text, len);
  }
#ifdef PNG_eXIf_SUPPORTED
  png_bytep exif = nullptr;
  png_uint_32 exif_len = 0;
  if (png_get_eXIf_1(png, info, &exif_len, &exif) && exif && exif_len)
    pi.exif.assign(reinterpret_cast<const char*>(exif), exif_len);
#endif
}

// Stage 1 (rows == nullptr): header and pre-IDAT chunks. Stage 2: the pixels
// (8 or 16 bits per sample as stored, palette expanded) and the chunks after IDAT.
bool run_png(const uint8_t* data, size_t len, PngInfo& pi, uint8_t* rows, size_t row_bytes, char* message) {
  PngErr err{};
  PngSource src{data, len, 0};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, png_on_error, png_on_warning);
  if (!png) {
    std::snprintf(message, 256, "out of memory");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  png_infop end = png_create_info_struct(png);
  if (!info || !end) {
    png_destroy_read_struct(&png, &info, &end);
    std::snprintf(message, 256, "out of memory");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    std::snprintf(message, 256, "%s", err.message);
    png_destroy_read_struct(&png, &info, &end);
    return false;
  }
  png_set_read_fn(png, &src, png_read_mem);
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);  // our own limits are checked from the header
  png_set_chunk_malloc_max(png, 64u << 20);
  png_read_info(png, info);
  if (!rows) {
    png_get_IHDR(png, info, &pi.width, &pi.height, &pi.bit_depth, &pi.color_type, &pi.interlace, nullptr, nullptr);
    for (int i = 0; i < 256; ++i) std::memset(pi.palette + i * 3, i, 3);
    png_colorp plte = nullptr;
    int n_plte = 0;
    if (png_get_PLTE(png, info, &plte, &n_plte) && plte)
      for (int i = 0; i < n_plte && i < 256; ++i)
        pi.palette[i * 3] = plte[i].red, pi.palette[i * 3 + 1] = plte[i].green, pi.palette[i * 3 + 2] = plte[i].blue;
    collect_png_text(png, info, pi);
    png_destroy_read_struct(&png, &info, &end);
    return true;
  }
  // Palette indices are mapped below (png_set_palette_to_rgb would add tRNS alpha).
  if (pi.color_type == PNG_COLOR_TYPE_PALETTE && pi.bit_depth < 8) png_set_packing(png);
  if (pi.color_type == PNG_COLOR_TYPE_GRAY && pi.bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (pi.bit_depth == 16) png_set_swap(png);  // little-endian 16-bit samples in memory
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != row_bytes) {
    std::snprintf(message, 256, "unexpected PNG row size");
    png_destroy_read_struct(&png, &info, &end);
    return false;
  }
  {
    std::vector<png_bytep> ptrs(pi.height);  // allocated before any libpng call can jump
    for (png_uint_32 y = 0; y < pi.height; ++y) ptrs[y] = rows + static_cast<size_t>(y) * row_bytes;
    if (setjmp(png_jmpbuf(png))) {
      std::snprintf(message, 256, "%s", err.message);
      png_destroy_read_struct(&png, &info, &end);
      return false;  // ptrs is destroyed normally on this path
    }
    png_read_image(png, ptrs.data());
    png_read_end(png, end);
  }
  collect_png_text(png, info, pi);
  collect_png_text(png, end, pi);
  png_destroy_read_struct(&png, &info, &end);
  return true;
}

std::string hex_to_bytes(std::string_view raw) {
  // "Raw profile type exif": "\nexif\n<len>\n<hex...>" -> bytes of the hex lines.
  size_t pos = 0;
  for (int nl = 0; nl < 3 && pos != std::string_view::npos; ++nl) pos = raw.find('\n', pos == 0 && nl == 0 ? 0 : pos + 1);
  if (pos == std::string_view::npos) return {};
  std::string out;
  int hi = -1;
  for (size_t i = pos + 1; i < raw.size(); ++i) {
    const char c = raw[i];
    int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
    if (v < 0) continue;
    if (hi < 0) hi = v;
    else out.push_back(static_cast<char>(hi * 16 + v)), hi = -1;
  }
  return out;
}

RgbImage decode_png(const uint8_t* data, size_t len, const ImageLimits& limits) {
  PngInfo pi;
  char message[256] = {0};
  if (!run_png(data, len, pi, nullptr, 0, message)) throw image_error(std::string("cannot decode: PNG: ") + message);
  check_image_dims(pi.width, pi.height, limits);
  const bool palette = pi.color_type == PNG_COLOR_TYPE_PALETTE;
  const int channels = palette ? 1
                       : pi.color_type == PNG_COLOR_TYPE_GRAY       ? 1
                       : pi.color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                       : pi.color_type == PNG_COLOR_TYPE_RGB        ? 3
                                                                    : 4;
  const int bytes_per_sample = (pi.bit_depth == 16) ? 2 : 1;
  const size_t row_bytes = static_cast<size_t>(pi.width) * channels * bytes_per_sample;
  std::vector<uint8_t> raw(row_bytes * pi.height);
  if (!run_png(data, len, pi, raw.data(), row_bytes, message))
    throw image_error(std::string("cannot decode: PNG: ") + message);

  RgbImage im;
  im.width = pi.width;
  im.height = pi.height;
  const size_t n = static_cast<size_t>(pi.width) * pi.height;
  im.pixels.resize(n * 3);
  for (size_t i = 0; i < n; ++i) {
    uint8_t* o = &im.pixels[i * 3];
    if (bytes_per_sample == 1) {
      const uint8_t* s = &raw[i * channels];
      if (palette) std::memcpy(o, &pi.palette[s[0] * 3], 3);
      else if (channels <= 2) std::memset(o, s[0], 3);
      else std::memcpy(o, s, 3);
    } else {
      const uint8_t* s = &raw[i * channels * 2];  // little-endian samples
      if (channels == 1) {
        std::memset(o, s[1] == 0 ? s[0] : 255, 3);  // Pillow I;16 -> RGB clips
      } else if (channels == 2) {
        std::memset(o, s[1], 3);
      } else {
        o[0] = s[1], o[1] = s[3], o[2] = s[5];
      }
    }
  }
  std::string exif = pi.exif.empty() ? std::string() : "Exif" + std::string("\0\0", 2) + pi.exif;
  if (exif.empty() && !pi.raw_exif_hex.empty()) exif = hex_to_bytes(pi.raw_exif_hex);
  apply_orientation(im, orientation_of(exif, pi.xmp));
  return im;
}

}  // namespace

void check_image_dims(int64_t width, int64_t height, const ImageLimits& limits) {
  const std::string dims = std::to_string(width) + "x" + std::to_string(height);
  if (width <= 0 || height <= 0) throw image_error("image is " + dims + ": it has no pixels");
  if (std::max(width, height) > limits.max_side)
    throw image_error("image is " + dims + ", a side over the limit of " + std::to_string(limits.max_side) +
                      " (max_image_side); downscale it");
  if (width * height > limits.max_pixels)
    throw image_error("image is " + dims + " = " + std::to_string(width * height) + " pixels, over the limit of " +
                      std::to_string(limits.max_pixels) + " (max_image_pixels); downscale it");
}

int jpeg_draft_scale(int64_t width, int64_t height, int64_t draft_side) {
  if (draft_side <= 0) return 1;
  const int64_t fit = std::min(width / draft_side, height / draft_side);
  for (int s : {8, 4, 2})
    if (fit >= s) return s;
  return 1;
}

RgbImage decode_image(const uint8_t* data, size_t len, const ImageLimits& limits, int64_t draft_side) {
  if (len == 0) throw image_error("the image is empty (0 bytes)");
  if (len > limits.max_bytes)
    throw image_error("the image has " + std::to_string(len) + " bytes, over the limit of " +
                      std::to_string(limits.max_bytes) + " (max_image_bytes); downscale or recompress it");
  if (len >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return decode_jpeg(data, len, limits, draft_side);
  if (len >= 8 && std::memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0) return decode_png(data, len, limits);
  throw image_error("not a readable image in an accepted format (JPEG, PNG; the C++ runtime decodes these two)");
}

int exif_orientation(const uint8_t* data, size_t len) {
  if (len >= 6 && std::memcmp(data, "Exif\0\0", 6) == 0) data += 6, len -= 6;
  if (len < 8) return 0;
  bool le;
  if (std::memcmp(data, "II*\0", 4) == 0) le = true;
  else if (std::memcmp(data, "MM\0*", 4) == 0) le = false;
  else return 0;
  const uint32_t ifd = rd32(data + 4, le);
  if (ifd < 8 || ifd > len - 2) return 0;
  const uint32_t count = rd16(data + ifd, le);
  for (uint32_t i = 0; i < count; ++i) {
    const size_t e = ifd + 2 + static_cast<size_t>(i) * 12;
    if (e + 12 > len) return 0;
    if (rd16(data + e, le) != 274) continue;
    const uint32_t type = rd16(data + e + 2, le), n = rd32(data + e + 4, le);
    if (n != 1) return 0;
    if (type == 3) return static_cast<int>(rd16(data + e + 8, le));                        // SHORT
    if (type == 4) { const uint32_t v = rd32(data + e + 8, le); return v <= 9 ? static_cast<int>(v) : 0; }  // LONG
    if (type == 1) return data[e + 8];                                                  // BYTE
    return 0;
  }
  return 0;
}

int xmp_orientation(std::string_view xmp) {
  const std::string_view key = "tiff:Orientation";
  for (size_t pos = xmp.find(key); pos != std::string_view::npos; pos = xmp.find(key, pos + 1)) {
    size_t p = pos + key.size();
    if (p + 2 <= xmp.size() && xmp[p] == '=' && xmp[p + 1] == '"') p += 2;
    else if (p + 1 <= xmp.size() && xmp[p] == '>') p += 1;
    else continue;
    if (p < xmp.size() && xmp[p] >= '0' && xmp[p] <= '9') return xmp[p] - '0';
  }
  return 0;
}

}  // namespace vlfront::impl
