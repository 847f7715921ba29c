#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "error.h"
#include "image.h"

namespace vlfront::impl {
namespace {

RgbImage grid(int64_t w, int64_t h) {  // pixel (x, y) = (x, y, 7)
  RgbImage im{w, h, std::vector<uint8_t>(static_cast<size_t>(w * h * 3))};
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      uint8_t* p = &im.pixels[static_cast<size_t>((y * w + x) * 3)];
      p[0] = static_cast<uint8_t>(x), p[1] = static_cast<uint8_t>(y), p[2] = 7;
    }
  return im;
}

std::pair<int, int> at(const RgbImage& im, int64_t x, int64_t y) {
  const uint8_t* p = &im.pixels[static_cast<size_t>((y * im.width + x) * 3)];
  return {p[0], p[1]};
}

TEST(Resize, SameSizeIsACopy) {
  RgbImage im = grid(5, 4);
  std::vector<uint8_t> out(im.pixels.size());
  resize_bicubic(im.pixels.data(), 5, 4, 15, 5, 4, out.data());
  EXPECT_EQ(out, im.pixels);
}

TEST(Resize, ConstantStaysConstant) {
  std::vector<uint8_t> src(640 * 427 * 3, 200), out(224 * 224 * 3);
  resize_bicubic(src.data(), 640, 427, 640 * 3, 224, 224, out.data());
  for (uint8_t v : out) ASSERT_EQ(v, 200);
  std::vector<uint8_t> up(300 * 300 * 3);
  resize_bicubic(src.data(), 5, 5, 15, 300, 300, up.data());
  for (uint8_t v : up) ASSERT_EQ(v, 200);
}

TEST(Resize, HonoursRowStride) {
  std::vector<uint8_t> padded(4 * 20, 0xEE), packed(4 * 15);
  for (int y = 0; y < 4; ++y)
    for (int i = 0; i < 15; ++i) padded[y * 20 + i] = packed[y * 15 + i] = static_cast<uint8_t>(y * 15 + i);
  std::vector<uint8_t> a(9 * 3), b(9 * 3);
  resize_bicubic(padded.data(), 5, 4, 20, 3, 3, a.data());
  resize_bicubic(packed.data(), 5, 4, 15, 3, 3, b.data());
  EXPECT_EQ(a, b);
}

TEST(Orientation, MatchesPilTransposes) {
  // A 3x2 image; where does source pixel (0,0) land and what size results.
  struct Case { int o; int64_t w, h, x00, y00; };
  for (const Case c : {Case{1, 3, 2, 0, 0}, Case{2, 3, 2, 2, 0}, Case{3, 3, 2, 2, 1}, Case{4, 3, 2, 0, 1},
                       Case{5, 2, 3, 0, 0}, Case{6, 2, 3, 1, 0}, Case{7, 2, 3, 1, 2}, Case{8, 2, 3, 0, 2}}) {
    RgbImage im = grid(3, 2);
    apply_orientation(im, c.o);
    EXPECT_EQ(im.width, c.w) << c.o;
    EXPECT_EQ(im.height, c.h) << c.o;
    EXPECT_EQ(at(im, c.x00, c.y00), std::make_pair(0, 0)) << "orientation " << c.o;
  }
}

std::vector<uint8_t> tiff_with_orientation(bool le, uint16_t type, uint32_t value) {
  std::vector<uint8_t> t = le ? std::vector<uint8_t>{'I', 'I', 42, 0, 8, 0, 0, 0}
                              : std::vector<uint8_t>{'M', 'M', 0, 42, 0, 0, 0, 8};
  auto u16 = [&](uint16_t v) {
    if (le) t.push_back(v & 0xFF), t.push_back(v >> 8);
    else t.push_back(v >> 8), t.push_back(v & 0xFF);
  };
  auto u32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) t.push_back(static_cast<uint8_t>(le ? v >> (8 * i) : v >> (8 * (3 - i))));
  };
  u16(2);                     // two entries
  u16(0x010F), u16(2), u32(1), u32(0);  // Make (ignored)
  u16(274), u16(type), u32(1);
  if (type == 3) u16(static_cast<uint16_t>(value)), u16(0);
  else u32(value);
  u32(0);
  return t;
}

TEST(Exif, ReadsOrientationBothByteOrders) {
  for (bool le : {true, false}) {
    auto t = tiff_with_orientation(le, 3, 6);
    EXPECT_EQ(exif_orientation(t.data(), t.size()), 6);
    std::vector<uint8_t> with_prefix = {'E', 'x', 'i', 'f', 0, 0};
    with_prefix.insert(with_prefix.end(), t.begin(), t.end());
    EXPECT_EQ(exif_orientation(with_prefix.data(), with_prefix.size()), 6);
    auto l = tiff_with_orientation(le, 4, 8);
    EXPECT_EQ(exif_orientation(l.data(), l.size()), 8);
  }
}

TEST(Exif, MalformedBlocksGiveNoOrientation) {
  auto t = tiff_with_orientation(true, 3, 6);
  for (size_t cut = 0; cut < t.size() - 6; ++cut) EXPECT_EQ(exif_orientation(t.data(), cut), 0) << cut;
  const uint8_t junk[] = "II*\0\xff\xff\xff\xff";
  EXPECT_EQ(exif_orientation(junk, 8), 0);
}

TEST(Xmp, PillowPattern) {
  EXPECT_EQ(xmp_orientation(R"(<rdf tiff:Orientation="3"/>)"), 3);
  EXPECT_EQ(xmp_orientation("<tiff:Orientation>8</tiff:Orientation>"), 8);
  EXPECT_EQ(xmp_orientation("tiff:Orientation=6"), 0);
  EXPECT_EQ(xmp_orientation(""), 0);
}

TEST(Decode, RefusesWithReasons) {
  ImageLimits limits;
  auto reason = [&](const std::vector<uint8_t>& data) {
    try {
      decode_image(data.data(), data.size(), limits);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), VLF_ERR_IMAGE);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(reason({}).find("empty"), std::string::npos);
  EXPECT_NE(reason({'G', 'I', 'F', '8', '9', 'a'}).find("accepted format"), std::string::npos);
  EXPECT_NE(reason({0xFF, 0xD8, 0xFF, 0, 0, 0}).find("JPEG"), std::string::npos);
  EXPECT_NE(reason({0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0}).find("PNG"), std::string::npos);
  limits.max_bytes = 4;
  EXPECT_NE(reason({1, 2, 3, 4, 5}).find("max_image_bytes"), std::string::npos);
}

TEST(Decode, DimensionLimits) {
  ImageLimits limits;
  limits.max_side = 100;
  limits.max_pixels = 50;
  EXPECT_THROW(check_image_dims(101, 1, limits), Error);
  EXPECT_THROW(check_image_dims(10, 6, limits), Error);
  EXPECT_THROW(check_image_dims(0, 6, limits), Error);
  EXPECT_NO_THROW(check_image_dims(10, 5, limits));
}

}  // namespace
}  // namespace vlfront::impl
