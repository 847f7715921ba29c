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
// Batches beyond the engine's profile run as several launches (patch_embed by
// images, fusion by requests with their images), as Python's trt_exec.py does;
// every setInputShape / setTensorAddress / enqueueV3 result is checked, output
// shapes come from getTensorShape and must match the caller's buffers, and an
// empty tensor (a text-only batch's visual_tokens) gets a valid 1-byte address.
// The library version (getInferLibVersion + getInferLibBuildVersion) must equal
// the headers' and the engine's.
//
// NOT RUN on a GPU in this repository's CI (no TensorRT or CUDA here): it is
// compiled and its logic run against stub headers with the TensorRT 10.13
// signatures and fake TensorRT/CUDA objects (tests/trt_stub, ctest
// TensorRTStub.*). An execution context is not thread-safe, so each graph's
// context is used under its own mutex, on its own stream.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <mutex>
#include <regex>
#include <utility>

#include "backend.h"
#include "error.h"
#include "tokenizer.h"  // kImagePadId

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

// The loaded library's version, "major.minor.patch.build" (as Python's tensorrt.__version__), refused when it
// is not the version of the headers this file was compiled with (the ABI of the classes would differ).
std::string library_version() {
  const int32_t v = getInferLibVersion();  // (major * 100 + minor) * 100 + patch
  const int32_t build = getInferLibBuildVersion();
  const std::string lib = std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
                          std::to_string(v % 100) + "." + std::to_string(build);
  const std::string headers = std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." +
                              std::to_string(NV_TENSORRT_PATCH) + "." + std::to_string(NV_TENSORRT_BUILD);
  if (lib != headers)
    throw engine_error("the TensorRT library is " + lib + " but vlfront was compiled against TensorRT " + headers +
                       " headers; rebuild vlfront against the library it runs with");
  return lib;
}

Environment environment(int device) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= device)
    throw engine_error("no CUDA GPU " + std::to_string(device) + " is visible (" + std::to_string(count) + " found)");
  cudaDeviceProp prop{};
  cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return {library_version(), prop.name, std::to_string(prop.major) + "." + std::to_string(prop.minor)};
}

std::string stem(const std::string& onnx_file) {
  return onnx_file.size() > 5 && onnx_file.compare(onnx_file.size() - 5, 5, ".onnx") == 0
             ? onnx_file.substr(0, onnx_file.size() - 5)
             : onnx_file;
}

// find_engine + validate_entry of the Python backend. Returns a copy: the entry outlives any temporary.
json find_engine(const Bundle& b, const std::string& graph, const std::string& precision) {
  const std::string fix = kRebuild + b.root() + "`";
  const GraphEntry& variant = b.graph(graph, precision);
  const json& manifest = b.manifest();
  const std::string key = stem(variant.file);
  const auto engines = manifest.find("engines");
  if (engines == manifest.end() || !engines->is_object() || !engines->contains(key))
    throw engine_error(b.root() + ": no TensorRT engine for " + variant.file +
                       "; build it on this machine with `vlfront engines --bundle " + b.root() + "`");
  const json e = (*engines)[key];
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
  // Python records tensorrt.__version__ ("10.13.3.9"): all four parts must match (an entry without a build
  // number, from an older builder, is compared on major.minor.patch).
  const std::string three = env.tensorrt.substr(0, env.tensorrt.rfind('.'));
  if (built != env.tensorrt && built != three)
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
  // At least one byte, so an empty tensor still has a valid address (enqueueV3 refuses null ones).
  void reserve(size_t n) {
    n = std::max<size_t>(n, 1);
    if (ptr && n <= bytes) return;
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    bytes = 0;
    cuda_check(cudaMalloc(&ptr, n), "cudaMalloc");
    bytes = n;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
};

// One launch: rows [begin, begin + count) of each input (axis 0), and of each output.
struct Slice {
  int64_t begin = 0, count = 0;
};
struct Launch {
  std::vector<Slice> inputs;
  Slice output;
};

int64_t profile_max(const json& e, const std::string& tensor, int64_t fallback) {
  const json& p = e["profile"];
  return p.contains(tensor) ? p[tensor]["max"][0].get<int64_t>() : fallback;
}

// The launches that fit the engine's profile (one when the batch fits already), as trt_exec.split_feeds.
std::vector<Launch> plan_launches(const std::string& graph, const json& e, const std::vector<HostTensor>& in,
                                  int64_t tokens_per_image) {
  std::vector<Launch> out;
  if (graph == "patch_embed") {
    const int64_t n = in[0].shape[0], step = std::max<int64_t>(1, profile_max(e, in[0].name, n));
    for (int64_t b = 0; b < n || (n == 0 && out.empty()); b += step)
      out.push_back({{{b, std::min(step, n - b)}}, {b, std::min(step, n - b)}});
    return out;
  }
  const HostTensor* ids = nullptr;
  const HostTensor* visual = nullptr;
  size_t ids_at = 0, visual_at = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i].name == "input_ids") ids = &in[i], ids_at = i;
    if (in[i].name == "visual_tokens") visual = &in[i], visual_at = i;
  }
  const int64_t rows = ids->shape[0], seq = ids->shape[1], images = visual->shape[0];
  const int64_t max_rows = profile_max(e, "input_ids", rows), max_images = profile_max(e, "visual_tokens", images);
  auto whole = [&] {
    Launch l;
    l.inputs.resize(in.size());
    l.inputs[ids_at] = {0, rows};
    l.inputs[visual_at] = {0, images};
    l.output = {0, rows};
    return std::vector<Launch>{l};
  };
  if ((rows <= max_rows && images <= max_images) || max_rows < 1) return whole();
  std::vector<int64_t> per_row(rows, 0);
  const auto* id = static_cast<const int64_t*>(ids->data);
  int64_t total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t pads = 0;
    for (int64_t t = 0; t < seq; ++t) pads += id[r * seq + t] == kImagePadId;
    if (pads % tokens_per_image) return whole();  // malformed: run as one, the profile check names the limit
    per_row[r] = pads / tokens_per_image;
    if (per_row[r] > max_images) return whole();
    total += per_row[r];
  }
  if (total != images) return whole();
  for (int64_t start = 0, first = 0; start < rows;) {
    int64_t end = start, count = 0;
    while (end < rows && end - start < max_rows && count + per_row[end] <= max_images) count += per_row[end++];
    Launch l;
    l.inputs.resize(in.size());
    l.inputs[ids_at] = {start, end - start};
    l.inputs[visual_at] = {first, count};
    l.output = {start, end - start};
    out.push_back(l);
    start = end;
    first += count;
  }
  return out;
}

HostTensor rows_of(const HostTensor& t, Slice s) {
  HostTensor part = t;
  const size_t row = t.shape[0] ? t.bytes() / static_cast<size_t>(t.shape[0]) : 0;
  part.shape[0] = s.count;
  part.data = static_cast<char*>(t.data) + row * static_cast<size_t>(s.begin);
  return part;
}

class TensorRTRunner final : public Runner {
 public:
  using Runner::Runner;
  ~TensorRTRunner() override { close_impl(); }  // streams, contexts and engines even without close()
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
      for (const auto& t : io_[g].inputs) {
        const auto want = t.dtype == "uint8"   ? nvinfer1::DataType::kUINT8
                          : t.dtype == "int64" ? nvinfer1::DataType::kINT64
                                               : nvinfer1::DataType::kFLOAT;
        if (graph.engine->getTensorDataType(t.name.c_str()) != want)
          throw engine_error(graph.entry["file"].get<std::string>() + ": input " + t.name + " is not " + t.dtype +
                             " in the engine; " + kRebuild + bundle_.root() + "`");
      }
      cuda_check(cudaStreamCreate(&graph.stream), "cudaStreamCreate");
    }
  }

  void run_impl(const std::string& name, const std::vector<HostTensor>& inputs,
                std::vector<HostTensor>& outputs) override {
    Graph& g = graphs_.at(name);
    std::lock_guard<std::mutex> lock(g.mutex);
    cuda_check(cudaSetDevice(options_.device_id), "cudaSetDevice");
    for (const Launch& l : plan_launches(name, g.entry, inputs, bundle_.config().tokens_per_image())) {
      std::vector<HostTensor> in, out;
      for (size_t i = 0; i < inputs.size(); ++i) in.push_back(rows_of(inputs[i], l.inputs[i]));
      for (const HostTensor& o : outputs) out.push_back(rows_of(o, l.output));
      launch(g, in, out);
    }
  }

  void close_impl() override {
    for (auto& [name, g] : graphs_)
      if (g.stream) cudaStreamDestroy(g.stream);
    graphs_.clear();
    runtime_.reset();
  }

 private:
  struct Graph {
    json entry;
    std::unique_ptr<nvinfer1::ICudaEngine, Destroy<nvinfer1::ICudaEngine>> engine;
    std::unique_ptr<nvinfer1::IExecutionContext, Destroy<nvinfer1::IExecutionContext>> context;
    std::vector<DeviceBuffer> buffers;
    std::mutex mutex;
    cudaStream_t stream = nullptr;
  };

  void address(Graph& g, const std::string& tensor, void* ptr) {
    if (!ptr || !g.context->setTensorAddress(tensor.c_str(), ptr))
      throw Error(VLF_ERR_BACKEND, g.entry["file"].get<std::string>() + ": TensorRT refused the device address of " +
                                       tensor);
  }

  void launch(Graph& g, const std::vector<HostTensor>& inputs, std::vector<HostTensor>& outputs) {
    const std::string file = g.entry["file"];
    g.buffers.resize(std::max(g.buffers.size(), inputs.size() + outputs.size()));
    for (size_t i = 0; i < inputs.size(); ++i) {
      const HostTensor& t = inputs[i];
      check_shape(g.entry, t.name, t.shape);
      g.buffers[i].reserve(t.bytes());
      if (t.bytes())
        cuda_check(cudaMemcpyAsync(g.buffers[i].ptr, t.data, t.bytes(), cudaMemcpyHostToDevice, g.stream), "copy in");
      nvinfer1::Dims dims{};
      dims.nbDims = static_cast<int32_t>(t.shape.size());
      for (size_t d = 0; d < t.shape.size(); ++d) dims.d[d] = t.shape[d];
      if (!g.context->setInputShape(t.name.c_str(), dims))
        throw Error(VLF_ERR_BACKEND, file + ": TensorRT refused the shape " + json(t.shape).dump() + " of input " +
                                         t.name);
      address(g, t.name, g.buffers[i].ptr);
    }
    for (size_t o = 0; o < outputs.size(); ++o) {
      const nvinfer1::Dims dims = g.context->getTensorShape(outputs[o].name.c_str());
      const std::vector<int64_t> shape(dims.d, dims.d + std::max<int32_t>(dims.nbDims, 0));
      if (dims.nbDims < 0 || shape != outputs[o].shape)
        throw Error(VLF_ERR_BACKEND, file + ": TensorRT reports output " + outputs[o].name + " of shape " +
                                         json(shape).dump() + ", the caller's buffer is " +
                                         json(outputs[o].shape).dump() + "; " + kRebuild + bundle_.root() + "`");
      DeviceBuffer& buf = g.buffers[inputs.size() + o];
      buf.reserve(outputs[o].bytes());
      address(g, outputs[o].name, buf.ptr);
    }
    if (!g.context->enqueueV3(g.stream)) throw Error(VLF_ERR_BACKEND, file + ": TensorRT execution failed");
    for (size_t o = 0; o < outputs.size(); ++o)
      if (outputs[o].bytes())
        cuda_check(cudaMemcpyAsync(outputs[o].data, g.buffers[inputs.size() + o].ptr, outputs[o].bytes(),
                                   cudaMemcpyDeviceToHost, g.stream),
                   "copy out");
    cuda_check(cudaStreamSynchronize(g.stream), "cudaStreamSynchronize");
  }

  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime, Destroy<nvinfer1::IRuntime>> runtime_;
  std::map<std::string, Graph> graphs_;
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
