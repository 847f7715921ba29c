// Example HTTP server: a vlfront bundle behind a small event-driven HTTP/1.1
// front (http_front.h), through the dynamic batcher, using only the public C++
// wrapper (vlfront.hpp over libvlfront.so) and the runtime's untrusted-JSON
// parser (json_guard.h). The same API as examples/server.py (the Python one):
//
//   vlfront-http-server --bundle build/default --host 127.0.0.1 --port 8000
//   curl -sS -H 'Content-Type: application/json' --data-binary @request.json
//        http://127.0.0.1:8000/v1/embed -o embeds.npy   (one command line)
//
// POST /v1/embed takes one request {"messages": [...], "add_generation_prompt": true}
// whose image items are {"type": "image", "image_base64": "<base64 of the encoded
// file>"}; paths are refused (the server never opens files named by a client).
// The answer is inputs_embeds [1, L, D] float32 as .npy (application/x-npy, the
// default) or, with Accept: application/x-safetensors, a safetensors file with
// inputs_embeds, input_ids, attention_mask, image_attention_mask. Headers:
// X-Dropped-Tokens, X-Num-Tokens, X-Num-Images, X-Inputs-Embeds-Shape.
// Errors are JSON {"error": reason, "index": 0}: 400 bad JSON or request, 404 no
// such route, 405 another method (Allow: POST), 406 an Accept we cannot answer,
// 408 a request not received within --request-timeout-s, 413 a body over
// --max-body-mb, 415 a Content-Type other than application/json (none is taken
// as JSON), 431 a head over 16 KiB, 503 queue or connections full
// (Retry-After: 1). GET /healthz returns cache, backend and batcher counters.
// docs/runtime.md ("Server") has the rules; --port 0 picks a free port; the
// first stdout line says which.
#include <malloc.h>
#include <signal.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "http_front.h"
#include "json_guard.h"
#include "py_show.h"
#include "vlfront/vlfront.hpp"

namespace {

using nlohmann::json;
using vlfront_server::HttpRequest;
using vlfront_server::HttpResponse;
constexpr const char* kNpy = "application/x-npy";
constexpr const char* kSafetensors = "application/x-safetensors";
constexpr const char* kBodyHint = "the body must be a JSON object {\"messages\": [...], \"add_generation_prompt\": true}";

struct Refused {
  int status;
  std::string message;
};

// Every error answer: {"error": message, "index": 0}; dump_safe never throws on bytes that
// are not UTF-8 (a client's Accept header, say).
HttpResponse error_response(int status, const std::string& message) {
  HttpResponse res;
  res.status = status;
  res.body = vlfront::json_guard::dump_safe(json{{"error", message}, {"index", 0}});
  if (status == 503) res.headers.emplace_back("Retry-After", "1");
  return res;
}

std::string negotiate(const std::string& accept) {
  bool npy = accept.empty(), st = false;
  size_t start = 0;
  while (start <= accept.size()) {
    size_t end = accept.find(',', start);
    if (end == std::string::npos) end = accept.size();
    std::string type = accept.substr(start, end - start);
    type = type.substr(0, type.find(';'));
    type.erase(0, type.find_first_not_of(" \t"));
    type.erase(type.find_last_not_of(" \t") + 1);
    for (auto& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (type == kSafetensors) st = true;
    if (type == kNpy || type == "application/*" || type == "*/*" || type.empty()) npy = true;
    start = end + 1;
  }
  if (st) return kSafetensors;
  if (npy) return kNpy;
  throw Refused{406, "cannot answer Accept: '" + accept + "'; ask for " + kNpy + " (the default) or " + kSafetensors};
}

// {"type": "image", "image_base64": s} -> the runtime's {"type": "image", "image": {"base64": s}}.
// json_guard::parse bounds depth and checks UTF-8 first, so nothing below can recurse deeply.
// A body without image items goes to the runtime as it is (no second dump of a 30 MiB text);
// otherwise the rewritten request, the body freed first.
std::string to_runtime_request(std::string body) {
  json request;
  try {
    request = vlfront::json_guard::parse(body, "the body");
  } catch (const vlfront::json_guard::Refused& e) {
    throw Refused{400, e.what()};
  }
  bool rewritten = false;
  if (!request.is_object() || !request.contains("messages") || !request["messages"].is_array())
    throw Refused{400, kBodyHint};
  auto& messages = request["messages"];
  for (size_t m = 0; m < messages.size(); ++m) {
    if (!messages[m].is_object() || !messages[m].contains("content") || !messages[m]["content"].is_array()) continue;
    auto& content = messages[m]["content"];
    for (size_t i = 0; i < content.size(); ++i) {
      json& item = content[i];
      if (!item.is_object() || !item.contains("type") || item["type"] != "image") continue;
      const bool exact = item.size() == 2 && item.contains("image_base64") && item["image_base64"].is_string();
      if (!exact) {
        std::vector<std::string> keys;
        for (const auto& [k, _] : item.items()) keys.push_back("'" + k + "'");
        std::string list;
        for (const auto& k : keys) list += (list.empty() ? "" : ", ") + k;
        throw Refused{400, "message " + std::to_string(m) + ", item " + std::to_string(i) +
                               ": an image item here is exactly {\"type\": \"image\", \"image_base64\": "
                               "\"<base64 of the encoded file>\"}, got keys [" + list +
                               "]; file paths and URLs are not accepted (the server never opens files named by a client)"};
      }
      item = json{{"type", "image"}, {"image", {{"base64", item["image_base64"]}}}};
      rewritten = true;
    }
  }
  if (!rewritten) return body;
  std::string().swap(body);
  return request.dump();
}

std::string npy(const vlfront::TensorView& t) {
  std::string shape = "(";
  for (size_t i = 0; i < t.shape.size(); ++i) shape += std::to_string(t.shape[i]) + ", ";
  if (t.shape.size() > 1) shape.erase(shape.size() - 2);
  shape += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xFF));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(static_cast<const char*>(t.data), static_cast<size_t>(t.numel()) * 4);
  return out;
}

std::string safetensors(const vlfront::Embeddings& out) {
  const std::pair<const char*, vlf_output> names[] = {{"inputs_embeds", VLF_OUTPUT_INPUTS_EMBEDS},
                                                      {"input_ids", VLF_OUTPUT_INPUT_IDS},
                                                      {"attention_mask", VLF_OUTPUT_ATTENTION_MASK},
                                                      {"image_attention_mask", VLF_OUTPUT_IMAGE_ATTENTION_MASK}};
  json header = json::object();
  std::string data;
  for (const auto& [name, which] : names) {
    const vlfront::TensorView t = out.get(which);
    const size_t n = static_cast<size_t>(t.numel()) * (t.dtype == VLF_DTYPE_FLOAT32 ? 4 : 8);
    header[name] = {{"dtype", t.dtype == VLF_DTYPE_FLOAT32 ? "F32" : "I64"},
                    {"shape", t.shape},
                    {"data_offsets", {data.size(), data.size() + n}}};
    data.append(static_cast<const char*>(t.data), n);
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((static_cast<uint64_t>(h.size()) >> (8 * i)) & 0xFF);
  return file + h + data;
}

struct Args {
  std::string bundle, host = "127.0.0.1", precision = "fp32", backend = "auto", threads, decode = "exact";
  int port = 8000, max_batch = 8, max_queue = 256, workers = 16, max_connections = 256;
  double max_wait_ms = 5.0, max_body_mb = 32.0, request_timeout_s = 30.0, idle_timeout_s = 10.0;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) throw std::runtime_error(k + " needs a value");
    const std::string v = argv[++i];
    if (k == "--bundle") a.bundle = v;
    else if (k == "--host") a.host = v;
    else if (k == "--port") a.port = std::stoi(v);
    else if (k == "--precision") a.precision = v;
    else if (k == "--backend") a.backend = v;
    else if (k == "--threads") a.threads = v;
    else if (k == "--decode") a.decode = v;  // "exact" | "fast" | "fastest" (the runtime checks it)
    else if (k == "--max-batch") a.max_batch = std::stoi(v);
    else if (k == "--max-wait-ms") a.max_wait_ms = std::stod(v);
    else if (k == "--max-queue") a.max_queue = std::stoi(v);
    else if (k == "--max-body-mb") a.max_body_mb = std::stod(v);
    else if (k == "--workers") a.workers = std::stoi(v);
    else if (k == "--max-connections") a.max_connections = std::stoi(v);
    else if (k == "--request-timeout-s") a.request_timeout_s = std::stod(v);
    else if (k == "--idle-timeout-s") a.idle_timeout_s = std::stod(v);
    else throw std::runtime_error("unknown argument " + k);
  }
  if (a.bundle.empty()) throw std::runtime_error("--bundle is required");
  if (a.workers < 1 || a.max_connections < 1 || a.request_timeout_s <= 0 || a.idle_timeout_s <= 0 || a.max_body_mb <= 0)
    throw std::runtime_error("--workers, --max-connections, the timeouts and --max-body-mb must be positive");
  return a;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string path_of(const HttpRequest& r) { return r.target.substr(0, r.target.find('?')); }

// Refusals that need only the head: route, method, Content-Type/-Encoding, Accept.
// Python's examples/server.py answers the same (docs/runtime.md, "Server").
std::optional<HttpResponse> check_head(const HttpRequest& r) {
  const std::string path = path_of(r);
  const char* allow = path == "/v1/embed" ? "POST" : path == "/healthz" ? "GET, HEAD" : nullptr;
  if (!allow) return error_response(404, "no such route; the routes are POST /v1/embed and GET /healthz");
  if (path == "/v1/embed" ? r.method != "POST" : r.method != "GET" && r.method != "HEAD") {
    HttpResponse res = error_response(405, "method " + r.method + " is not allowed on " + path + " (allowed: " + allow + ")");
    res.headers.emplace_back("Allow", allow);
    return res;
  }
  if (path != "/v1/embed") return std::nullopt;
  try {
    negotiate(r.header("accept"));
  } catch (const Refused& e) {
    return error_response(e.status, e.message);
  }
  // A missing Content-Type is taken as JSON; parameters (charset) are not looked at: the
  // body must be UTF-8 whatever it says. A compressed body fails as JSON (not UTF-8).
  if (r.has_header("content-type")) {
    const std::string type = r.header("content-type");
    std::string media = lower(type.substr(0, type.find(';')));
    media.erase(0, media.find_first_not_of(" \t"));
    media.erase(media.find_last_not_of(" \t") + 1);
    if (media != "application/json") {
      const std::string shown = type.size() <= 60 ? vlfront::impl::py_repr(type)
                                                  : vlfront::impl::py_repr(type.substr(0, 60)) + "...";
      return error_response(415, "Content-Type " + shown + " is not supported; send the body as application/json");
    }
  }
  return std::nullopt;
}

// The message without the batcher's "request k: " prefix (k is a slot in a server-side batch).
std::string reason(const std::string& message) {
  if (message.rfind("request ", 0) != 0) return message;
  const size_t colon = message.find(": ");
  return colon == std::string::npos ? message : message.substr(colon + 2);
}

HttpResponse embed(vlfront::Batcher& batcher, HttpRequest& req) {
  try {
    const std::string fmt = negotiate(req.header("accept"));
    vlfront::Request request = vlfront::Request::from_json(to_runtime_request(std::move(req.body)));
    vlfront::Embeddings out = batcher.embed(request);
    const auto embeds = out.get(VLF_OUTPUT_INPUTS_EMBEDS);
    const auto mask = out.get(VLF_OUTPUT_ATTENTION_MASK);
    int64_t tokens = 0;
    for (int64_t i = 0; i < mask.numel(); ++i) tokens += mask.as<int64_t>()[i];
    std::string shape;
    for (size_t i = 0; i < embeds.shape.size(); ++i) shape += (i ? "," : "") + std::to_string(embeds.shape[i]);
    HttpResponse res;
    res.headers = {{"X-Dropped-Tokens", std::to_string(out.get(VLF_OUTPUT_DROPPED_TOKENS).as<int64_t>()[0])},
                   {"X-Num-Tokens", std::to_string(tokens)},
                   {"X-Num-Images", std::to_string(out.get(VLF_OUTPUT_IMAGES_PER_REQUEST).as<int64_t>()[0])},
                   {"X-Inputs-Embeds-Shape", shape}};
    res.content_type = fmt;
    res.body = fmt == kSafetensors ? safetensors(out) : npy(embeds);
    return res;
  } catch (const Refused& e) {
    return error_response(e.status, e.message);
  } catch (const vlfront::Exception& e) {
    switch (e.code()) {
      case VLF_ERR_REQUEST:
      case VLF_ERR_IMAGE:
        return error_response(400, reason(e.what()));
      case VLF_ERR_QUEUE_FULL:
        return error_response(503, e.what());
      default:
        return error_response(500, e.what());
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  try {
    a = parse(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "vlfront-http-server: " << e.what() << "\nusage: vlfront-http-server --bundle DIR [--host H] [--port P] "
              << "[--precision P] [--backend B] [--threads N] [--decode exact|fast|fastest] [--max-batch N] [--max-wait-ms MS] [--max-queue N] "
                 "[--max-body-mb MB] [--workers N] [--max-connections N] [--request-timeout-s S] [--idle-timeout-s S]\n";
    return 2;
  }
  // SIGINT/SIGTERM stop the server from a thread of ours (not from a signal handler).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // Request-sized buffers (up to --max-body-mb) from mmap, so that each goes back to the system
  // when freed instead of staying in the heap (glibc raises its threshold after large frees).
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  try {
    // allow_paths=0: even an item that slipped past to_runtime_request cannot make us open a file.
    vlfront::RuntimeOptions options;
    options.set("backend", a.backend).set("precision", a.precision).set("allow_paths", "0");
    if (!a.threads.empty()) options.set("threads", a.threads);
    options.set("decode", a.decode);
    vlfront::Runtime runtime(a.bundle, options);
    vlfront::Batcher batcher(runtime, static_cast<size_t>(a.max_batch), static_cast<int64_t>(a.max_wait_ms * 1000),
                             static_cast<size_t>(a.max_queue));
    vlfront_server::FrontOptions front_options;
    front_options.host = a.host;
    front_options.port = a.port;
    front_options.limits.max_body = static_cast<size_t>(a.max_body_mb * (1 << 20));
    front_options.workers = a.workers;
    front_options.max_connections = a.max_connections;
    front_options.request_timeout_s = a.request_timeout_s;
    front_options.idle_timeout_s = a.idle_timeout_s;

    vlfront_server::FrontHandlers handlers;
    handlers.check_head = check_head;
    handlers.error = error_response;
    handlers.handle = [&](HttpRequest& req) -> HttpResponse {
      if (path_of(req) == "/v1/embed") return embed(batcher, req);
      json body = {{"backend", runtime.backend()},
                   {"precision", a.precision},
                   {"cache",
                    {{"entries", runtime.get_int("cache_entries")},
                     {"bytes", runtime.get_int("cache_bytes")},
                     {"hits", runtime.get_int("cache_hits")},
                     {"misses", runtime.get_int("cache_misses")},
                     {"evictions", runtime.get_int("cache_evictions")}}},
                   {"batcher", {{"requests", batcher.get_int("requests")}, {"batches", batcher.get_int("batches")}}}};
      HttpResponse res;
      res.body = body.dump();
      return res;
    };
    vlfront_server::HttpFront front(front_options, handlers);
    int port;
    try {
      port = front.bind();
    } catch (const std::exception& e) {
      std::cerr << "vlfront-http-server: " << e.what() << "\n";
      return 1;
    }
    std::printf("listening on http://%s:%d\n", a.host.c_str(), port);
    std::fflush(stdout);
    std::thread stopper([&] {
      int sig = 0;
      sigwait(&stop_signals, &sig);
      front.stop();
    });
    stopper.detach();
    front.run();
    return 0;  // the batcher finishes its queue, then the runtime closes (destructors)
  } catch (const vlfront::Exception& e) {
    std::cerr << "vlfront-http-server: " << e.what() << "\n";
    return 1;
  }
}
