// ONNX Runtime backend through its C++ API (header-only over the C API).
// Session options mirror the Python backend: intra-op threads = `threads`
// (default all cores), inter-op 1 and sequential execution, ORT_ENABLE_ALL,
// memory arena on, spinning off (idle ORT threads sleep so decode threads keep
// their cores), log severity error. Only API functions that ORT_API_VERSION 21
// (Debian 13's libonnxruntime-dev 1.21 headers) declares are used.
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <thread>

#include "backend.h"
#include "error.h"

namespace vlfront::impl {

namespace {

ONNXTensorElementDataType ort_type(const std::string& dtype) {
  if (dtype == "uint8") return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  if (dtype == "int64") return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
  if (dtype == "float32") return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  if (dtype == "float16") return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  throw Error(VLF_ERR_INTERNAL, "unsupported dtype " + dtype);
}

std::string dtype_name(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    default: return "type " + std::to_string(static_cast<int>(t));
  }
}

std::string dims(const std::vector<int64_t>& shape) {
  std::string out;
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + (shape[i] < 0 ? "?" : std::to_string(shape[i]));
  return "[" + out + "]";
}

std::string name_list(std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", '" : "'") + names[i] + "'";
  return "[" + out + "]";
}

// The graph file's own inputs/outputs against its manifest entry, as Python's
// manifest_schema.check_graph_io (same order and message).
void check_io(const std::string& root, const std::string& graph, const std::string& precision,
              const GraphEntry& entry, Ort::Session& session) {
  Ort::AllocatorWithDefaultOptions alloc;
  for (int side = 0; side < 2; ++side) {
    const std::vector<TensorSpec>& declared = side == 0 ? entry.inputs : entry.outputs;
    const std::string what = side == 0 ? "inputs" : "outputs";
    const size_t n = side == 0 ? session.GetInputCount() : session.GetOutputCount();
    std::vector<std::string> names;
    std::vector<std::pair<std::string, std::vector<int64_t>>> got;
    for (size_t i = 0; i < n; ++i) {
      names.push_back(side == 0 ? session.GetInputNameAllocated(i, alloc).get()
                                : session.GetOutputNameAllocated(i, alloc).get());
      Ort::TypeInfo info = side == 0 ? session.GetInputTypeInfo(i) : session.GetOutputTypeInfo(i);
      auto tensor = info.GetTensorTypeAndShapeInfo();
      got.emplace_back(dtype_name(tensor.GetElementType()), tensor.GetShape());
    }
    std::vector<std::string> want_names;
    for (const auto& t : declared) want_names.push_back(t.name);
    if (name_list(names) != name_list(want_names))
      throw Error(VLF_ERR_BUNDLE, root + ": graph " + graph + " (" + precision + ") has " + what + " " +
                                      name_list(names) + ", the manifest lists " + name_list(want_names) +
                                      "; rebuild the bundle");
    for (size_t i = 0; i < n; ++i) {
      const TensorSpec& want = *std::find_if(declared.begin(), declared.end(),
                                             [&](const TensorSpec& t) { return t.name == names[i]; });
      const auto& [dtype, shape] = got[i];
      bool same = dtype == want.dtype && shape.size() == want.shape.size();
      for (size_t d = 0; same && d < shape.size(); ++d)
        same = shape[d] < 0 || want.shape[d] < 0 || shape[d] == want.shape[d];
      if (!same)
        throw Error(VLF_ERR_BUNDLE, root + ": graph " + graph + " (" + precision + ") " + what.substr(0, what.size() - 1) +
                                        " " + names[i] + " is " + dtype + " " + dims(shape) + ", the manifest says " +
                                        want.dtype + " " + dims(want.shape) +
                                        "; the manifest does not describe this graph (rebuild the bundle)");
    }
  }
}

Ort::Env& env() {
  static Ort::Env instance(ORT_LOGGING_LEVEL_ERROR, "vlfront");
  return instance;
}

class OnnxRuntimeRunner final : public Runner {
 public:
  using Runner::Runner;
  const char* name() const override { return "onnxruntime"; }

 protected:
  void load_impl() override {
    try {
      Ort::SessionOptions opts;
      int threads = options_.threads > 0 ? options_.threads : static_cast<int>(std::thread::hardware_concurrency());
      opts.SetIntraOpNumThreads(threads > 0 ? threads : 1);
      opts.SetInterOpNumThreads(1);
      opts.SetExecutionMode(ORT_SEQUENTIAL);
      opts.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
      opts.EnableCpuMemArena();
      opts.SetLogSeverityLevel(3);
      opts.AddConfigEntry("session.intra_op.allow_spinning", "0");
      for (const char* g : kGraphs) {
        const std::string path = bundle_.graph_path(g, options_.precision);
        try {
          sessions_.emplace(g, Ort::Session(env(), path.c_str(), opts));
        } catch (const Ort::Exception& e) {
          throw Error(VLF_ERR_BUNDLE, path + ": ONNX Runtime cannot load graph " + g + ": " + e.what() +
                                          "; rebuild the bundle");
        }
        check_io(bundle_.root(), g, options_.precision, bundle_.graph(g, options_.precision), sessions_.at(g));
      }
    } catch (const Ort::Exception& e) {
      throw Error(VLF_ERR_BACKEND, std::string("ONNX Runtime: ") + e.what());
    }
  }

  void run_impl(const std::string& graph, const std::vector<HostTensor>& inputs,
                std::vector<HostTensor>& outputs) override {
    static const Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    static int64_t dummy = 0;  // a valid address for zero-sized tensors
    auto wrap = [&](const HostTensor& t) {
      void* data = t.data ? t.data : &dummy;
      return Ort::Value::CreateTensor(cpu, data, t.bytes(), t.shape.data(), t.shape.size(), ort_type(t.dtype));
    };
    try {
      std::vector<Ort::Value> in, out;
      std::vector<const char*> in_names, out_names;
      for (const auto& t : inputs) in.push_back(wrap(t)), in_names.push_back(t.name.c_str());
      for (const auto& t : outputs) out.push_back(wrap(t)), out_names.push_back(t.name.c_str());
      sessions_.at(graph).Run(Ort::RunOptions{nullptr}, in_names.data(), in.data(), in.size(), out_names.data(),
                              out.data(), out.size());
    } catch (const Ort::Exception& e) {
      throw Error(VLF_ERR_BACKEND, "ONNX Runtime failed on graph " + graph + ": " + e.what());
    }
  }

  void close_impl() override { sessions_.clear(); }

 private:
  std::map<std::string, Ort::Session> sessions_;
};

}  // namespace

std::unique_ptr<Runner> make_onnxruntime_runner(Bundle& bundle, RunnerOptions options) {
  return std::make_unique<OnnxRuntimeRunner>(bundle, std::move(options));
}

}  // namespace vlfront::impl
