#include "runtime.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "error.h"
#include "probe.h"

namespace vlfront::impl {

namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// "request 3: image 0 (...): reason" -> "image 0 (...): reason" (Python's _strip_index).
std::string strip_index(const std::string& message) {
  if (message.rfind("request ", 0) != 0) return message;
  const size_t colon = message.find(": ");
  return colon == std::string::npos ? message : message.substr(colon + 2);
}
}  // namespace

struct Runtime::Batch {
  EmbedOutput out;                   // rows of the good requests, in index order
  std::vector<size_t> ok;            // their indices
  std::vector<std::optional<Error>> errors;
};

Runtime::Runtime(Bundle bundle, const RuntimeOptions& options)
    : bundle_(std::move(bundle)), options_(options), cache_(options.cache_bytes) {}

Runtime::~Runtime() {
  if (runner_) runner_->close();
}

std::unique_ptr<Runtime> Runtime::load(const std::string& dir, const RuntimeOptions& options) {
  static const char* precisions[] = {"fp32", "fp16", "int8"};
  if (std::find_if(std::begin(precisions), std::end(precisions), [&](const char* p) { return options.precision == p; }) ==
      std::end(precisions))
    throw Error(VLF_ERR_BUNDLE, "precision='" + options.precision + "': choose one of ('fp32', 'fp16', 'int8')");
  std::unique_ptr<Runtime> rt(new Runtime(Bundle::open(dir), options));
  const auto& tok = rt->bundle_.manifest()["tokenizer"];
  if (!tok.contains("file") || !tok["file"].is_string())
    throw Error(VLF_ERR_BUNDLE, dir + ": manifest tokenizer section names no file; rebuild the bundle");
  rt->tokenizer_ = Tokenizer::from_tokenizer_json(rt->bundle_.path(tok["file"].get<std::string>()));
  rt->processor_ = std::make_unique<Processor>(*rt->tokenizer_, rt->bundle_.config(), options.truncation, options.limits);
  RunnerOptions ro{options.precision, options.threads, options.device_id};
  rt->runner_ = select_backend(rt->bundle_, options.backend, ro);
  rt->runner_->load();
  if (options.precision != "fp32") {
    if (options.verify) verify_probe(rt->bundle_, *rt->runner_, options.precision);
    else warn_probe_skipped(rt->bundle_, options.precision);
  }
  size_t decode = options.decode_threads > 0 ? static_cast<size_t>(options.decode_threads)
                                             : std::min<size_t>(8, std::max(1u, std::thread::hardware_concurrency()));
  rt->pool_ = std::make_unique<ThreadPool>(decode - 1);  // the calling thread decodes too
  return rt;
}

Runtime::Batch Runtime::run(const std::vector<const Request*>& requests, bool graphs) {
  if (requests.empty()) throw Error(VLF_ERR_REQUEST, "requests must be a non-empty list of requests");
  const ModelConfig& cfg = bundle_.config();
  const int64_t L = cfg.max_seq_len, D = cfg.hidden_size, S = cfg.image_size, T = cfg.tokens_per_image();
  const size_t px_size = static_cast<size_t>(S * S * 3), vt_size = static_cast<size_t>(T * D);
  const double t0 = now();
  Batch b;
  b.errors.resize(requests.size());
  std::vector<std::optional<Layout>> layouts(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    try {
      if (!requests[i]) throw request_error(VLF_ERR_INVALID_ARGUMENT, static_cast<long>(i), "request is NULL");
      layouts[i] = processor_->layout(*requests[i], static_cast<long>(i));
    } catch (const Error& e) {
      b.errors[i] = e;
    }
  }
  b.out.timings["layout"] = now() - t0;

  // Each distinct image key once: from the cache, else decoded (in parallel).
  std::map<ImageKey, std::shared_ptr<const CacheEntry>> found;
  std::vector<const ImageSource*> todo;
  std::map<ImageKey, size_t> todo_index;
  for (const auto& lay : layouts) {
    if (!lay) continue;
    for (const ImageSource& src : lay->images) {
      if (found.count(src.key) || todo_index.count(src.key)) continue;
      std::shared_ptr<const CacheEntry> hit = cache_.get(src.key);  // pixels are cached too
      if (hit) found[src.key] = hit;
      else todo_index[src.key] = todo.size(), todo.push_back(&src);
    }
  }
  const double t1 = now();
  std::vector<std::vector<uint8_t>> pixels(todo.size());
  std::vector<std::optional<Error>> failures(todo.size());
  pool_->parallel_for(todo.size(), [&](size_t k) {
    try {
      pixels[k] = todo[k]->decode(S, options_.limits);
    } catch (const Error& e) {
      failures[k] = e;
    } catch (const std::exception& e) {
      failures[k] = request_error(VLF_ERR_IMAGE, todo[k]->index, todo[k]->where + ": could not be decoded: " + e.what());
    }
  });
  // A broken image fails every request holding it; the other requests go on.
  for (size_t i = 0; i < layouts.size(); ++i) {
    if (!layouts[i] || b.errors[i]) continue;
    for (const ImageSource& src : layouts[i]->images) {
      auto it = todo_index.find(src.key);
      if (it == todo_index.end() || !failures[it->second]) continue;
      const Error& bad = *failures[it->second];
      b.errors[i] = todo[it->second]->index == static_cast<long>(i)
                        ? bad
                        : request_error(bad.code(), static_cast<long>(i), strip_index(bad.what()));
      break;
    }
  }
  const double t2 = now();
  b.out.timings["decode"] = t2 - t1;

  // One patch_embed run over the batch's newly decoded images.
  std::vector<size_t> fresh;
  for (size_t k = 0; k < todo.size(); ++k)
    if (!failures[k]) fresh.push_back(k);
  if (!fresh.empty()) {
    const int64_t M = static_cast<int64_t>(fresh.size());
    std::vector<uint8_t> batch(fresh.size() * px_size);
    for (size_t j = 0; j < fresh.size(); ++j) std::memcpy(&batch[j * px_size], pixels[fresh[j]].data(), px_size);
    FloatBuffer visual(graphs ? fresh.size() * vt_size : 0);
    if (graphs) {
      std::vector<HostTensor> in{{"pixel_values", "uint8", {M, S, S, 3}, batch.data()}};
      std::vector<HostTensor> out{{"visual_tokens", "float32", {M, T, D}, visual.data()}};
      runner_->run("patch_embed", in, out);
    }
    for (size_t j = 0; j < fresh.size(); ++j) {
      auto entry = std::make_shared<CacheEntry>();
      entry->pixel_values = std::move(pixels[fresh[j]]);
      if (graphs) {
        entry->visual_tokens.assign(visual.begin() + static_cast<long>(j * vt_size),
                                    visual.begin() + static_cast<long>((j + 1) * vt_size));
        cache_.put(todo[fresh[j]]->key, entry);
      }
      found[todo[fresh[j]]->key] = std::move(entry);
    }
  }
  b.out.timings["patch_embed"] = now() - t2;

  // Rows of the good requests.
  for (size_t i = 0; i < layouts.size(); ++i)
    if (layouts[i] && !b.errors[i]) b.ok.push_back(i);
  EmbedOutput& o = b.out;
  o.batch = static_cast<int64_t>(b.ok.size());
  o.seq_len = L, o.hidden = D, o.image_size = S, o.tokens_per_image = T;
  std::vector<float> visual;
  for (size_t i : b.ok) {
    const Layout& lay = *layouts[i];
    o.input_ids.insert(o.input_ids.end(), lay.input_ids.begin(), lay.input_ids.end());
    o.attention_mask.insert(o.attention_mask.end(), lay.attention_mask.begin(), lay.attention_mask.end());
    o.image_attention_mask.insert(o.image_attention_mask.end(), lay.image_attention_mask.begin(),
                                  lay.image_attention_mask.end());
    o.images_per_request.push_back(static_cast<int64_t>(lay.images.size()));
    o.dropped_tokens.push_back(lay.dropped_tokens);
    for (const ImageSource& src : lay.images) {
      const CacheEntry& e = *found.at(src.key);
      o.pixel_values.insert(o.pixel_values.end(), e.pixel_values.begin(), e.pixel_values.end());
      if (graphs) visual.insert(visual.end(), e.visual_tokens.begin(), e.visual_tokens.end());
    }
  }
  const double t3 = now();
  if (graphs && o.batch > 0) {
    const int64_t N = static_cast<int64_t>(visual.size() / vt_size);
    o.inputs_embeds.resize(static_cast<size_t>(o.batch * L * D));
    std::vector<HostTensor> in{{"input_ids", "int64", {o.batch, L}, o.input_ids.data()},
                               {"visual_tokens", "float32", {N, T, D}, visual.data()}};
    std::vector<HostTensor> out{{"inputs_embeds", "float32", {o.batch, L, D}, o.inputs_embeds.data()}};
    runner_->run("fusion", in, out);
  }
  o.timings["fusion"] = now() - t3;
  o.timings["total"] = now() - t0;
  return b;
}

EmbedOutput Runtime::embed(const std::vector<const Request*>& requests) {
  Batch b = run(requests, true);
  for (auto& e : b.errors)
    if (e) throw *e;
  return std::move(b.out);
}

EmbedOutput Runtime::process(const std::vector<const Request*>& requests) {
  Batch b = run(requests, false);
  for (auto& e : b.errors)
    if (e) throw *e;
  return std::move(b.out);
}

std::vector<EmbedResult> Runtime::embed_each(const std::vector<const Request*>& requests) {
  Batch b = run(requests, true);
  std::vector<EmbedResult> results(requests.size());
  for (size_t i = 0; i < requests.size(); ++i)
    if (b.errors[i]) results[i].error = b.errors[i];
  const EmbedOutput& o = b.out;
  const size_t L = static_cast<size_t>(o.seq_len), LD = L * static_cast<size_t>(o.hidden);
  const size_t px = static_cast<size_t>(o.image_size * o.image_size * 3);
  size_t image = 0;
  for (size_t row = 0; row < b.ok.size(); ++row) {
    EmbedOutput one;
    one.batch = 1, one.seq_len = o.seq_len, one.hidden = o.hidden, one.image_size = o.image_size;
    one.tokens_per_image = o.tokens_per_image;
    auto slice = [&](const auto& v, size_t n) {
      return std::decay_t<decltype(v)>(v.begin() + static_cast<long>(row * n), v.begin() + static_cast<long>((row + 1) * n));
    };
    one.inputs_embeds = slice(o.inputs_embeds, LD);
    one.input_ids = slice(o.input_ids, L);
    one.attention_mask = slice(o.attention_mask, L);
    one.image_attention_mask = slice(o.image_attention_mask, L);
    const size_t n = static_cast<size_t>(o.images_per_request[row]);
    one.pixel_values.assign(o.pixel_values.begin() + static_cast<long>(image * px),
                            o.pixel_values.begin() + static_cast<long>((image + n) * px));
    image += n;
    one.images_per_request = {o.images_per_request[row]};
    one.dropped_tokens = {o.dropped_tokens[row]};
    one.timings = o.timings;
    results[b.ok[row]].output = std::move(one);
  }
  return results;
}

}  // namespace vlfront::impl
