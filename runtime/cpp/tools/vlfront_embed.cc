// vlfront-embed: one request through the C++ runtime (via the C ABI and its
// C++ wrapper), like `vlfront embed`: shapes, dropped tokens, per-stage timings.
//
//   vlfront-embed --bundle DIR [--image PATH]... [--text TEXT] [--request FILE.json]
//                 [--out FILE.npy] [--backend auto|onnxruntime|tensorrt] [--precision fp32|fp16|int8]
//                 [--threads N] [--repeat N] [--json]
//
// --repeat N runs the request N more times (after one warm-up) and prints p50/p99
// latency; --json prints one JSON object instead of the text summary.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "vlfront/vlfront.hpp"

namespace {

struct Args {
  std::string bundle, text, request_file, out, backend = "auto", precision = "fp32", threads;
  std::vector<std::string> images;
  int repeat = 0;
  bool json = false;
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "vlfront-embed: " << why << "\n"
            << "usage: vlfront-embed --bundle DIR [--image PATH]... [--text TEXT] [--request FILE.json]\n"
            << "                     [--out FILE.npy] [--backend B] [--precision P] [--threads N] [--repeat N] [--json]\n";
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(k + " needs a value");
      return argv[++i];
    };
    if (k == "--bundle") a.bundle = value();
    else if (k == "--image") a.images.push_back(value());
    else if (k == "--text") a.text = value();
    else if (k == "--request") a.request_file = value();
    else if (k == "--out") a.out = value();
    else if (k == "--backend") a.backend = value();
    else if (k == "--precision") a.precision = value();
    else if (k == "--threads") a.threads = value();
    else if (k == "--repeat") a.repeat = std::stoi(value());
    else if (k == "--json") a.json = true;
    else usage("unknown argument " + k);
  }
  if (a.bundle.empty()) usage("--bundle is required");
  if (a.images.empty() && a.text.empty() && a.request_file.empty())
    usage("nothing to embed: give --image PATH and/or --text TEXT, or --request FILE.json");
  return a;
}

// NumPy .npy v1.0 of a float32 tensor.
void save_npy(const std::string& path, const vlfront::TensorView& t) {
  std::string shape = "(";
  for (size_t i = 0; i < t.shape.size(); ++i) shape += std::to_string(t.shape[i]) + (t.shape.size() == 1 || i + 1 < t.shape.size() ? ", " : "");
  shape += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + path);
  const uint16_t len = static_cast<uint16_t>(header.size());
  f.write("\x93NUMPY\x01\x00", 8);
  f.put(static_cast<char>(len & 0xFF)).put(static_cast<char>(len >> 8));
  f << header;
  f.write(static_cast<const char*>(t.data), static_cast<std::streamsize>(t.numel() * 4));
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  try {
    vlfront::RuntimeOptions options;
    options.set("backend", a.backend).set("precision", a.precision);
    if (!a.threads.empty()) options.set("threads", a.threads);
    vlfront::Runtime rt(a.bundle, options);

    vlfront::Request req;
    if (!a.request_file.empty()) {
      std::ifstream f(a.request_file);
      if (!f) throw std::runtime_error("cannot read " + a.request_file);
      std::stringstream ss;
      ss << f.rdbuf();
      req = vlfront::Request::from_json(ss.str());
    } else {
      req.add_message("user");
      for (const auto& p : a.images) req.add_image_file(p);
      if (!a.text.empty()) req.add_text(a.text);
    }

    vlfront::Embeddings out = rt.embed({&req});
    std::vector<double> latencies;
    for (int i = 0; i < a.repeat; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      out = rt.embed({&req});
      latencies.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const auto embeds = out.get(VLF_OUTPUT_INPUTS_EMBEDS);
    const auto ids = out.get(VLF_OUTPUT_INPUT_IDS);
    const auto mask = out.get(VLF_OUTPUT_ATTENTION_MASK);
    const auto img = out.get(VLF_OUTPUT_IMAGE_ATTENTION_MASK);
    const auto px = out.get(VLF_OUTPUT_PIXEL_VALUES);
    const auto dropped = out.get(VLF_OUTPUT_DROPPED_TOKENS);
    int64_t real = 0, image_tokens = 0;
    for (int64_t i = 0; i < mask.numel(); ++i) real += mask.as<int64_t>()[i], image_tokens += img.as<int64_t>()[i];
    const char* stages[] = {"layout", "decode", "patch_embed", "fusion", "total"};
    std::sort(latencies.begin(), latencies.end());
    auto pct = [&](double q) {
      return latencies.empty() ? 0.0 : latencies[std::min(latencies.size() - 1, static_cast<size_t>(q * (latencies.size() - 1) + 0.5))];
    };
    if (a.json) {
      std::printf("{\"backend\": \"%s\", \"inputs_embeds\": %s, \"real_tokens\": %lld, \"image_tokens\": %lld, "
                  "\"dropped\": %lld, \"pixel_values\": %s",
                  rt.backend().c_str(), shape_str(embeds.shape).c_str(), static_cast<long long>(real),
                  static_cast<long long>(image_tokens), static_cast<long long>(dropped.as<int64_t>()[0]),
                  shape_str(px.shape).c_str());
      for (const char* s : stages) std::printf(", \"%s_ms\": %.4f", s, out.timing(s) * 1e3);
      if (!latencies.empty())
        std::printf(", \"iterations\": %zu, \"p50_ms\": %.4f, \"p99_ms\": %.4f", latencies.size(), pct(0.5) * 1e3,
                    pct(0.99) * 1e3);
      std::printf("}\n");
    } else {
      std::printf("backend       %s (%s)\n", rt.backend().c_str(), a.precision.c_str());
      std::printf("inputs_embeds %s float32\n", shape_str(embeds.shape).c_str());
      std::printf("input_ids     %s  real tokens %lld, image tokens %lld, dropped %lld\n", shape_str(ids.shape).c_str(),
                  static_cast<long long>(real), static_cast<long long>(image_tokens),
                  static_cast<long long>(dropped.as<int64_t>()[0]));
      std::printf("pixel_values  %s uint8\n", shape_str(px.shape).c_str());
      std::printf("timings      ");
      for (const char* s : stages) std::printf(" %s %.2f ms%s", s, out.timing(s) * 1e3, std::string(s) == "total" ? "" : ",");
      std::printf("\n");
      if (!latencies.empty())
        std::printf("latency       p50 %.2f ms, p99 %.2f ms over %zu runs\n", pct(0.5) * 1e3, pct(0.99) * 1e3,
                    latencies.size());
    }
    if (!a.out.empty()) {
      save_npy(a.out, embeds);
      if (!a.json) std::printf("saved         %s\n", a.out.c_str());
    }
    return 0;
  } catch (const vlfront::Exception& e) {
    std::cerr << "vlfront-embed: error " << static_cast<int>(e.code()) << ": " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "vlfront-embed: " << e.what() << "\n";
    return 1;
  }
}
