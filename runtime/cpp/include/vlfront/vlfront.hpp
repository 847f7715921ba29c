// Header-only, move-only C++ RAII wrapper over the vlfront C ABI (vlfront.h).
//
// Every handle class owns exactly one C handle and releases it in its
// destructor; copying is deleted (no double free), moving transfers ownership.
// Failures become vlfront::Exception carrying the vlf_status_code.
//
//   vlfront::Runtime rt("build/default", vlfront::RuntimeOptions().set("threads", "4"));
//   vlfront::Request req;
//   req.add_message("user").add_image_file("cat.jpg").add_text("What is this?");
//   vlfront::Embeddings out = rt.embed({&req});
//   vlfront::TensorView e = out.get(VLF_OUTPUT_INPUTS_EMBEDS);  // float32 [1, 1024, D]
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vlfront/vlfront.h"

namespace vlfront {

class Exception : public std::runtime_error {
 public:
  Exception(vlf_status_code code, const std::string& message) : std::runtime_error(message), code_(code) {}
  vlf_status_code code() const noexcept { return code_; }

 private:
  vlf_status_code code_;
};

namespace detail {

// Throws for a non-NULL status, releasing it first.
inline void check(vlf_status* status) {
  if (!status) return;
  const vlf_status_code code = vlf_status_get_code(status);
  std::string message = vlf_status_get_message(status);
  vlf_status_destroy(status);
  throw Exception(code, message);
}

// Owns one handle of type T released by Destroy; move-only.
template <typename T, void (*Destroy)(T*)>
class Handle {
 public:
  Handle() = default;
  explicit Handle(T* p) noexcept : p_(p) {}
  ~Handle() { reset(); }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  void reset() noexcept {
    if (p_) Destroy(p_);
    p_ = nullptr;
  }
  T* get() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }

 private:
  T* p_ = nullptr;
};

}  // namespace detail

// A borrowed view into an Embeddings object.
struct TensorView {
  const void* data = nullptr;
  vlf_dtype dtype = VLF_DTYPE_FLOAT32;
  std::vector<int64_t> shape;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data);
  }
};

class Tokenizer {
 public:
  // Owning: loads a tokenizer.json or .tiktoken file.
  explicit Tokenizer(const std::string& path) {
    vlf_tokenizer* t = nullptr;
    detail::check(vlf_tokenizer_create(path.c_str(), &t));
    owned_ = Owned(t);
    view_ = t;
  }
  // Ordinary-text ids of UTF-8 `text` (NFC, special-token strings stay text).
  std::vector<int32_t> encode(std::string_view text) const {
    vlf_tokens* tokens = nullptr;
    detail::check(vlf_tokenizer_encode(view_, text.data(), text.size(), &tokens));
    detail::Handle<vlf_tokens, vlf_tokens_destroy> guard(tokens);
    const int32_t* data = vlf_tokens_data(tokens);
    return std::vector<int32_t>(data, data + vlf_tokens_count(tokens));
  }

 private:
  friend class Runtime;
  explicit Tokenizer(const vlf_tokenizer* borrowed) : view_(borrowed) {}
  using Owned = detail::Handle<vlf_tokenizer, vlf_tokenizer_destroy>;
  Owned owned_;
  const vlf_tokenizer* view_ = nullptr;
};

class RuntimeOptions {
 public:
  RuntimeOptions() {
    vlf_runtime_options* o = nullptr;
    detail::check(vlf_runtime_options_create(&o));
    h_ = Owned(o);
  }
  // See vlf_runtime_options_set for the keys.
  RuntimeOptions& set(const std::string& key, const std::string& value) & {
    detail::check(vlf_runtime_options_set(h_.get(), key.c_str(), value.c_str()));
    return *this;
  }
  RuntimeOptions&& set(const std::string& key, const std::string& value) && { return std::move(set(key, value)); }
  const vlf_runtime_options* get() const noexcept { return h_.get(); }

 private:
  using Owned = detail::Handle<vlf_runtime_options, vlf_runtime_options_destroy>;
  Owned h_;
};

class Request {
 public:
  Request() {
    vlf_request* r = nullptr;
    detail::check(vlf_request_create(&r));
    h_ = Owned(r);
  }
  // The JSON form (see vlf_request_create_from_json).
  static Request from_json(std::string_view json) {
    vlf_request* r = nullptr;
    detail::check(vlf_request_create_from_json(json.data(), json.size(), &r));
    return Request(r);
  }
  Request& add_message(const std::string& role) {
    detail::check(vlf_request_add_message(h_.get(), role.c_str()));
    return *this;
  }
  Request& add_text(std::string_view text) {
    detail::check(vlf_request_add_text(h_.get(), text.data(), text.size()));
    return *this;
  }
  Request& add_image_encoded(const uint8_t* data, size_t len) {
    detail::check(vlf_request_add_image_encoded(h_.get(), data, len));
    return *this;
  }
  Request& add_image_file(const std::string& path) {
    detail::check(vlf_request_add_image_file(h_.get(), path.c_str()));
    return *this;
  }
  Request& add_image_rgb(const uint8_t* pixels, int64_t height, int64_t width, int64_t row_stride) {
    detail::check(vlf_request_add_image_rgb(h_.get(), pixels, height, width, row_stride));
    return *this;
  }
  Request& set_add_generation_prompt(bool enabled) {
    detail::check(vlf_request_set_add_generation_prompt(h_.get(), enabled ? 1 : 0));
    return *this;
  }
  const vlf_request* get() const noexcept { return h_.get(); }

 private:
  explicit Request(vlf_request* r) : h_(r) {}
  using Owned = detail::Handle<vlf_request, vlf_request_destroy>;
  Owned h_;
};

class Embeddings {
 public:
  explicit Embeddings(vlf_embeddings* e) : h_(e) {}
  TensorView get(vlf_output which) const {
    vlf_tensor t{};
    detail::check(vlf_embeddings_get(h_.get(), which, &t));
    return TensorView{t.data, t.dtype, std::vector<int64_t>(t.shape, t.shape + t.rank)};
  }
  double timing(const std::string& stage) const {
    double s = 0;
    detail::check(vlf_embeddings_get_timing(h_.get(), stage.c_str(), &s));
    return s;
  }

 private:
  using Owned = detail::Handle<vlf_embeddings, vlf_embeddings_destroy>;
  Owned h_;
};

class Runtime {
 public:
  explicit Runtime(const std::string& bundle_dir, const RuntimeOptions* options = nullptr) {
    vlf_runtime* r = nullptr;
    detail::check(vlf_runtime_create(bundle_dir.c_str(), options ? options->get() : nullptr, &r));
    h_ = Owned(r);
  }
  Runtime(const std::string& bundle_dir, const RuntimeOptions& options) : Runtime(bundle_dir, &options) {}

  Embeddings embed(const std::vector<const Request*>& requests) { return run(vlf_runtime_embed, requests); }
  Embeddings process(const std::vector<const Request*>& requests) { return run(vlf_runtime_process, requests); }
  int64_t get_int(const std::string& key) const {
    int64_t v = 0;
    detail::check(vlf_runtime_get_int(h_.get(), key.c_str(), &v));
    return v;
  }
  std::string backend() const { return vlf_runtime_backend(h_.get()); }
  // Borrowed: valid while this Runtime lives.
  Tokenizer tokenizer() const { return Tokenizer(vlf_runtime_tokenizer(h_.get())); }
  vlf_runtime* get() const noexcept { return h_.get(); }

 private:
  using Fn = vlf_status* (*)(vlf_runtime*, const vlf_request* const*, size_t, vlf_embeddings**);
  Embeddings run(Fn fn, const std::vector<const Request*>& requests) {
    std::vector<const vlf_request*> raw;
    raw.reserve(requests.size());
    for (const Request* r : requests) raw.push_back(r ? r->get() : nullptr);
    vlf_embeddings* e = nullptr;
    detail::check(fn(h_.get(), raw.data(), raw.size(), &e));
    return Embeddings(e);
  }
  using Owned = detail::Handle<vlf_runtime, vlf_runtime_destroy>;
  Owned h_;
};

// Dynamic batcher; the Runtime must outlive it.
class Batcher {
 public:
  Batcher(Runtime& runtime, size_t max_batch = 8, int64_t max_wait_us = 5000, size_t max_queue = 256) {
    vlf_batcher* b = nullptr;
    detail::check(vlf_batcher_create(runtime.get(), max_batch, max_wait_us, max_queue, &b));
    h_ = Owned(b);
  }
  // Blocks until the request's batch ran; B = 1.
  Embeddings embed(const Request& request) {
    vlf_embeddings* e = nullptr;
    detail::check(vlf_batcher_embed(h_.get(), request.get(), &e));
    return Embeddings(e);
  }
  int64_t get_int(const std::string& key) const {
    int64_t v = 0;
    detail::check(vlf_batcher_get_int(h_.get(), key.c_str(), &v));
    return v;
  }

 private:
  using Owned = detail::Handle<vlf_batcher, vlf_batcher_destroy>;
  Owned h_;
};

inline std::string version() { return vlf_version(); }

}  // namespace vlfront
