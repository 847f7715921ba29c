// Requests -> token layout (SPEC §1.3) and image sources, as Python's
// vlfront.runtime.processor.Processor: same template, truncation policies,
// limits and error messages.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "image.h"
#include "request.h"
#include "tokenizer.h"

namespace vlfront::impl {

// Manifest `config` (SPEC §1.1).
struct ModelConfig {
  int64_t hidden_size = 768;
  int64_t image_size = 224;
  int64_t patch_size = 16;
  int64_t vocab_rows = 151936;
  int64_t max_seq_len = 1024;
  int64_t max_text_tokens = 512;
  std::array<double, 3> image_mean{0.485, 0.456, 0.406};
  std::array<double, 3> image_std{0.229, 0.224, 0.225};
  std::string vision_pos = "sincos2d";
  int64_t grid() const { return image_size / patch_size; }
  int64_t tokens_per_image() const { return grid() * grid(); }
  // Raises Error(VLF_ERR_CONFIG) naming the first invalid value.
  void validate() const;
};

enum class Truncation { kTruncate, kError };

// One image of a request: its bytes (or pixels) and a 32-byte cache key over
// exactly what the decoder consumes (SHA-256 over a tag and the data).
struct ImageSource {
  const ImageInput* input = nullptr;  // borrowed from the request
  std::vector<uint8_t> file_bytes;    // kFile: read at layout time
  std::array<uint8_t, 32> key{};
  std::string where;                  // "image 0 (message 1, item 2)"
  long index = -1;                    // request index, for messages
  const uint8_t* data() const { return input->kind == ImageInput::Kind::kFile ? file_bytes.data() : input->bytes.data(); }
  size_t size() const { return input->kind == ImageInput::Kind::kFile ? file_bytes.size() : input->bytes.size(); }
  // SPEC §1.4 pixels, size x size x 3. Raises Error(VLF_ERR_IMAGE) naming the request and image.
  std::vector<uint8_t> decode(int64_t size, const ImageLimits& limits) const;
};

struct Layout {
  std::vector<int64_t> input_ids;             // [max_seq_len], right-padded with kPadId
  std::vector<int64_t> attention_mask;        // [max_seq_len]
  std::vector<int64_t> image_attention_mask;  // [max_seq_len]
  std::vector<ImageSource> images;            // in order of appearance
  int64_t dropped_tokens = 0;
  int64_t num_tokens = 0;
};

class Processor {
 public:
  Processor(const Tokenizer& tokenizer, ModelConfig config, Truncation truncation, ImageLimits limits);
  // Lays out one request; images are read (files) and keyed, not decoded.
  // Raises Error(VLF_ERR_REQUEST / VLF_ERR_IMAGE) prefixed "request <index>: ".
  Layout layout(const Request& request, long index) const;
  const ModelConfig& config() const { return config_; }
  const ImageLimits& limits() const { return limits_; }

 private:
  std::vector<int32_t> encode(const std::string& text) const;
  const Tokenizer& tokenizer_;
  ModelConfig config_;
  Truncation truncation_;
  ImageLimits limits_;
  std::vector<int32_t> role_ids_[3];
  std::vector<int32_t> newline_ids_;
};

}  // namespace vlfront::impl
