#include "backend.h"

#include "error.h"

namespace vlfront::impl {

namespace {
size_t dtype_size(const std::string& dtype) {
  if (dtype == "uint8") return 1;
  if (dtype == "float16") return 2;
  if (dtype == "float32") return 4;
  if (dtype == "int64") return 8;
  throw Error(VLF_ERR_INTERNAL, "unknown dtype " + dtype);
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + (s[i] < 0 ? std::string("?") : std::to_string(s[i]));
  return out + "]";
}

void check(const std::string& graph, const std::string& what, const std::vector<TensorSpec>& spec,
           const std::vector<HostTensor>& got) {
  if (spec.size() != got.size())
    throw Error(VLF_ERR_INTERNAL, "graph " + graph + ": " + std::to_string(got.size()) + " " + what + ", expected " +
                                      std::to_string(spec.size()));
  for (size_t i = 0; i < spec.size(); ++i) {
    const TensorSpec& s = spec[i];
    const HostTensor& t = got[i];
    if (t.name != s.name || t.dtype != s.dtype)
      throw Error(VLF_ERR_INTERNAL, "graph " + graph + ": " + what + " " + t.name + " (" + t.dtype + ") != expected " +
                                        s.name + " (" + s.dtype + ")");
    bool ok = t.shape.size() == s.shape.size();
    for (size_t d = 0; ok && d < s.shape.size(); ++d) ok = s.shape[d] < 0 || s.shape[d] == t.shape[d];
    if (!ok)
      throw Error(VLF_ERR_INTERNAL, "graph " + graph + ": " + what + " " + t.name + " has shape " + shape_str(t.shape) +
                                        ", expected " + shape_str(s.shape));
  }
}
}  // namespace

size_t HostTensor::bytes() const {
  size_t n = dtype_size(dtype);
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

Runner::Runner(Bundle& bundle, RunnerOptions options) : bundle_(bundle), options_(std::move(options)) {
  for (const char* g : kGraphs) io_[g] = bundle_.graph(g, options_.precision);
}

void Runner::load() {
  if (loaded_) return;
  load_impl();
  loaded_ = true;
}

void Runner::run(const std::string& graph, const std::vector<HostTensor>& inputs, std::vector<HostTensor>& outputs) {
  if (!loaded_) throw Error(VLF_ERR_INTERNAL, std::string(name()) + " runner: call load() before run()");
  auto it = io_.find(graph);
  if (it == io_.end()) throw Error(VLF_ERR_INTERNAL, std::string(name()) + " runner: unknown graph '" + graph + "'");
  check(graph, "input", it->second.inputs, inputs);
  check(graph, "output", it->second.outputs, outputs);
  run_impl(graph, inputs, outputs);
}

void Runner::close() {
  if (!loaded_) return;
  close_impl();
  loaded_ = false;
}

#ifndef VLFRONT_WITH_TENSORRT
std::unique_ptr<Runner> make_tensorrt_runner(Bundle&, RunnerOptions) { return nullptr; }
bool tensorrt_usable(const Bundle&, const std::string&) { return false; }
#endif

std::unique_ptr<Runner> select_backend(Bundle& bundle, const std::string& backend, RunnerOptions options) {
  if (backend == "auto") {
    if (tensorrt_usable(bundle, options.precision)) return make_tensorrt_runner(bundle, options);
    return make_onnxruntime_runner(bundle, options);
  }
  if (backend == "onnxruntime") return make_onnxruntime_runner(bundle, options);
  if (backend == "tensorrt") {
    auto r = make_tensorrt_runner(bundle, options);
    if (!r)
      throw Error(VLF_ERR_BUNDLE, "backend 'tensorrt' is not available here (this build has "
                                  "VLFRONT_WITH_TENSORRT=OFF); choose one of ['onnxruntime'] or 'auto'");
    return r;
  }
  throw Error(VLF_ERR_INVALID_ARGUMENT, "backend '" + backend + "': choose one of ['onnxruntime', 'tensorrt'] or 'auto'");
}

}  // namespace vlfront::impl
