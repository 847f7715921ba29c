// Runtime: a validated bundle + host-side tokenizer -> fixed-length
// inputs_embeds, with the semantics of Python's vlfront.runtime.Runtime:
// layouts first (a bad request fails alone), each distinct image decoded once
// per batch (in parallel) unless cached, one patch_embed run for the batch's new
// images, one fusion run for the good requests.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend.h"
#include "error.h"
#include "bundle.h"
#include "processor.h"
#include "thread_pool.h"
#include "tokenizer.h"
#include "visual_cache.h"

namespace vlfront::impl {

struct RuntimeOptions {
  std::string backend = "auto";
  std::string precision = "fp32";
  int threads = 0;         // ONNX Runtime intra-op threads; 0 = all cores
  int decode_threads = 0;  // image decode pool; 0 = min(8, cores)
  int device_id = 0;
  Truncation truncation = Truncation::kTruncate;
  size_t cache_bytes = size_t{256} << 20;
  ImageLimits limits;
  bool verify = true;  // int8/fp16: run the bundle's acceptance probe at load (probe.h)
};

// An allocator that leaves elements uninitialised: the graphs overwrite every
// float of their outputs, so zero-filling tens of MB first is wasted time.
template <typename T>
struct UninitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <typename U>
  UninitAllocator(const UninitAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using FloatBuffer = std::vector<float, UninitAllocator<float>>;

struct EmbedOutput {
  int64_t batch = 0, seq_len = 0, hidden = 0, image_size = 0, tokens_per_image = 0;
  FloatBuffer inputs_embeds;  // [B, L, D]; empty from process()
  std::vector<int64_t> input_ids, attention_mask, image_attention_mask;  // [B, L]
  std::vector<uint8_t> pixel_values;                                     // [n_images, S, S, 3]
  std::vector<int64_t> images_per_request, dropped_tokens;               // [B]
  std::map<std::string, double> timings;
  int64_t n_images() const {
    return image_size > 0 ? static_cast<int64_t>(pixel_values.size() / static_cast<size_t>(image_size * image_size * 3)) : 0;
  }
};

// One request's outcome in embed_each.
struct EmbedResult {
  std::optional<EmbedOutput> output;
  std::optional<Error> error;
};

class Runtime {
 public:
  static std::unique_ptr<Runtime> load(const std::string& bundle_dir, const RuntimeOptions& options);
  ~Runtime();

  // Embeds a batch. Raises the first bad request's Error (by index).
  EmbedOutput embed(const std::vector<const Request*>& requests);
  // The processor alone: layouts and pixels, no graph runs (inputs_embeds empty).
  EmbedOutput process(const std::vector<const Request*>& requests);
  // Embeds a batch, isolating failures: one output (B = 1) or one error per request.
  std::vector<EmbedResult> embed_each(const std::vector<const Request*>& requests);

  const ModelConfig& config() const { return bundle_.config(); }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const char* backend_name() const { return runner_->name(); }
  CacheStats cache_stats() const { return cache_.stats(); }

 private:
  Runtime(Bundle bundle, const RuntimeOptions& options);
  struct Batch;
  Batch run(const std::vector<const Request*>& requests, bool graphs);

  Bundle bundle_;
  RuntimeOptions options_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Processor> processor_;
  std::unique_ptr<Runner> runner_;
  VisualTokenCache cache_;
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace vlfront::impl
