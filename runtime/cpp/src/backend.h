// The runner interface every backend implements (Polygraphy-style, as Python's
// vlfront.runtime.backends.base): the base owns the public load / run / close
// and the checks of inputs against the manifest; a backend fills in *_impl.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bundle.h"

namespace vlfront::impl {

// A host tensor the caller owns; `data` holds the product of shape elements.
struct HostTensor {
  std::string name;
  std::string dtype;  // "uint8" | "int64" | "float32"
  std::vector<int64_t> shape;
  void* data = nullptr;
  size_t bytes() const;
};

struct RunnerOptions {
  std::string precision = "fp32";
  int threads = 0;  // 0: all cores
  int device_id = 0;
};

class Runner {
 public:
  static constexpr const char* kGraphs[2] = {"patch_embed", "fusion"};

  Runner(Bundle& bundle, RunnerOptions options);
  virtual ~Runner() = default;
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  virtual const char* name() const = 0;
  void load();
  // Runs one graph: inputs checked against the manifest's names, dtypes and
  // static dimensions; outputs written into caller-allocated `outputs`, whose
  // shapes the caller sets. Thread-safe once loaded.
  void run(const std::string& graph, const std::vector<HostTensor>& inputs, std::vector<HostTensor>& outputs);
  void close();
  const std::string& precision() const { return options_.precision; }

 protected:
  virtual void load_impl() = 0;
  virtual void run_impl(const std::string& graph, const std::vector<HostTensor>& inputs,
                        std::vector<HostTensor>& outputs) = 0;
  virtual void close_impl() {}
  Bundle& bundle_;
  RunnerOptions options_;
  std::map<std::string, GraphEntry> io_;

 private:
  bool loaded_ = false;
};

std::unique_ptr<Runner> make_onnxruntime_runner(Bundle& bundle, RunnerOptions options);
// nullptr when this build has no TensorRT backend (VLFRONT_WITH_TENSORRT=OFF).
std::unique_ptr<Runner> make_tensorrt_runner(Bundle& bundle, RunnerOptions options);
// "auto": TensorRT when built in and the bundle has engines for the precision, else ONNX Runtime.
std::unique_ptr<Runner> select_backend(Bundle& bundle, const std::string& backend, RunnerOptions options);
bool tensorrt_usable(const Bundle& bundle, const std::string& precision);

}  // namespace vlfront::impl
