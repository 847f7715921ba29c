// Stub of TensorRT 10.13's NvInfer.h: only the declarations runtime/cpp/src/backend_tensorrt.cc uses, with the
// signatures of NVIDIA's public headers at tag v10.13.3 (include/NvInferRuntimeBase.h: DataType, TensorIOMode,
// Dims64, getInferLibVersion; include/NvInferRuntime.h: ILogger, IRuntime, ICudaEngine, IExecutionContext,
// createInferRuntime, getInferLibBuildVersion; include/NvInferVersion.h: the version macros).
//
// The real classes forward non-virtual inline methods to an implementation object; here the methods are
// virtual so that a test (test_tensorrt_stub.cc) can supply fakes and run the backend's logic on the CPU.
// Compiling the backend against this file checks names, parameter and return types; it proves nothing about
// TensorRT's behaviour.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda_runtime_api.h"

#define NV_TENSORRT_MAJOR 10
#define NV_TENSORRT_MINOR 13
#define NV_TENSORRT_PATCH 3
#define NV_TENSORRT_BUILD 9

namespace nvinfer1 {

using AsciiChar = char;

enum class DataType : int32_t {
  kFLOAT = 0, kHALF = 1, kINT8 = 2, kINT32 = 3, kBOOL = 4, kUINT8 = 5, kFP8 = 6, kBF16 = 7, kINT64 = 8, kINT4 = 9
};

enum class TensorIOMode : int32_t { kNONE = 0, kINPUT = 1, kOUTPUT = 2 };

class Dims64 {
 public:
  static constexpr int32_t MAX_DIMS{8};
  int32_t nbDims;
  int64_t d[MAX_DIMS];
};
using Dims = Dims64;

class ILogger {
 public:
  enum class Severity : int32_t { kINTERNAL_ERROR = 0, kERROR = 1, kWARNING = 2, kINFO = 3, kVERBOSE = 4 };
  virtual void log(Severity severity, AsciiChar const* msg) noexcept = 0;
  ILogger() = default;
  virtual ~ILogger() = default;

 protected:
  ILogger(ILogger const&) = default;
  ILogger(ILogger&&) = default;
  ILogger& operator=(ILogger const&) & = default;
  ILogger& operator=(ILogger&&) & = default;
};

enum class ExecutionContextAllocationStrategy : int32_t { kSTATIC = 0, kON_PROFILE_CHANGE = 1, kUSER_MANAGED = 2 };

class IExecutionContext {
 public:
  virtual ~IExecutionContext() noexcept = default;
  virtual bool setInputShape(char const* tensorName, Dims const& dims) noexcept = 0;
  virtual Dims getTensorShape(char const* tensorName) const noexcept = 0;
  virtual bool setTensorAddress(char const* tensorName, void* data) noexcept = 0;
  virtual bool enqueueV3(cudaStream_t stream) noexcept = 0;
};

class ICudaEngine {
 public:
  virtual ~ICudaEngine() noexcept = default;
  virtual Dims getTensorShape(char const* tensorName) const noexcept = 0;
  virtual DataType getTensorDataType(char const* tensorName) const noexcept = 0;
  virtual TensorIOMode getTensorIOMode(char const* tensorName) const noexcept = 0;
  virtual int32_t getNbIOTensors() const noexcept = 0;
  virtual char const* getIOTensorName(int32_t index) const noexcept = 0;
  virtual IExecutionContext* createExecutionContext(
      ExecutionContextAllocationStrategy strategy = ExecutionContextAllocationStrategy::kSTATIC) noexcept = 0;
};

class IRuntime {
 public:
  virtual ~IRuntime() noexcept = default;
  virtual ICudaEngine* deserializeCudaEngine(void const* blob, std::size_t size) noexcept = 0;
};

// Inline over createInferRuntime_INTERNAL in the real header; a plain declaration here.
IRuntime* createInferRuntime(ILogger& logger) noexcept;

}  // namespace nvinfer1

//! (MAJOR * 100 + MINOR) * 100 + PATCH
extern "C" int32_t getInferLibVersion() noexcept;
extern "C" int32_t getInferLibBuildVersion() noexcept;
