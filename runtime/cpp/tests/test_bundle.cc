#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "bundle.h"
#include "error.h"

namespace fs = std::filesystem;

namespace vlfront::impl {
namespace {

std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// Protobuf helpers to hand-build tiny ONNX models.
std::string varint(uint64_t v) {
  std::string out;
  do {
    uint8_t b = v & 0x7F;
    v >>= 7;
    out.push_back(static_cast<char>(b | (v ? 0x80 : 0)));
  } while (v);
  return out;
}
std::string field(int number, const std::string& bytes) { return varint((number << 3) | 2) + varint(bytes.size()) + bytes; }
std::string field_varint(int number, uint64_t v) { return varint(number << 3) + varint(v); }
std::string entry(const std::string& k, const std::string& v) { return field(1, k) + field(2, v); }
std::string external_tensor(const std::string& name, const std::string& location, int offset) {
  return field(8, name) + field(13, entry("location", location)) + field(13, entry("offset", std::to_string(offset))) +
         field(13, entry("length", "16")) + field_varint(14, 1);
}

TEST(OnnxScan, FindsInitializersConstantsAndSubgraphs) {
  const std::string init = external_tensor("W", "weights.safetensors", 128);
  const std::string constant = external_tensor("C", "other.bin", 0);
  const std::string sub = field(5, external_tensor("S", "sub.bin", 8));  // subgraph initializer
  const std::string node = field(5, field(5, constant)) + field(5, field(6, sub));  // attributes t and g
  const std::string model = field_varint(1, 8) + field(7, field(1, node) + field(5, init) + field(5, field(8, "inline")));
  const auto refs = onnx_external_data(model);
  ASSERT_EQ(refs.size(), 3u);
  EXPECT_EQ(refs[0].location, "other.bin");
  EXPECT_EQ(refs[1].location, "sub.bin");
  EXPECT_EQ(refs[2].location, "weights.safetensors");
  EXPECT_EQ(refs[2].offset, 128);
  EXPECT_EQ(refs[2].length, 16);
}

TEST(OnnxScan, MalformedIsABundleError) {
  const std::string model = field(7, field(5, external_tensor("W", "w", 0)));
  for (size_t cut = 1; cut < model.size(); ++cut) {
    try {
      onnx_external_data(model.substr(0, cut));
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), VLF_ERR_BUNDLE);
    }
  }
  EXPECT_THROW(onnx_external_data(std::string("\x0b", 1)), Error);  // wire type 3 (group)
}

TEST(SafePath, RefusesEscapes) {
  const fs::path root = fs::temp_directory_path() / "vlfront_safe_path";
  fs::create_directories(root / "sub");
  std::ofstream(root / "sub" / "ok.bin") << "x";
  EXPECT_EQ(safe_path(root.string(), "sub/ok.bin"), (root / "sub/ok.bin").string());
  for (const char* bad : {"", "/etc/passwd", "../x", "sub/../../x", "~/x", "a\\b"})
    EXPECT_NE(message_of([&] { safe_path(root.string(), bad); }).find("leaves the bundle"), std::string::npos) << bad;
  fs::remove(root / "link");
  fs::create_symlink("/etc/hostname", root / "link");
  EXPECT_NE(message_of([&] { safe_path(root.string(), "link"); }).find("symbolic link"), std::string::npos);
  fs::remove_all(root);
}

TEST(Bundle, ManifestRefusals) {
  const fs::path root = fs::temp_directory_path() / "vlfront_manifest";
  fs::remove_all(root);
  fs::create_directories(root);
  EXPECT_NE(message_of([&] { Bundle::open(root.string()); }).find("no manifest.json"), std::string::npos);
  auto with = [&](const std::string& text) {
    std::ofstream(root / "manifest.json") << text;
    return message_of([&] { Bundle::open(root.string()); });
  };
  EXPECT_NE(with("{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(with(R"({"format": "x"})").find("not a vlfront bundle"), std::string::npos);
  EXPECT_NE(with(R"({"format": "vlfront-bundle", "schema_version": 2})").find("upgrade vlfront"), std::string::npos);
  EXPECT_NE(with(R"({"format": "vlfront-bundle", "schema_version": 1})").find("lacks the 'config' section"),
            std::string::npos);
  const std::string graphs = R"({
      "patch_embed": {"fp32": {"file": "p.onnx",
          "inputs": [{"name": "pixel_values", "dtype": "uint8", "shape": ["N", 224, 224, 3]}],
          "outputs": [{"name": "visual_tokens", "dtype": "float32", "shape": ["N", 196, 64]}]}},
      "fusion": {"fp32": {"file": "f.onnx",
          "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["B", 1024]},
                     {"name": "visual_tokens", "dtype": "float32", "shape": ["N", 196, 64]}],
          "outputs": [{"name": "inputs_embeds", "dtype": "float32", "shape": ["B", 1024, 64]}]}}})";
  const std::string base = R"({"format": "vlfront-bundle", "schema_version": 1, "files": {},
      "tokenizer": {"file": "tokenizer.json"}, "special_ids": {"pad": 151643, "im_start": 151644, "im_end": 151645,
      "vision_start": 151652, "vision_end": 151653, "image_pad": 151655}, "graphs": )" + graphs + R"(, "config": )";
  const std::string rest = R"("image_size": 224, "patch_size": 16, "vocab_rows": 151936, "max_seq_len": 1024,
      "max_text_tokens": 512, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "vision_pos": "sincos2d")";
  EXPECT_NE(with(base + R"({"hidden_size": 62, )" + rest + "}}").find("hidden_size=62"), std::string::npos);
  EXPECT_NE(with(base + R"({"hidden_size": 64, "colour": 1, )" + rest + "}}").find("unknown keys"), std::string::npos);
  EXPECT_NE(with(base + R"({"hidden_size": 64}})").find("config.image_size is missing"), std::string::npos);
  EXPECT_NE(with(base + R"({"hidden_size": 128, )" + rest + "}}").find("the config makes it ['N', 196, 128]"),
            std::string::npos);
  EXPECT_NE(with(base + R"({"hidden_size": "64", )" + rest + "}}").find("config.hidden_size must be an integer, got string"),
            std::string::npos);
  EXPECT_NE(with(std::string(100000, '[') + std::string(100000, ']')).find("nested deeper than 64 levels"),
            std::string::npos);
  EXPECT_EQ(with(base + R"({"hidden_size": 64, )" + rest + "}}"), "no error");
  fs::remove_all(root);
}

TEST(Bundle, Sha256OfAFile) {
  const fs::path p = fs::temp_directory_path() / "vlfront_sha.txt";
  std::ofstream(p) << "abc";
  EXPECT_EQ(sha256_file(p.string()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  fs::remove(p);
}

}  // namespace
}  // namespace vlfront::impl
