// Example HTTP server: a vlfront bundle behind cpp-httplib (Debian's
// libcpp-httplib), through the dynamic batcher, using only the public C++
// wrapper (vlfront.hpp over libvlfront.so). The same API as
// examples/server.py (the Python one):
//
//   vlfront-http-server --bundle build/default --host 127.0.0.1 --port 8000
//   curl -sS --data-binary @request.json http://127.0.0.1:8000/v1/embed -o embeds.npy
//
// POST /v1/embed takes one request {"messages": [...], "add_generation_prompt": true}
// whose image items are {"type": "image", "image_base64": "<base64 of the encoded
// file>"}; paths are refused (the server never opens files named by a client).
// The answer is inputs_embeds [1, L, D] float32 as .npy (application/x-npy, the
// default) or, with Accept: application/x-safetensors, a safetensors file with
// inputs_embeds, input_ids, attention_mask, image_attention_mask. Headers:
// X-Dropped-Tokens, X-Num-Tokens, X-Num-Images, X-Inputs-Embeds-Shape.
// Errors are JSON {"error": reason, "index": 0}: 400 bad JSON or request, 406 an
// Accept we cannot answer, 413 a body over --max-body-mb, 503 queue full
// (Retry-After: 1). GET /healthz returns cache, backend and batcher counters.
// --port 0 picks a free port; the first stdout line says which.
#include <httplib.h>
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "vlfront/vlfront.hpp"

namespace {

using nlohmann::json;
constexpr const char* kNpy = "application/x-npy";
constexpr const char* kSafetensors = "application/x-safetensors";
constexpr const char* kBodyHint = "the body must be a JSON object {\"messages\": [...], \"add_generation_prompt\": true}";

struct Refused {
  int status;
  std::string message;
};

void send_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(json{{"error", message}, {"index", 0}}.dump(), "application/json");
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
std::string to_runtime_request(const std::string& body) {
  json request;
  try {
    request = json::parse(body);
  } catch (const json::exception& e) {
    throw Refused{400, std::string("the body is not valid JSON (") + e.what() + "); " + kBodyHint};
  }
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
    }
  }
  return request.dump();
}

// The message without the batcher's "request k: " prefix (k is a slot in a server-side batch).
std::string reason(const std::string& message) {
  if (message.rfind("request ", 0) != 0) return message;
  const size_t colon = message.find(": ");
  return colon == std::string::npos ? message : message.substr(colon + 2);
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
  std::string bundle, host = "127.0.0.1", precision = "fp32", backend = "auto", threads;
  int port = 8000, max_batch = 8, max_queue = 256;
  double max_wait_ms = 5.0, max_body_mb = 32.0;
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
    else if (k == "--max-batch") a.max_batch = std::stoi(v);
    else if (k == "--max-wait-ms") a.max_wait_ms = std::stod(v);
    else if (k == "--max-queue") a.max_queue = std::stoi(v);
    else if (k == "--max-body-mb") a.max_body_mb = std::stod(v);
    else throw std::runtime_error("unknown argument " + k);
  }
  if (a.bundle.empty()) throw std::runtime_error("--bundle is required");
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  try {
    a = parse(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "vlfront-http-server: " << e.what() << "\nusage: vlfront-http-server --bundle DIR [--host H] [--port P] "
              << "[--precision P] [--backend B] [--threads N] [--max-batch N] [--max-wait-ms MS] [--max-queue N] "
                 "[--max-body-mb MB]\n";
    return 2;
  }
  // SIGINT/SIGTERM stop the server from a thread of ours (not from a signal handler).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  try {
    // allow_paths=0: even an item that slipped past to_runtime_request cannot make us open a file.
    vlfront::RuntimeOptions options;
    options.set("backend", a.backend).set("precision", a.precision).set("allow_paths", "0");
    if (!a.threads.empty()) options.set("threads", a.threads);
    vlfront::Runtime runtime(a.bundle, options);
    vlfront::Batcher batcher(runtime, static_cast<size_t>(a.max_batch), static_cast<int64_t>(a.max_wait_ms * 1000),
                             static_cast<size_t>(a.max_queue));
    httplib::Server server;
    const size_t max_body = static_cast<size_t>(a.max_body_mb * (1 << 20));
    server.set_payload_max_length(max_body);
    server.set_error_handler([&](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 413)
        send_error(res, 413, "the body is over the limit of " + std::to_string(max_body) + " bytes (--max-body-mb)");
      else
        send_error(res, res.status, "HTTP " + std::to_string(res.status));
    });

    server.Post("/v1/embed", [&](const httplib::Request& req, httplib::Response& res) {
      try {
        const std::string fmt = negotiate(req.get_header_value("Accept"));
        vlfront::Request request = vlfront::Request::from_json(to_runtime_request(req.body));
        vlfront::Embeddings out = batcher.embed(request);
        const auto embeds = out.get(VLF_OUTPUT_INPUTS_EMBEDS);
        const auto mask = out.get(VLF_OUTPUT_ATTENTION_MASK);
        int64_t tokens = 0;
        for (int64_t i = 0; i < mask.numel(); ++i) tokens += mask.as<int64_t>()[i];
        std::string shape;
        for (size_t i = 0; i < embeds.shape.size(); ++i) shape += (i ? "," : "") + std::to_string(embeds.shape[i]);
        res.set_header("X-Dropped-Tokens", std::to_string(out.get(VLF_OUTPUT_DROPPED_TOKENS).as<int64_t>()[0]));
        res.set_header("X-Num-Tokens", std::to_string(tokens));
        res.set_header("X-Num-Images", std::to_string(out.get(VLF_OUTPUT_IMAGES_PER_REQUEST).as<int64_t>()[0]));
        res.set_header("X-Inputs-Embeds-Shape", shape);
        res.set_content(fmt == kSafetensors ? safetensors(out) : npy(embeds), fmt.c_str());
      } catch (const Refused& e) {
        send_error(res, e.status, e.message);
      } catch (const vlfront::Exception& e) {
        switch (e.code()) {
          case VLF_ERR_REQUEST:
          case VLF_ERR_IMAGE:
            send_error(res, 400, reason(e.what()));
            break;
          case VLF_ERR_QUEUE_FULL:
            send_error(res, 503, e.what());
            res.set_header("Retry-After", "1");
            break;
          default:
            send_error(res, 500, e.what());
        }
      }
    });

    server.Get("/healthz", [&](const httplib::Request&, httplib::Response& res) {
      json body = {{"backend", runtime.backend()},
                   {"precision", a.precision},
                   {"cache",
                    {{"entries", runtime.get_int("cache_entries")},
                     {"bytes", runtime.get_int("cache_bytes")},
                     {"hits", runtime.get_int("cache_hits")},
                     {"misses", runtime.get_int("cache_misses")},
                     {"evictions", runtime.get_int("cache_evictions")}}},
                   {"batcher", {{"requests", batcher.get_int("requests")}, {"batches", batcher.get_int("batches")}}}};
      res.set_content(body.dump(), "application/json");
    });

    const int port = a.port == 0 ? server.bind_to_any_port(a.host) : (server.bind_to_port(a.host, a.port) ? a.port : -1);
    if (port < 0) {
      std::cerr << "vlfront-http-server: cannot listen on " << a.host << ":" << a.port << "\n";
      return 1;
    }
    std::printf("listening on http://%s:%d\n", a.host.c_str(), port);
    std::fflush(stdout);
    std::thread stopper([&] {
      int sig = 0;
      sigwait(&stop_signals, &sig);
      server.stop();
    });
    stopper.detach();
    server.listen_after_bind();
    return 0;  // the batcher finishes its queue, then the runtime closes (destructors)
  } catch (const vlfront::Exception& e) {
    std::cerr << "vlfront-http-server: " << e.what() << "\n";
    return 1;
  }
}
