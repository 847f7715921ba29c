// The C++ TensorRT backend (src/backend_tensorrt.cc) compiled against stub headers with TensorRT 10.13's
// signatures (tests/trt_stub) and run against fake TensorRT and CUDA objects on the CPU. What this checks is
// ours: the engine lookup (an entry that outlives the manifest lookup), the version and compatibility checks,
// batches split to the profile, non-null addresses for empty tensors, every TensorRT call's result checked,
// and output shapes compared. It says nothing about TensorRT itself (docs/calibration.md: unverified).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <NvInfer.h>

#include "backend.h"  // make_tensorrt_runner / tensorrt_usable are renamed trt_stub_* for this test (CMake)
#include "bundle.h"
#include "error.h"
#include "tokenizer.h"

namespace fs = std::filesystem;
using nlohmann::json;
using vlfront::impl::Bundle;
using vlfront::impl::HostTensor;

namespace {

// --- fake CUDA: host memory ---------------------------------------------------------------------------------
std::set<void*> g_device;  // live cudaMalloc blocks
int g_library_version = 101303, g_library_build = 9;

// --- fake TensorRT ------------------------------------------------------------------------------------------
struct Fakes {
  int launches = 0;
  bool refuse_shape = false, wrong_output_shape = false;
  std::vector<int64_t> visual_rows_seen;  // visual_tokens rows of each fusion launch
} g;

constexpr int64_t kTpi = 196, kD = 64, kSeq = 1024, kSize = 224;

class FakeContext final : public nvinfer1::IExecutionContext {
 public:
  explicit FakeContext(bool patch) : patch_(patch) {}
  bool setInputShape(char const* name, nvinfer1::Dims const& dims) noexcept override {
    shapes_[name] = std::vector<int64_t>(dims.d, dims.d + dims.nbDims);
    return !g.refuse_shape;
  }
  nvinfer1::Dims getTensorShape(char const* name) const noexcept override {
    nvinfer1::Dims d{};
    d.nbDims = 3;
    const auto& in = shapes_.at(patch_ ? "pixel_values" : "input_ids");
    d.d[0] = in[0];
    d.d[1] = patch_ ? kTpi : kSeq;
    d.d[2] = kD + (g.wrong_output_shape ? 1 : 0);
    (void)name;
    return d;
  }
  bool setTensorAddress(char const* name, void* data) noexcept override {
    if (!data || !g_device.count(data)) return false;  // TensorRT refuses null (and we refuse non-device) memory
    addr_[name] = data;
    return true;
  }
  bool enqueueV3(cudaStream_t) noexcept override {
    ++g.launches;
    if (patch_) {  // visual_tokens[n, k, j] = first pixel of image n + k
      const auto n = shapes_["pixel_values"][0];
      auto* px = static_cast<const uint8_t*>(addr_["pixel_values"]);
      auto* out = static_cast<float*>(addr_["visual_tokens"]);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t k = 0; k < kTpi; ++k)
          for (int64_t j = 0; j < kD; ++j) out[(i * kTpi + k) * kD + j] = px[i * kSize * kSize * 3] + float(k);
      return true;
    }
    // fusion: the k-th pad of the launch takes visual row k, any other position its id
    const auto rows = shapes_["input_ids"][0];
    g.visual_rows_seen.push_back(shapes_["visual_tokens"][0]);
    auto* ids = static_cast<const int64_t*>(addr_["input_ids"]);
    auto* visual = static_cast<const float*>(addr_["visual_tokens"]);
    auto* out = static_cast<float*>(addr_["inputs_embeds"]);
    for (int64_t t = 0, pad = 0; t < rows * kSeq; ++t) {
      const bool is_pad = ids[t] == vlfront::impl::kImagePadId;
      for (int64_t j = 0; j < kD; ++j) out[t * kD + j] = is_pad ? visual[pad * kD + j] : float(ids[t]);
      pad += is_pad;
    }
    return true;
  }

 private:
  bool patch_;
  std::map<std::string, std::vector<int64_t>> shapes_;
  std::map<std::string, void*> addr_;
};

class FakeEngine final : public nvinfer1::ICudaEngine {
 public:
  explicit FakeEngine(bool patch) : patch_(patch) {}
  nvinfer1::Dims getTensorShape(char const*) const noexcept override { return nvinfer1::Dims{}; }
  nvinfer1::DataType getTensorDataType(char const* name) const noexcept override {
    const std::string n = name;
    return n == "pixel_values" ? nvinfer1::DataType::kUINT8
           : n == "input_ids"  ? nvinfer1::DataType::kINT64
                               : nvinfer1::DataType::kFLOAT;
  }
  nvinfer1::TensorIOMode getTensorIOMode(char const*) const noexcept override { return nvinfer1::TensorIOMode::kINPUT; }
  int32_t getNbIOTensors() const noexcept override { return 0; }
  char const* getIOTensorName(int32_t) const noexcept override { return ""; }
  nvinfer1::IExecutionContext* createExecutionContext(nvinfer1::ExecutionContextAllocationStrategy) noexcept override {
    return new FakeContext(patch_);
  }

 private:
  bool patch_;
};

class FakeRuntime final : public nvinfer1::IRuntime {
 public:
  nvinfer1::ICudaEngine* deserializeCudaEngine(void const* blob, std::size_t size) noexcept override {
    const std::string plan(static_cast<const char*>(blob), size);
    if (plan == "fake plan: patch_embed") return new FakeEngine(true);
    if (plan == "fake plan: fusion") return new FakeEngine(false);
    return nullptr;
  }
};

}  // namespace

namespace nvinfer1 {
IRuntime* createInferRuntime(ILogger&) noexcept { return new FakeRuntime(); }
}  // namespace nvinfer1
extern "C" int32_t getInferLibVersion() noexcept { return g_library_version; }
extern "C" int32_t getInferLibBuildVersion() noexcept { return g_library_build; }

extern "C" {
cudaError_t cudaGetDeviceCount(int* count) { return *count = 1, cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
  std::memset(prop, 0, sizeof *prop);
  std::strcpy(prop->name, "Tesla T4");
  prop->major = 7;
  prop->minor = 5;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::malloc(n);
  if (!*p) return cudaErrorMemoryAllocation;
  g_device.insert(*p);
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  g_device.erase(p);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return *s = reinterpret_cast<cudaStream_t>(new int(0)), cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s) { return delete reinterpret_cast<int*>(s), cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
const char* cudaGetErrorString(cudaError_t) { return "fake CUDA error"; }
}

namespace {

bool have_bundle() { return fs::exists(std::string(VLFRONT_TEST_BUNDLE) + "/manifest.json"); }
#define NEED_BUNDLE() \
  if (!have_bundle()) GTEST_SKIP() << "no tiny bundle at " VLFRONT_TEST_BUNDLE " (the export fixture did not run)"

// A copy of the tiny bundle with fake engines listed for fp32, profiles small enough to force splits.
fs::path bundle_with_engines(const std::string& name, const std::string& tensorrt = "10.13.3.9",
                             int64_t max_images = 3, int64_t max_rows = 2) {
  const fs::path root = fs::temp_directory_path() / ("vlfront_trt_stub_" + name);
  fs::remove_all(root);
  fs::copy(VLFRONT_TEST_BUNDLE, root, fs::copy_options::recursive);
  fs::create_directories(root / "engines");
  json m = json::parse(std::ifstream(root / "manifest.json"));
  const json profiles = {
      {"patch_embed", {{"pixel_values", {{"min", {1, kSize, kSize, 3}}, {"opt", {1, kSize, kSize, 3}},
                                         {"max", {max_images, kSize, kSize, 3}}}}}},
      {"fusion", {{"input_ids", {{"min", {1, kSeq}}, {"opt", {1, kSeq}}, {"max", {max_rows, kSeq}}}},
                  {"visual_tokens", {{"min", {0, kTpi, kD}}, {"opt", {1, kTpi, kD}}, {"max", {max_images, kTpi, kD}}}}}}};
  for (const std::string graph : {"patch_embed", "fusion"}) {
    const std::string plan = "engines/" + graph + ".plan", onnx = graph + ".onnx";
    std::ofstream(root / plan, std::ios::binary) << "fake plan: " << graph;
    m["files"][plan] = {{"sha256", vlfront::impl::sha256_file((root / plan).string())},
                        {"size", fs::file_size(root / plan)}};
    m["engines"][graph] = {{"file", plan}, {"graph", graph}, {"precision", "fp32"}, {"onnx", onnx},
                           {"onnx_sha256", m["files"][onnx]["sha256"]}, {"tensorrt", tensorrt}, {"gpu", "Tesla T4"},
                           {"compute_capability", "7.5"}, {"profile", profiles[graph]}, {"strongly_typed", true}};
  }
  std::ofstream(root / "manifest.json") << m.dump(2);
  return root;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const vlfront::impl::Error& e) {
    return e.what();
  }
  return "";
}

struct Loaded {
  Bundle bundle;
  std::unique_ptr<vlfront::impl::Runner> runner;
};

std::unique_ptr<Loaded> load(const fs::path& root) {
  auto l = std::make_unique<Loaded>(Loaded{Bundle::open(root.string()), nullptr});
  l->runner = vlfront::impl::trt_stub_make_tensorrt_runner(l->bundle, vlfront::impl::RunnerOptions{});
  l->runner->load();
  return l;
}

std::vector<float> run_patch_embed(vlfront::impl::Runner& r, std::vector<uint8_t>& px, int64_t n) {
  std::vector<float> out(n * kTpi * kD, -1.f);
  std::vector<HostTensor> in{{"pixel_values", "uint8", {n, kSize, kSize, 3}, px.data()}};
  std::vector<HostTensor> o{{"visual_tokens", "float32", {n, kTpi, kD}, out.data()}};
  r.run("patch_embed", in, o);
  return out;
}

// ids [rows, kSeq] with images_per_row[r] images of kTpi pads each; visual [sum, kTpi, kD] with row i = i.
void fusion_batch(const std::vector<int64_t>& images_per_row, std::vector<int64_t>& ids, std::vector<float>& visual) {
  const int64_t rows = images_per_row.size();
  ids.assign(rows * kSeq, 0);
  int64_t total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < kSeq; ++t) ids[r * kSeq + t] = 1000 + r * kSeq + t;
    for (int64_t k = 0; k < images_per_row[r]; ++k)
      for (int64_t t = 0; t < kTpi; ++t) ids[r * kSeq + 2 + k * (kTpi + 2) + t] = vlfront::impl::kImagePadId;
    total += images_per_row[r];
  }
  visual.resize(total * kTpi * kD);
  for (size_t i = 0; i < visual.size(); ++i) visual[i] = float(i / kD);  // visual row number
}

std::vector<float> run_fusion(vlfront::impl::Runner& r, std::vector<int64_t>& ids, std::vector<float>& visual) {
  const int64_t rows = ids.size() / kSeq, images = visual.size() / (kTpi * kD);
  std::vector<float> out(rows * kSeq * kD, -1.f);
  std::vector<HostTensor> in{{"input_ids", "int64", {rows, kSeq}, ids.data()},
                             {"visual_tokens", "float32", {images, kTpi, kD}, visual.data()}};
  std::vector<HostTensor> o{{"inputs_embeds", "float32", {rows, kSeq, kD}, out.data()}};
  r.run("fusion", in, o);
  return out;
}

TEST(TensorRTStub, UsableLoadsAndSplitsPatchEmbedToTheProfile) {
  NEED_BUNDLE();
  g = Fakes{};
  const fs::path root = bundle_with_engines("patch");
  {
    Bundle b = Bundle::open(root.string());
    EXPECT_TRUE(vlfront::impl::trt_stub_tensorrt_usable(b, "fp32"));
    EXPECT_FALSE(vlfront::impl::trt_stub_tensorrt_usable(b, "int8"));  // no such variant: never throws
  }
  auto l = load(root);
  std::vector<uint8_t> px(7 * kSize * kSize * 3);
  for (int64_t i = 0; i < 7; ++i) px[i * kSize * kSize * 3] = uint8_t(10 * i + 1);
  const auto out = run_patch_embed(*l->runner, px, 7);
  EXPECT_EQ(g.launches, 3);  // 3 + 3 + 1 images
  for (int64_t i = 0; i < 7; ++i)
    for (int64_t k : {int64_t{0}, kTpi - 1}) EXPECT_EQ(out[(i * kTpi + k) * kD + 5], float(10 * i + 1 + k)) << i;
}

TEST(TensorRTStub, FusionSplitsBetweenRequestsAndTextOnlyBatchesGetAnAddress) {
  NEED_BUNDLE();
  g = Fakes{};
  auto l = load(bundle_with_engines("fusion"));
  std::vector<int64_t> ids;
  std::vector<float> visual;
  fusion_batch({1, 2, 0, 3, 1}, ids, visual);
  const auto out = run_fusion(*l->runner, ids, visual);
  EXPECT_EQ(g.visual_rows_seen, (std::vector<int64_t>{3, 3, 1}));  // <= 2 requests and <= 3 images a launch
  int64_t pad = 0;
  for (int64_t t = 0; t < int64_t(ids.size()); ++t) {
    const float want = ids[t] == vlfront::impl::kImagePadId ? float(pad++) : float(ids[t]);
    ASSERT_EQ(out[t * kD + 3], want) << "position " << t;
  }
  fusion_batch({0, 0}, ids, visual);  // text only: visual_tokens has no rows, yet a valid address
  g.visual_rows_seen.clear();
  const auto text = run_fusion(*l->runner, ids, visual);
  EXPECT_EQ(g.visual_rows_seen, (std::vector<int64_t>{0}));
  EXPECT_EQ(text[5 * kD], float(ids[5]));
}

TEST(TensorRTStub, VersionAndCompatibilityRefusals) {
  NEED_BUNDLE();
  g = Fakes{};
  g_library_version = 101302;
  EXPECT_NE(error_of([] { load(bundle_with_engines("libversion")); })
                .find("the TensorRT library is 10.13.2.9 but vlfront was compiled against TensorRT 10.13.3.9"),
            std::string::npos);
  g_library_version = 101303;
  EXPECT_NE(error_of([] { load(bundle_with_engines("foreign", "10.13.3.8")); })
                .find("was built with TensorRT 10.13.3.8, this is TensorRT 10.13.3.9"),
            std::string::npos);
  EXPECT_EQ(error_of([] { load(bundle_with_engines("threepart", "10.13.3")); }), "");  // older entry, no build
}

TEST(TensorRTStub, RefusedCallsAndWrongOutputShapesAreErrors) {
  NEED_BUNDLE();
  g = Fakes{};
  auto l = load(bundle_with_engines("refusals"));
  std::vector<uint8_t> px(kSize * kSize * 3);
  g.refuse_shape = true;
  EXPECT_NE(error_of([&] { run_patch_embed(*l->runner, px, 1); }).find("refused the shape [1,224,224,3]"),
            std::string::npos);
  g.refuse_shape = false;
  g.wrong_output_shape = true;
  EXPECT_NE(error_of([&] { run_patch_embed(*l->runner, px, 1); }).find("reports output visual_tokens of shape"),
            std::string::npos);
  g.wrong_output_shape = false;
  EXPECT_EQ(error_of([&] { run_patch_embed(*l->runner, px, 1); }), "");
  std::vector<uint8_t> big(4 * kSize * kSize * 3);
  EXPECT_EQ(error_of([&] { run_patch_embed(*l->runner, big, 4); }), "");  // split, not refused
}

}  // namespace
