// TensorRT backend (VLFRONT_WITH_TENSORRT=ON): serves a bundle's engines
// (engines/*.plan, built by `vlfront engines`) on a CUDA GPU through the
// documented TensorRT 10 C++ API: IRuntime::deserializeCudaEngine,
// IExecutionContext::setInputShape / setTensorAddress / enqueueV3.
//
// Engine metadata (manifest `engines[<onnx stem>]`) is checked as Python's
// runtime/backends/tensorrt.py does: the entry's fields, that it was built from
// the ONNX file the manifest serves now (sha256), with this TensorRT version, for
// this GPU model and compute capability; inputs outside the engine's
// optimisation profile are refused naming the limit.
//
// NOT BUILT OR RUN in this repository's CI (no TensorRT or CUDA here): written
// against the documented API only. An execution context is not thread-safe, so
// each graph's context is used under its own mutex.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <fstream>
#include <iterator>
#include <mutex>
#include <regex>
#include <utility>

#include "backend.h"
#include "error.h"

namespace vlfront::impl {

namespace {

using nlohmann::json;

const char* const kRebuild = "rebuild the engines on this machine with `vlfront engines --bundle ";

Error engine_error(const std::string& m) { return Error(VLF_ERR_ENGINE, m); }

void cuda_check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw Error(VLF_ERR_BACKEND, std::string("CUDA ") + what + ": " + cudaGetErrorString(rc));
}

class Logger final : public nvinfer1::ILogger {
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kERROR) std::fprintf(stderr, "[vlfront tensorrt] %s\n", msg);
  }
};

struct Environment {
  std::string tensorrt, gpu, compute_capability;
};

Environment environment(int device) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= device)
    throw engine_error("no CUDA GPU " + std::to_string(device) + " is visible (" + std::to_string(count) + " found)");
  cudaDeviceProp prop{};
  cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return {std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." +
              std::to_string(NV_TENSORRT_PATCH),
          prop.name, std::to_string(prop.major) + "." + std::to_string(prop.minor)};
}

std::string stem(const std::string& onnx_file) {
  return onnx_file.size() > 5 && onnx_file.compare(onnx_file.size() - 5, 5, ".onnx") == 0
             ? onnx_file.substr(0, onnx_file.size() - 5)
             : onnx_file;
}

// find_engine + validate_entry of the Python backend.
const json& find_engine(const Bundle& b, const std::string& graph, const std::string& precision) {
  const std::string fix = kRebuild + b.root() + "`";
  const GraphEntry& variant = b.graph(graph, precision);
  const json& engines = b.manifest().contains("engines") ? b.manifest()["engines"] : json::object();
  const std::string key = stem(variant.file);
  if (!engines.is_object() || !engines.contains(key))
    throw engine_error(b.root() + ": no TensorRT engine for " + variant.file +
                       "; build it on this machine with `vlfront engines --bundle " + b.root() + "`");
  const json& e = engines[key];
  const char* strings[] = {"file", "graph", "precision", "onnx", "onnx_sha256", "tensorrt", "gpu", "compute_capability"};
  if (!e.is_object()) throw engine_error("manifest engines['" + key + "'] is not an object; " + fix);
  for (const char* f : strings)
    if (!e.contains(f) || !e[f].is_string())
      throw engine_error("manifest engines['" + key + "']: field '" + f + "' is missing or not a str; " + fix);
  if (!e.contains("profile") || !e["profile"].is_object())
    throw engine_error("manifest engines['" + key + "']: field 'profile' is missing or not a dict; " + fix);
  if (!std::regex_match(e["onnx_sha256"].get<std::string>(), std::regex("^[0-9a-f]{64}$")))
    throw engine_error("manifest engines['" + key + "']: onnx_sha256 is not a sha256 hex digest; " + fix);
  if (e["onnx"] != variant.file)
    throw engine_error(b.root() + ": engine " + e["file"].get<std::string>() + " was built from " +
                       e["onnx"].get<std::string>() + ", but " + graph + "/" + precision + " is " + variant.file + "; " +
                       fix);
  return e;
}

void check_compatible(const Bundle& b, const json& e, const Environment& env) {
  const std::string fix = kRebuild + b.root() + "`";
  const std::string name = e["file"];
  const std::string built = e["tensorrt"];
  // Python records tensorrt.__version__ (e.g. "10.3.0" or "10.3.0.26"): compare major.minor.patch.
  if (built != env.tensorrt && built.rfind(env.tensorrt + ".", 0) != 0)
    throw engine_error(name + " was built with TensorRT " + built + ", this is TensorRT " + env.tensorrt +
                       ": engines do not carry across TensorRT versions; " + fix);
  if (e["compute_capability"] != env.compute_capability || e["gpu"] != env.gpu)
    throw engine_error(name + " was built for " + e["gpu"].get<std::string>() + " (compute capability " +
                       e["compute_capability"].get<std::string>() + "), this GPU is " + env.gpu + " (" +
                       env.compute_capability + "): engines are specific to the GPU model; " + fix);
  const json& files = b.manifest()["files"];
  const std::string onnx = e["onnx"];
  const std::string listed = files.contains(onnx) && files[onnx].contains("sha256") ? files[onnx]["sha256"].get<std::string>() : "";
  if (listed != e["onnx_sha256"])
    throw engine_error(name + " was built from " + onnx + " with another sha256 than the bundle's " + onnx +
                       " (recalibrated or re-exported since); " + fix);
}

void check_shape(const json& e, const std::string& tensor, const std::vector<int64_t>& shape) {
  const json& profile = e["profile"];
  if (!profile.contains(tensor)) return;
  const auto lo = profile[tensor]["min"].get<std::vector<int64_t>>();
  const auto hi = profile[tensor]["max"].get<std::vector<int64_t>>();
  bool ok = shape.size() == lo.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] >= lo[i] && shape[i] <= hi[i];
  if (!ok)
    throw Error(VLF_ERR_REQUEST, e["file"].get<std::string>() + ": input " + tensor + " has shape " + json(shape).dump() +
                                     ", the engine's profile allows " + json(lo).dump() + " to " + json(hi).dump() +
                                     "; split the batch, or rebuild with a larger `vlfront engines --max-batch N`");
}

template <typename T>
struct Destroy {
  void operator()(T* p) const { delete p; }  // TensorRT 10: objects are deleted, destroy() is gone
};

struct DeviceBuffer {  // move-only owner of one cudaMalloc block
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(std::exchange(o.ptr, nullptr)), bytes(std::exchange(o.bytes, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&&) = delete;
  void reserve(size_t n) {
    if (n <= bytes) return;
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    cuda_check(cudaMalloc(&ptr, n ? n : 1), "cudaMalloc");
    bytes = n;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
};

class TensorRTRunner final : public Runner {
 public:
  using Runner::Runner;
  const char* name() const override { return "tensorrt"; }

 protected:
  void load_impl() override {
    cuda_check(cudaSetDevice(options_.device_id), "cudaSetDevice");
    const Environment env = environment(options_.device_id);
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) throw engine_error("TensorRT: createInferRuntime failed");
    for (const char* g : kGraphs) {
      Graph& graph = graphs_[g];
      graph.entry = find_engine(bundle_, g, options_.precision);
      check_compatible(bundle_, graph.entry, env);
      const std::string path = bundle_.path(graph.entry["file"].get<std::string>());
      std::ifstream f(path, std::ios::binary);
      const std::string plan((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      graph.engine.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
      if (!graph.engine)
        throw engine_error(graph.entry["file"].get<std::string>() + ": TensorRT could not deserialize the engine; " +
                           kRebuild + bundle_.root() + "`");
      graph.context.reset(graph.engine->createExecutionContext());
      if (!graph.context) throw engine_error("TensorRT: createExecutionContext failed for " + std::string(g));
      for (const auto& t : io_[g].outputs)
        if (graph.engine->getTensorDataType(t.name.c_str()) != nvinfer1::DataType::kFLOAT)
          throw engine_error(graph.entry["file"].get<std::string>() + ": output " + t.name +
                             " is not float32; " + kRebuild + bundle_.root() + "`");
    }
    cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }

  void run_impl(const std::string& name, const std::vector<HostTensor>& inputs,
                std::vector<HostTensor>& outputs) override {
    Graph& g = graphs_.at(name);
    std::lock_guard<std::mutex> lock(g.mutex);
    cuda_check(cudaSetDevice(options_.device_id), "cudaSetDevice");
    g.buffers.resize(inputs.size() + outputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      const HostTensor& t = inputs[i];
      check_shape(g.entry, t.name, t.shape);
      g.buffers[i].reserve(t.bytes());
      if (t.bytes())
        cuda_check(cudaMemcpyAsync(g.buffers[i].ptr, t.data, t.bytes(), cudaMemcpyHostToDevice, stream_), "copy in");
      nvinfer1::Dims dims{};
      dims.nbDims = static_cast<int32_t>(t.shape.size());
      for (size_t d = 0; d < t.shape.size(); ++d) dims.d[d] = t.shape[d];
      if (!g.context->setInputShape(t.name.c_str(), dims))
        throw Error(VLF_ERR_BACKEND, "TensorRT refused the shape of input " + t.name);
      g.context->setTensorAddress(t.name.c_str(), g.buffers[i].ptr);
    }
    for (size_t o = 0; o < outputs.size(); ++o) {
      DeviceBuffer& buf = g.buffers[inputs.size() + o];
      buf.reserve(outputs[o].bytes());
      g.context->setTensorAddress(outputs[o].name.c_str(), buf.ptr);
    }
    if (!g.context->enqueueV3(stream_))
      throw Error(VLF_ERR_BACKEND, g.entry["file"].get<std::string>() + ": TensorRT execution failed");
    for (size_t o = 0; o < outputs.size(); ++o)
      if (outputs[o].bytes())
        cuda_check(cudaMemcpyAsync(outputs[o].data, g.buffers[inputs.size() + o].ptr, outputs[o].bytes(),
                                   cudaMemcpyDeviceToHost, stream_),
                   "copy out");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  void close_impl() override {
    graphs_.clear();
    runtime_.reset();
    if (stream_) cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }

 private:
  struct Graph {
    json entry;
    std::unique_ptr<nvinfer1::ICudaEngine, Destroy<nvinfer1::ICudaEngine>> engine;
    std::unique_ptr<nvinfer1::IExecutionContext, Destroy<nvinfer1::IExecutionContext>> context;
    std::vector<DeviceBuffer> buffers;
    std::mutex mutex;
  };
  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime, Destroy<nvinfer1::IRuntime>> runtime_;
  std::map<std::string, Graph> graphs_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Runner> make_tensorrt_runner(Bundle& bundle, RunnerOptions options) {
  return std::make_unique<TensorRTRunner>(bundle, std::move(options));
}

bool tensorrt_usable(const Bundle& bundle, const std::string& precision) {
  try {
    const Environment env = environment(0);
    for (const char* g : Runner::kGraphs) check_compatible(bundle, find_engine(bundle, g, precision), env);
    return true;
  } catch (...) {  // answers a question: every failure means "no"
    return false;
  }
}

}  // namespace vlfront::impl
