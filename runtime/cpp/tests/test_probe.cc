// The acceptance probe's pieces: the gate's figures and the safetensors reader (negative cases + fuzz).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "error.h"
#include "probe.h"

using vlfront::impl::Error;
using vlfront::impl::parse_safetensors;
using vlfront::impl::probe_figures;

namespace {

std::string le64(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

std::string file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

// Two tensors back to back: a U8 [2, 3] and an F32 [2].
std::string valid() {
  const float f[2] = {1.5f, -2.0f};
  std::string data = "abcdef" + std::string(reinterpret_cast<const char*>(f), sizeof f);
  return file(R"({"a":{"dtype":"U8","shape":[2,3],"data_offsets":[0,6]},)"
              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[6,14]},"__metadata__":{"x":"y"}})",
              data);
}

void expect_refused(const std::string& bytes, const std::string& why) {
  try {
    parse_safetensors(bytes, "probe.safetensors");
    FAIL() << "accepted: " << why;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), VLF_ERR_BUNDLE);
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Probe, FiguresFollowTheGateDefinition) {
  const std::vector<float> e = {1, 0, 0, 1, 3, 4};
  const auto same = probe_figures(e.data(), e.data(), 3, 2);
  EXPECT_DOUBLE_EQ(same.cosine_min, 1.0);
  EXPECT_DOUBLE_EQ(same.rel_l2, 0.0);
  EXPECT_EQ(same.tokens, 3);
  const std::vector<float> a = {-1, 0, 0, 1, 3, 4};
  const auto f = probe_figures(a.data(), e.data(), 3, 2);
  EXPECT_DOUBLE_EQ(f.cosine_min, -1.0);
  EXPECT_NEAR(f.cosine_mean, 1.0 / 3.0, 1e-12);
  EXPECT_NEAR(f.rel_l2, 2.0 / std::sqrt(27.0), 1e-12);
  EXPECT_DOUBLE_EQ(f.max_abs, 2.0);
  EXPECT_TRUE(f.finite);
  const std::vector<float> zero = {0, 0, 0, 1, 3, 4}, z = {0, 0, 1, 0, 3, 4};
  EXPECT_DOUBLE_EQ(probe_figures(zero.data(), zero.data(), 1, 2).cosine_min, 1.0);  // both zero
  EXPECT_DOUBLE_EQ(probe_figures(zero.data(), z.data() + 2, 1, 2).cosine_min, 0.0);  // one zero
  std::vector<float> nan = e;
  nan[3] = std::nanf("");
  EXPECT_FALSE(probe_figures(nan.data(), e.data(), 3, 2).finite);
}

TEST(Probe, ReadsAValidSafetensorsFile) {
  const auto t = parse_safetensors(valid(), "probe.safetensors");
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t.at("a").dtype, "U8");
  EXPECT_EQ(t.at("a").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.at("a").data, "abcdef");
  ASSERT_EQ(t.at("b").data.size(), 8u);
}

TEST(Probe, RefusesMalformedSafetensors) {
  expect_refused("abc", "shorter than its 8-byte header size");
  expect_refused(le64(1u << 30) + "{}", "header of 1073741824 bytes");
  expect_refused(file("[1,2]", ""), "header is not a JSON object");
  expect_refused(file("{not json", ""), "header is not a JSON object");
  expect_refused(file("{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}", ""), "nests deeper than 8");
  expect_refused(file(R"({"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}})", "x"), "unknown dtype Q9");
  expect_refused(file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,1]}})", "x"), "do not hold 2 x 1 bytes");
  expect_refused(file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", "xy"), "inside 2");
  expect_refused(file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                      R"("b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x"),
                 "overlap or leave a gap");
  expect_refused(file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "xyz"), "2 trailing bytes");
  expect_refused(file(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", "x"), "bad shape");
  expect_refused(file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[1,0]}})", "x"), "offsets");
  expect_refused(file(R"({"a":{"dtype":"U8","shape":[1]}})", "x"), "needs dtype, shape and two data_offsets");
  expect_refused(file(R"({"a":{"dtype":"F64","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})",
                      "12345678"),
                 "shape too large");
}

TEST(Probe, FuzzedFilesNeverCrash) {
  const std::string base = valid();
  std::mt19937 rng(8);
  int parsed = 0, refused = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string b = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      const size_t at = rng() % b.size();
      switch (rng() % 3) {
        case 0: b[at] = static_cast<char>(rng()); break;
        case 1: b.erase(at, 1 + rng() % 4); break;
        default: b.insert(at, 1, static_cast<char>(rng())); break;
      }
      if (b.empty()) b = "x";
    }
    try {
      const auto t = parse_safetensors(b, "fuzz");
      for (const auto& [name, tensor] : t) ASSERT_LE(tensor.data.size(), b.size()) << name;
      ++parsed;
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), VLF_ERR_BUNDLE);
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_EQ(parsed + refused, 20000);
}
