#include "probe.h"

#include <sys/utsname.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "error.h"

namespace vlfront::impl {

namespace {

using nlohmann::json;

constexpr size_t kMaxHeaderBytes = 1u << 20;
constexpr size_t kMaxProbeBytes = size_t{256} << 20;
constexpr int kMaxImages = 4;
// Same list, same order as Python's probe.CPU_FEATURES.
const char* const kCpuFeatures[] = {"avx2",     "avx512f",  "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                    "avx512_fp16", "amx_int8", "amx_bf16", "asimddp",     "i8mm",     "sve"};

Error bundle_error(const std::string& m) { return Error(VLF_ERR_BUNDLE, m); }

size_t dtype_size(const std::string& dtype) {
  if (dtype == "U8" || dtype == "I8" || dtype == "BOOL") return 1;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  return 0;
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return {};
  const size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

std::string describe_cpu(const std::string& cpu, const std::string& arch, const std::vector<std::string>& features) {
  std::string list;
  for (const auto& f : features) list += (list.empty() ? "" : " ") + f;
  if (list.empty()) list = "none of avx2/avx512f/avx512bw/avx512_vnni/avx_vnni";
  return "CPU '" + cpu + "' (" + arch + ": " + list + ")";
}

// The gate's rule for one output; the words of Python's probe.failures.
std::vector<std::string> failures(const ProbeFigures& f, double mean_gate, double min_gate) {
  std::vector<std::string> out;
  if (!f.finite) out.push_back("NaN/Inf in the output");
  if (f.cosine_min < min_gate) out.push_back("cosine_min " + fmt("%.6f", f.cosine_min) + " < gate " + fmt("%g", min_gate));
  if (f.cosine_mean < mean_gate)
    out.push_back("cosine_mean " + fmt("%.6f", f.cosine_mean) + " < gate " + fmt("%g", mean_gate));
  return out;
}

const SafeTensor& expect(const std::map<std::string, SafeTensor>& t, const std::string& where, const std::string& name,
                         const std::string& dtype, const std::vector<int64_t>& shape) {
  auto it = t.find(name);
  bool ok = it != t.end() && it->second.dtype == dtype && it->second.shape.size() == shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || it->second.shape[i] == shape[i];
  if (!ok) {
    std::string got = "missing";
    if (it != t.end()) got = it->second.dtype + " " + json(it->second.shape).dump();
    throw bundle_error(where + ": tensor " + name + " is " + got + ", expected " + dtype + " " + json(shape).dump() +
                       "; re-calibrate the bundle");
  }
  return it->second;
}

template <typename T>
std::vector<T> as_vector(const SafeTensor& t) {
  std::vector<T> out(t.data.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), t.data.data(), out.size() * sizeof(T));
  return out;
}

}  // namespace

ProbeFigures probe_figures(const float* a, const float* e, int64_t rows, int64_t dim) {
  ProbeFigures f;
  f.tokens = rows;
  double cos_sum = 0.0, diff2 = 0.0, ref2 = 0.0;
  f.cosine_min = rows > 0 ? 2.0 : 1.0;
  for (int64_t r = 0; r < rows; ++r) {
    double dot = 0.0, na = 0.0, ne = 0.0;
    for (int64_t k = 0; k < dim; ++k) {
      double x = a[r * dim + k];
      const double y = e[r * dim + k];
      if (!std::isfinite(x)) f.finite = false, x = 0.0;  // zeroed, as Python's nan_to_num
      dot += x * y, na += x * x, ne += y * y;
      diff2 += (x - y) * (x - y), ref2 += y * y;
      f.max_abs = std::max(f.max_abs, std::fabs(x - y));
    }
    na = std::sqrt(na), ne = std::sqrt(ne);
    const double cos = (na > 0 && ne > 0) ? dot / (na * ne) : (na == 0 && ne == 0 ? 1.0 : 0.0);
    cos_sum += cos;
    f.cosine_min = std::min(f.cosine_min, cos);
  }
  f.cosine_mean = rows > 0 ? cos_sum / static_cast<double>(rows) : 1.0;
  f.rel_l2 = ref2 > 0 ? std::sqrt(diff2) / std::sqrt(ref2) : (diff2 > 0 ? 1.0 : 0.0);
  return f;
}

std::map<std::string, SafeTensor> parse_safetensors(const std::string& bytes, const std::string& where) {
  auto bad = [&](const std::string& why) {
    return bundle_error(where + " is not a valid safetensors file (" + why + "); re-calibrate the bundle");
  };
  if (bytes.size() < 8) throw bad("shorter than its 8-byte header size");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
  if (n > kMaxHeaderBytes || n > bytes.size() - 8)
    throw bad("header of " + std::to_string(n) + " bytes; the file has " + std::to_string(bytes.size()) +
              ", the limit is " + std::to_string(kMaxHeaderBytes));
  // Nesting bounded before parsing: a header is one level of objects of flat lists.
  int depth = 0;
  bool in_string = false;
  for (size_t i = 8; i < 8 + n; ++i) {
    const char ch = bytes[i];
    if (in_string) {
      if (ch == '\\') ++i;
      else if (ch == '"') in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '{' || ch == '[') {
      if (++depth > 8) throw bad("header nests deeper than 8 levels");
    } else if (ch == '}' || ch == ']') {
      --depth;
    }
  }
  json header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(n), nullptr, false);
  if (!header.is_object()) throw bad("header is not a JSON object");
  const size_t data_size = bytes.size() - 8 - n;
  std::map<std::string, SafeTensor> out;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const json& e = it.value();
    if (!e.is_object() || !e.contains("dtype") || !e["dtype"].is_string() || !e.contains("shape") ||
        !e["shape"].is_array() || !e.contains("data_offsets") || !e["data_offsets"].is_array() ||
        e["data_offsets"].size() != 2 || !e["data_offsets"][0].is_number_unsigned() ||
        !e["data_offsets"][1].is_number_unsigned())
      throw bad("tensor " + it.key() + " needs dtype, shape and two data_offsets");
    SafeTensor t;
    t.dtype = e["dtype"].get<std::string>();
    const size_t esize = dtype_size(t.dtype);
    if (!esize) throw bad("tensor " + it.key() + " has unknown dtype " + t.dtype);
    constexpr uint64_t kMaxElements = uint64_t{1} << 40;
    uint64_t count = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) throw bad("tensor " + it.key() + ": bad shape");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > kMaxElements || (dim && count > kMaxElements / dim)) throw bad("tensor " + it.key() + ": shape too large");
      t.shape.push_back(static_cast<int64_t>(dim));
      count *= dim;
    }
    const uint64_t begin = e["data_offsets"][0].get<uint64_t>(), end = e["data_offsets"][1].get<uint64_t>();
    if (begin > end || end > data_size || end - begin != count * esize)
      throw bad("tensor " + it.key() + ": offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                ") do not hold " + std::to_string(count) + " x " + std::to_string(esize) + " bytes inside " +
                std::to_string(data_size));
    t.data = bytes.substr(8 + n + begin, end - begin);
    spans.emplace_back(begin, end);
    out[it.key()] = std::move(t);
  }
  std::sort(spans.begin(), spans.end());
  uint64_t at = 0;
  for (const auto& s : spans) {
    if (s.first != at) throw bad("tensors overlap or leave a gap at byte " + std::to_string(at));
    at = s.second;
  }
  if (at != data_size) throw bad(std::to_string(data_size - at) + " trailing bytes after the last tensor");
  return out;
}

std::string describe_this_cpu() {
  std::string model;
  std::vector<std::string> flags;
  bool have_flags = false;
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = trim(line.substr(0, colon));
    for (auto& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const std::string value = trim(line.substr(colon + 1));
    if ((key == "model name" || key == "hardware") && model.empty()) model = value;
    if ((key == "flags" || key == "features") && !have_flags) {
      have_flags = true;
      std::istringstream words(value);
      for (std::string w; words >> w;) flags.push_back(w);
    }
  }
  std::vector<std::string> present;
  for (const char* feature : kCpuFeatures)
    if (std::find(flags.begin(), flags.end(), feature) != flags.end()) present.push_back(feature);
  struct utsname u {};
  const std::string arch = ::uname(&u) == 0 ? u.machine : "unknown";
  return describe_cpu(model.empty() ? "unknown CPU" : model, arch, present);
}

void verify_probe(Bundle& bundle, Runner& runner, const std::string& precision) {
  const json& manifest = bundle.manifest();
  const std::string& root = bundle.root();
  const json empty = json::object();
  const json& calibration = manifest.contains("calibration") && manifest["calibration"].is_object()
                                ? manifest["calibration"] : empty;
  const bool has_probe = calibration.contains("probe") && calibration["probe"].is_object() &&
                         !calibration["probe"].empty();
  const bool has_gate = calibration.contains("thresholds") && calibration["thresholds"].is_object();
  if (!has_probe || !has_gate)
    throw bundle_error(root + ": the " + precision + " variant has no acceptance probe (calibration.probe): " +
                       "re-calibrate with `vlfront calibrate --bundle " + root + "`, or load with verify=False");
  for (const char* key : {"mean_cosine", "min_cosine"}) {
    const json v = calibration["thresholds"].value(key, json());
    if (!v.is_number() || !(v.get<double>() >= -1.0 && v.get<double>() <= 1.0))
      throw bundle_error(root + ": manifest calibration.thresholds." + key + " is " + v.dump() +
                         ", not a cosine in [-1, 1]; re-calibrate the bundle");
  }
  const double mean_gate = calibration["thresholds"]["mean_cosine"].get<double>();
  const double min_gate = calibration["thresholds"]["min_cosine"].get<double>();
  const json& spec = calibration["probe"];
  const std::string rel = spec.value("file", json("probe.safetensors")).is_string()
                              ? spec.value("file", std::string("probe.safetensors")) : "probe.safetensors";
  const std::string path = bundle.path(rel);  // size + sha256 first
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() > kMaxProbeBytes) throw bundle_error(root + ": " + rel + " exceeds " + std::to_string(kMaxProbeBytes) + " bytes");
  const std::string where = root + ": " + rel;
  const auto t = parse_safetensors(bytes, where);
  const ModelConfig& c = bundle.config();
  const int64_t S = c.image_size, T = c.tokens_per_image(), D = c.hidden_size, L = c.max_seq_len;
  const SafeTensor& px = expect(t, where, "patch_embed.pixel_values", "U8", {-1, S, S, 3});
  const SafeTensor& vt = expect(t, where, "patch_embed.visual_tokens", "F32", {-1, T, D});
  const SafeTensor& ids_t = expect(t, where, "fusion.input_ids", "I64", {1, L});
  const SafeTensor& mask_t = expect(t, where, "fusion.attention_mask", "I64", {1, L});
  const SafeTensor& emb_t = expect(t, where, "fusion.inputs_embeds", "F32", {-1, D});
  const int64_t n = px.shape[0];
  std::vector<int64_t> ids = as_vector<int64_t>(ids_t), mask = as_vector<int64_t>(mask_t);
  int64_t attended = 0;
  for (int64_t m : mask) attended += m != 0;
  if (n < 1 || vt.shape[0] != n || emb_t.shape[0] != attended)
    throw bundle_error(where + ": inconsistent tensor sizes (images " + std::to_string(n) + ", attended tokens " +
                       std::to_string(attended) + "); re-calibrate the bundle");
  std::vector<float> ref_vt = as_vector<float>(vt), ref_emb = as_vector<float>(emb_t);

  std::string pixels = px.data;
  std::vector<float> got_vt(static_cast<size_t>(n * T * D));
  {
    std::vector<HostTensor> inputs{{"pixel_values", "uint8", {n, S, S, 3}, pixels.data()}};
    std::vector<HostTensor> outputs{{"visual_tokens", "float32", {n, T, D}, got_vt.data()}};
    runner.run("patch_embed", inputs, outputs);
  }
  // int8 serves the fp32 fusion graph: nothing to probe there (Python's probe.fusion_is_fp32).
  const bool fusion_fp32 = precision != "fp32" && bundle.graph("fusion", precision).file == bundle.graph("fusion", "fp32").file;
  std::vector<float> embeds(fusion_fp32 ? 0 : static_cast<size_t>(L * D));
  if (!fusion_fp32) {
    std::vector<HostTensor> inputs{{"input_ids", "int64", {1, L}, ids.data()},
                                   {"visual_tokens", "float32", {1, T, D}, ref_vt.data()}};
    std::vector<HostTensor> outputs{{"inputs_embeds", "float32", {1, L, D}, embeds.data()}};
    runner.run("fusion", inputs, outputs);
  }
  std::vector<float> got_emb;
  got_emb.reserve(static_cast<size_t>(attended * D));
  for (int64_t i = 0; i < L && !fusion_fp32; ++i)
    if (mask[static_cast<size_t>(i)])
      got_emb.insert(got_emb.end(), embeds.begin() + i * D, embeds.begin() + (i + 1) * D);

  std::vector<std::pair<const char*, ProbeFigures>> figs = {
      {"patch_embed visual_tokens", probe_figures(got_vt.data(), ref_vt.data(), n * T, D)}};
  if (!fusion_fp32) figs.emplace_back("fusion inputs_embeds", probe_figures(got_emb.data(), ref_emb.data(), attended, D));
  std::string problems;
  const ProbeFigures* first = nullptr;
  for (const auto& [name, fig] : figs) {
    for (const auto& what : failures(fig, mean_gate, min_gate)) {
      problems += (problems.empty() ? "" : "; ") + std::string(name) + " " + what;
      if (!first) first = &fig;
    }
  }
  if (!first) return;
  const json& m = calibration.contains("machine") && calibration["machine"].is_object() ? calibration["machine"] : empty;
  std::vector<std::string> features;
  if (m.contains("features") && m["features"].is_array())
    for (const auto& f : m["features"])
      if (f.is_string()) features.push_back(f.get<std::string>());
  const std::string cpu = m.contains("cpu") && m["cpu"].is_string() ? m["cpu"].get<std::string>() : "None";
  const std::string arch = m.contains("arch") && m["arch"].is_string() ? m["arch"].get<std::string>() : "None";
  const std::string here = std::string(runner.name()) == "tensorrt"
                               ? std::string("GPU (TensorRT)")
                               : describe_this_cpu();
  throw bundle_error(root + ": the " + precision + " variant fails its acceptance probe on this machine: " + problems +
                     " (rel_l2 " + fmt("%.3e", first->rel_l2) + "); backend " + runner.name() + " on " + here +
                     "; the gate was measured on " + describe_cpu(cpu, arch, features) +
                     ". Serve fp32 (precision='fp32'), or re-calibrate on this machine (`vlfront calibrate --bundle " +
                     root + "`); verify=False (C option verify=0) skips this check");
}

void warn_probe_skipped(const Bundle& bundle, const std::string& precision) {
  std::fprintf(stderr,
               "WARNING vlfront.probe: %s: the %s variant is served without its acceptance probe (verify=False): "
               "its accuracy on this machine is not checked\n",
               bundle.root().c_str(), precision.c_str());
}

}  // namespace vlfront::impl
