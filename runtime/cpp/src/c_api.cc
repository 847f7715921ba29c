// The C ABI (include/vlfront/vlfront.h). Every entry point catches at the
// boundary (guarded) and checks its pointers; handles own what they hold.
#include <cstring>
#include <memory>

#include "batcher.h"
#include "c_api_internal.h"
#include "image.h"
#include "request.h"
#include "runtime.h"
#include "tokenizer.h"

using vlfront::impl::Error;
using vlfront::impl::guarded;
using vlfront::impl::require;

struct vlf_tokenizer {
  std::unique_ptr<vlfront::impl::Tokenizer> owned;
  const vlfront::impl::Tokenizer* tok = nullptr;  // owned.get(), or the runtime's
};

struct vlf_runtime_options {
  vlfront::impl::RuntimeOptions options;
};

struct vlf_runtime {
  std::unique_ptr<vlfront::impl::Runtime> rt;
  vlf_tokenizer tokenizer;  // borrowed view of rt's tokenizer
};

struct vlf_request {
  vlfront::impl::Request request;
};

struct vlf_embeddings {
  vlfront::impl::EmbedOutput out;
};

struct vlf_batcher {
  std::unique_ptr<vlfront::impl::Batcher> batcher;
};

namespace vlfront::impl {
vlf_status* oom_status() noexcept {
  static vlf_status oom{VLF_ERR_OUT_OF_MEMORY, "out of memory"};
  return &oom;
}
}  // namespace vlfront::impl

namespace {

int64_t parse_int(const char* key, const char* value, int64_t min) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(value, &end, 10);
  if (!*value || *end || errno || v < min)
    throw Error(VLF_ERR_INVALID_ARGUMENT, std::string("option ") + key + "='" + value + "': need an integer >= " +
                                              std::to_string(min));
  return v;
}

vlfront::impl::Request& last_message_owner(vlf_request* r) {
  if (r->request.messages.empty())
    throw Error(VLF_ERR_INVALID_ARGUMENT, "add a message (vlf_request_add_message) before its items");
  return r->request;
}

std::vector<const vlfront::impl::Request*> unwrap(const vlf_request* const* requests, size_t count) {
  if (count == 0) throw Error(VLF_ERR_REQUEST, "requests must be a non-empty list of requests");
  require(requests, "requests");
  std::vector<const vlfront::impl::Request*> out(count);
  for (size_t i = 0; i < count; ++i) out[i] = requests[i] ? &requests[i]->request : nullptr;
  return out;
}

}  // namespace

extern "C" {

vlf_status_code vlf_status_get_code(const vlf_status* s) { return s ? s->code : VLF_OK; }
const char* vlf_status_get_message(const vlf_status* s) { return s ? s->message.c_str() : ""; }
void vlf_status_destroy(vlf_status* s) {
  if (s && s != vlfront::impl::oom_status()) delete s;
}
const char* vlf_version(void) { return "0.1.0"; }

// ---- tokenizer ----

vlf_status* vlf_tokenizer_create(const char* path, vlf_tokenizer** out) {
  return guarded([&] {
    require(path, "path");
    require(out, "out");
    auto t = std::make_unique<vlf_tokenizer>();
    t->owned = vlfront::impl::Tokenizer::from_file(path);
    t->tok = t->owned.get();
    *out = t.release();
  });
}
void vlf_tokenizer_destroy(vlf_tokenizer* t) { delete t; }

vlf_status* vlf_tokenizer_encode(const vlf_tokenizer* t, const char* text, size_t len, vlf_tokens** out) {
  return guarded([&] {
    require(t, "tokenizer");
    require(out, "out");
    if (len) require(text, "text");
    auto tokens = std::make_unique<vlf_tokens>();
    t->tok->encode(std::string_view(text ? text : "", len), tokens->ids);
    *out = tokens.release();
  });
}
size_t vlf_tokens_count(const vlf_tokens* t) { return t ? t->ids.size() : 0; }
const int32_t* vlf_tokens_data(const vlf_tokens* t) { return t ? t->ids.data() : nullptr; }
void vlf_tokens_destroy(vlf_tokens* t) { delete t; }

// ---- image ----

vlf_status* vlf_image_preprocess(const uint8_t* data, size_t len, int64_t size, uint8_t* out) {
  return guarded([&] {
    require(out, "out");
    if (len) require(data, "data");
    if (size < 1 || size > 8192) throw Error(VLF_ERR_INVALID_ARGUMENT, "size=" + std::to_string(size) + ": need 1..8192");
    const vlfront::impl::RgbImage im = vlfront::impl::decode_image(data, len, vlfront::impl::ImageLimits{});
    vlfront::impl::resize_bicubic(im.pixels.data(), im.width, im.height, im.width * 3, static_cast<int>(size),
                                  static_cast<int>(size), out);
  });
}

// ---- options ----

vlf_status* vlf_runtime_options_create(vlf_runtime_options** out) {
  return guarded([&] {
    require(out, "out");
    *out = new vlf_runtime_options();
  });
}
void vlf_runtime_options_destroy(vlf_runtime_options* o) { delete o; }

vlf_status* vlf_runtime_options_set(vlf_runtime_options* o, const char* key, const char* value) {
  return guarded([&] {
    require(o, "options");
    require(key, "key");
    require(value, "value");
    auto& opt = o->options;
    const std::string k = key, v = value;
    auto choose = [&](std::initializer_list<const char*> allowed) {
      for (const char* a : allowed)
        if (v == a) return;
      std::string list;
      for (const char* a : allowed) list += (list.empty() ? "'" : ", '") + std::string(a) + "'";
      throw Error(VLF_ERR_INVALID_ARGUMENT, "option " + k + "='" + v + "': choose one of [" + list + "]");
    };
    if (k == "backend") choose({"auto", "onnxruntime", "tensorrt"}), opt.backend = v;
    else if (k == "precision") choose({"fp32", "fp16", "int8"}), opt.precision = v;
    else if (k == "threads") opt.threads = static_cast<int>(parse_int(key, value, 0));
    else if (k == "decode_threads") opt.decode_threads = static_cast<int>(parse_int(key, value, 0));
    else if (k == "device_id") opt.device_id = static_cast<int>(parse_int(key, value, 0));
    else if (k == "truncation") {
      choose({"truncate", "error"});
      opt.truncation = v == "error" ? vlfront::impl::Truncation::kError : vlfront::impl::Truncation::kTruncate;
    } else if (k == "cache_bytes") opt.cache_bytes = static_cast<size_t>(parse_int(key, value, 0));
    else if (k == "max_image_bytes") opt.limits.max_bytes = static_cast<size_t>(parse_int(key, value, 1));
    else if (k == "max_image_pixels") opt.limits.max_pixels = parse_int(key, value, 1);
    else if (k == "max_image_side") opt.limits.max_side = parse_int(key, value, 1);
    else if (k == "allow_paths") choose({"0", "1"}), opt.limits.allow_paths = v == "1";
    else if (k == "verify") choose({"0", "1"}), opt.verify = v == "1";
    else if (k == "decode") choose({"exact", "fast", "fastest"}), opt.limits.draft_halves = v == "fast" ? 4 : v == "fastest" ? 3 : 0;
    else
      throw Error(VLF_ERR_INVALID_ARGUMENT,
                  "unknown option '" + k + "'; known: backend, precision, threads, decode_threads, device_id, "
                  "truncation, cache_bytes, max_image_bytes, max_image_pixels, max_image_side, allow_paths, verify, decode");
  });
}

// ---- runtime ----

vlf_status* vlf_runtime_create(const char* dir, const vlf_runtime_options* options, vlf_runtime** out) {
  return guarded([&] {
    require(dir, "bundle_dir");
    require(out, "out");
    auto r = std::make_unique<vlf_runtime>();
    r->rt = vlfront::impl::Runtime::load(dir, options ? options->options : vlfront::impl::RuntimeOptions{});
    r->tokenizer.tok = &r->rt->tokenizer();
    *out = r.release();
  });
}
void vlf_runtime_destroy(vlf_runtime* r) { delete r; }

vlf_status* vlf_runtime_get_int(const vlf_runtime* r, const char* key, int64_t* out) {
  return guarded([&] {
    require(r, "runtime");
    require(key, "key");
    require(out, "out");
    const auto& c = r->rt->config();
    const std::string k = key;
    const auto stats = r->rt->cache_stats();
    if (k == "hidden_size") *out = c.hidden_size;
    else if (k == "max_seq_len") *out = c.max_seq_len;
    else if (k == "max_text_tokens") *out = c.max_text_tokens;
    else if (k == "image_size") *out = c.image_size;
    else if (k == "tokens_per_image") *out = c.tokens_per_image();
    else if (k == "vocab_rows") *out = c.vocab_rows;
    else if (k == "cache_entries") *out = stats.entries;
    else if (k == "cache_bytes") *out = stats.bytes;
    else if (k == "cache_hits") *out = stats.hits;
    else if (k == "cache_misses") *out = stats.misses;
    else if (k == "cache_evictions") *out = stats.evictions;
    else throw Error(VLF_ERR_INVALID_ARGUMENT, "unknown key '" + k + "'");
  });
}
const char* vlf_runtime_backend(const vlf_runtime* r) { return r ? r->rt->backend_name() : ""; }
const vlf_tokenizer* vlf_runtime_tokenizer(const vlf_runtime* r) { return r ? &r->tokenizer : nullptr; }

// ---- requests ----

vlf_status* vlf_request_create(vlf_request** out) {
  return guarded([&] {
    require(out, "out");
    *out = new vlf_request();
  });
}
vlf_status* vlf_request_create_from_json(const char* json, size_t len, vlf_request** out) {
  return guarded([&] {
    require(json, "json");
    require(out, "out");
    auto r = std::make_unique<vlf_request>();
    r->request = vlfront::impl::request_from_json(std::string_view(json, len));
    *out = r.release();
  });
}
void vlf_request_destroy(vlf_request* r) { delete r; }

vlf_status* vlf_request_add_message(vlf_request* r, const char* role) {
  return guarded([&] {
    require(r, "request");
    require(role, "role");
    const std::string s = role;
    if (s != "system" && s != "user" && s != "assistant")
      throw Error(VLF_ERR_REQUEST, "role '" + s + "' is not one of ['system', 'user', 'assistant']");
    r->request.messages.push_back({s, {}});
  });
}
vlf_status* vlf_request_add_text(vlf_request* r, const char* text, size_t len) {
  return guarded([&] {
    require(r, "request");
    if (len) require(text, "text");
    vlfront::impl::Item item;
    item.text.assign(text ? text : "", len);
    last_message_owner(r).messages.back().items.push_back(std::move(item));
  });
}
vlf_status* vlf_request_add_image_encoded(vlf_request* r, const uint8_t* data, size_t len) {
  return guarded([&] {
    require(r, "request");
    if (len) require(data, "data");
    vlfront::impl::Item item;
    item.is_image = true;
    item.image.kind = vlfront::impl::ImageInput::Kind::kEncoded;
    item.image.bytes.assign(data, data + len);
    last_message_owner(r).messages.back().items.push_back(std::move(item));
  });
}
vlf_status* vlf_request_add_image_file(vlf_request* r, const char* path) {
  return guarded([&] {
    require(r, "request");
    require(path, "path");
    vlfront::impl::Item item;
    item.is_image = true;
    item.image.kind = vlfront::impl::ImageInput::Kind::kFile;
    item.image.path = path;
    last_message_owner(r).messages.back().items.push_back(std::move(item));
  });
}
vlf_status* vlf_request_add_image_rgb(vlf_request* r, const uint8_t* pixels, int64_t height, int64_t width,
                                      int64_t row_stride) {
  return guarded([&] {
    require(r, "request");
    require(pixels, "pixels");
    if (height <= 0 || width <= 0 || row_stride < 3 * width)
      throw Error(VLF_ERR_IMAGE, "RGB image " + std::to_string(width) + "x" + std::to_string(height) +
                                     " with row_stride " + std::to_string(row_stride) +
                                     ": need positive sizes and row_stride >= 3*width");
    if (width > (int64_t{1} << 20) || height > (int64_t{1} << 20) || width * height > (int64_t{1} << 32))
      throw Error(VLF_ERR_IMAGE, "RGB image " + std::to_string(width) + "x" + std::to_string(height) + " is too large");
    vlfront::impl::Item item;
    item.is_image = true;
    item.image.kind = vlfront::impl::ImageInput::Kind::kRgb;
    item.image.height = height;
    item.image.width = width;
    item.image.bytes.resize(static_cast<size_t>(height * width * 3));
    for (int64_t y = 0; y < height; ++y)
      std::memcpy(&item.image.bytes[static_cast<size_t>(y * width * 3)], pixels + y * row_stride,
                  static_cast<size_t>(width * 3));
    last_message_owner(r).messages.back().items.push_back(std::move(item));
  });
}
vlf_status* vlf_request_set_add_generation_prompt(vlf_request* r, int enabled) {
  return guarded([&] {
    require(r, "request");
    r->request.add_generation_prompt = enabled != 0;
  });
}

// ---- embedding ----

vlf_status* vlf_runtime_embed(vlf_runtime* r, const vlf_request* const* requests, size_t count, vlf_embeddings** out) {
  return guarded([&] {
    require(r, "runtime");
    require(out, "out");
    auto e = std::make_unique<vlf_embeddings>();
    e->out = r->rt->embed(unwrap(requests, count));
    *out = e.release();
  });
}
vlf_status* vlf_runtime_process(vlf_runtime* r, const vlf_request* const* requests, size_t count,
                                vlf_embeddings** out) {
  return guarded([&] {
    require(r, "runtime");
    require(out, "out");
    auto e = std::make_unique<vlf_embeddings>();
    e->out = r->rt->process(unwrap(requests, count));
    *out = e.release();
  });
}

vlf_status* vlf_embeddings_get(const vlf_embeddings* e, vlf_output which, vlf_tensor* out) {
  return guarded([&] {
    require(e, "embeddings");
    require(out, "out");
    const auto& o = e->out;
    vlf_tensor t{};
    auto set = [&](const void* data, vlf_dtype dtype, std::initializer_list<int64_t> shape) {
      t.data = data;
      t.dtype = dtype;
      t.rank = shape.size();
      size_t i = 0;
      for (int64_t d : shape) t.shape[i++] = d;
    };
    switch (which) {
      case VLF_OUTPUT_INPUTS_EMBEDS:
        set(o.inputs_embeds.data(), VLF_DTYPE_FLOAT32, {o.inputs_embeds.empty() ? 0 : o.batch, o.seq_len, o.hidden});
        break;
      case VLF_OUTPUT_INPUT_IDS: set(o.input_ids.data(), VLF_DTYPE_INT64, {o.batch, o.seq_len}); break;
      case VLF_OUTPUT_ATTENTION_MASK: set(o.attention_mask.data(), VLF_DTYPE_INT64, {o.batch, o.seq_len}); break;
      case VLF_OUTPUT_IMAGE_ATTENTION_MASK:
        set(o.image_attention_mask.data(), VLF_DTYPE_INT64, {o.batch, o.seq_len});
        break;
      case VLF_OUTPUT_PIXEL_VALUES:
        set(o.pixel_values.data(), VLF_DTYPE_UINT8, {o.n_images(), o.image_size, o.image_size, 3});
        break;
      case VLF_OUTPUT_IMAGES_PER_REQUEST: set(o.images_per_request.data(), VLF_DTYPE_INT64, {o.batch}); break;
      case VLF_OUTPUT_DROPPED_TOKENS: set(o.dropped_tokens.data(), VLF_DTYPE_INT64, {o.batch}); break;
      default: throw Error(VLF_ERR_INVALID_ARGUMENT, "unknown output " + std::to_string(static_cast<int>(which)));
    }
    *out = t;
  });
}
vlf_status* vlf_embeddings_get_timing(const vlf_embeddings* e, const char* stage, double* out) {
  return guarded([&] {
    require(e, "embeddings");
    require(stage, "stage");
    require(out, "out");
    auto it = e->out.timings.find(stage);
    if (it == e->out.timings.end())
      throw Error(VLF_ERR_INVALID_ARGUMENT, std::string("unknown stage '") + stage +
                                                "'; known: layout, decode, patch_embed, fusion, total");
    *out = it->second;
  });
}
void vlf_embeddings_destroy(vlf_embeddings* e) { delete e; }

// ---- batcher ----

vlf_status* vlf_batcher_create(vlf_runtime* r, size_t max_batch, int64_t max_wait_us, size_t max_queue,
                               vlf_batcher** out) {
  return guarded([&] {
    require(r, "runtime");
    require(out, "out");
    auto b = std::make_unique<vlf_batcher>();
    b->batcher = std::make_unique<vlfront::impl::Batcher>(*r->rt, max_batch, std::chrono::microseconds(max_wait_us),
                                                          max_queue);
    *out = b.release();
  });
}
vlf_status* vlf_batcher_embed(vlf_batcher* b, const vlf_request* request, vlf_embeddings** out) {
  return guarded([&] {
    require(b, "batcher");
    require(request, "request");
    require(out, "out");
    vlfront::impl::EmbedResult result = b->batcher->submit(request->request).get();
    if (result.error) throw *result.error;
    auto e = std::make_unique<vlf_embeddings>();
    e->out = std::move(*result.output);
    *out = e.release();
  });
}
vlf_status* vlf_batcher_get_int(const vlf_batcher* b, const char* key, int64_t* out) {
  return guarded([&] {
    require(b, "batcher");
    require(key, "key");
    require(out, "out");
    const std::string k = key;
    if (k == "requests") *out = b->batcher->requests();
    else if (k == "batches") *out = b->batcher->batches();
    else throw Error(VLF_ERR_INVALID_ARGUMENT, "unknown key '" + k + "'; known: requests, batches");
  });
}
void vlf_batcher_destroy(vlf_batcher* b) { delete b; }

}  // extern "C"
