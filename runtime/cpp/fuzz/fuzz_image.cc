// Image bytes (JPEG/PNG headers and data, EXIF and XMP orientation): decode_image
// refuses with Error(VLF_ERR_IMAGE) and nothing else, within tight limits so that
// each input stays cheap (the runtime's own limits are larger, the code is the same).
#include <cstdint>
#include <string_view>

#include "error.h"
#include "image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vlfront::impl::ImageLimits limits;
  limits.max_pixels = 1 << 22;
  limits.max_side = 4096;
  (void)vlfront::impl::exif_orientation(data, size);
  (void)vlfront::impl::xmp_orientation(std::string_view(reinterpret_cast<const char*>(data), size));
  for (int64_t draft : {int64_t{0}, int64_t{224}}) {
    try {
      vlfront::impl::RgbImage image = vlfront::impl::decode_image(data, size, limits, draft);
      (void)image;
    } catch (const vlfront::impl::Error&) {
    }
  }
  return 0;
}
