// Image preprocessing (SPEC §1.4): decode JPEG/PNG, EXIF orientation, RGB,
// and PIL's BICUBIC resize, so that a C++ server gets the pixels the Python
// reference gets:
//
//     im = PIL.ImageOps.exif_transpose(PIL.Image.open(src)).convert("RGB")
//     pixel_values = np.asarray(im.resize((224, 224), PIL.Image.BICUBIC), np.uint8)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vlfront::impl {

// Limits on untrusted images; the same defaults as Python's ImageLimits.
struct ImageLimits {
  size_t max_bytes = size_t{64} << 20;
  int64_t max_pixels = 64000000;
  int64_t max_side = 32768;
  bool allow_paths = true;
  // Decode mode (Python's DRAFT_HALVES): 0 exact; 4 "fast", 3 "fastest": JPEG DCT-scaled by 1/s,
  // s in {1, 2, 4, 8} the largest keeping both sides >= draft_halves / 2 x the target (Pillow's
  // draft). It travels with the limits because every place that keys or decodes an image has them;
  // it is part of the image key.
  int draft_halves = 0;
};

// RGB pixels, row-major HWC, rows packed.
struct RgbImage {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> pixels;
};

// Decodes JPEG or PNG bytes to RGB with the EXIF/XMP orientation applied (as
// exif_transpose + convert("RGB")). Dimensions are checked against `limits`
// from the header, before any pixel is decoded. Raises Error(VLF_ERR_IMAGE)
// with the reason (the caller adds which image of which request).
// `draft_side` > 0 (fast mode): a JPEG is decoded scaled by 1/s, s the largest of
// 8, 4, 2, 1 with s <= min(width / draft_side, height / draft_side), as Pillow's
// draft(None, (draft_side, draft_side)): libjpeg scale_denom = s, default IDCT
// (ISLOW) and fancy upsampling, output ceil(width / s) x ceil(height / s).
RgbImage decode_image(const uint8_t* data, size_t len, const ImageLimits& limits, int64_t draft_side = 0);

// Pillow's JPEG draft scale for a width x height image and a requested side (1 when draft_side <= 0).
int jpeg_draft_scale(int64_t width, int64_t height, int64_t draft_side);

// Checks width/height against the limits; raises Error(VLF_ERR_IMAGE).
void check_image_dims(int64_t width, int64_t height, const ImageLimits& limits);

// PIL's Image.resize(..., BICUBIC) for RGB uint8: two separable passes
// (horizontal first) with PIL's coefficients in 22-bit fixed point and its
// rounding, an 8-bit intermediate, and no pass along an axis that keeps its size.
// src rows are `src_stride` bytes apart; dst is out_h x out_w x 3, packed.
void resize_bicubic(const uint8_t* src, int64_t width, int64_t height, int64_t src_stride, int out_w, int out_h,
                    uint8_t* dst);

// PIL's Image.transpose for an EXIF orientation 2..8 (others: unchanged).
void apply_orientation(RgbImage& image, int orientation);

// The Orientation (tag 274) of IFD0 in an EXIF block (with or without the
// "Exif\0\0" prefix); 1 when absent or unreadable.
int exif_orientation(const uint8_t* data, size_t len);
// PIL's fallback: `tiff:Orientation(="|>)([0-9])` in an XMP packet; 0 when absent.
int xmp_orientation(std::string_view xmp);

}  // namespace vlfront::impl
