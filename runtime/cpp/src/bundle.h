// Open and validate a bundle (docs/bundle.md), with the same rules and
// messages as Python's vlfront.runtime.bundle: nothing is served until the
// manifest parses, its config and special ids match the SPEC, and every file
// used has the listed size and sha256 and lies inside the bundle directory.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "processor.h"

namespace vlfront::impl {

struct TensorSpec {
  std::string name;
  std::string dtype;           // "uint8" | "int64" | "float32" | "float16"
  std::vector<int64_t> shape;  // -1 for a named (dynamic) dimension
};

struct GraphEntry {
  std::string file;
  std::vector<std::string> external_data;
  std::vector<TensorSpec> inputs, outputs;
};

class Bundle {
 public:
  static constexpr int kSchemaVersion = 1;
  static constexpr size_t kMaxManifestBytes = 16u << 20;

  // Reads and checks manifest.json (rules 1-3; files are checked by path()).
  // Raises Error(VLF_ERR_BUNDLE) naming the file, the value and the fix.
  static Bundle open(const std::string& root);

  // The verified path of a listed file (size + sha256 checked once; rule 4).
  // Thread-safe.
  std::string path(const std::string& rel);
  // The manifest entry of a graph variant, or Error saying how to get it.
  const GraphEntry& graph(const std::string& name, const std::string& precision) const;
  // The verified graph file, its external-data files verified too, and every
  // external-data location inside the graph checked against the manifest (rule 5).
  std::string graph_path(const std::string& name, const std::string& precision);

  const std::string& root() const { return root_; }
  const ModelConfig& config() const { return config_; }
  const nlohmann::json& manifest() const { return manifest_; }

  Bundle(Bundle&& other) noexcept;
  Bundle(const Bundle&) = delete;

 private:
  Bundle() = default;
  std::string root_;
  nlohmann::json manifest_;
  ModelConfig config_;
  std::map<std::string, std::map<std::string, GraphEntry>> graphs_;
  std::mutex mutex_;
  std::set<std::string> verified_;
};

// safe_path of Python: `rel` resolved inside `root`, refusing absolute paths,
// `..`, backslashes, `~`, symlinks and escapes. Raises Error(VLF_ERR_BUNDLE).
std::string safe_path(const std::string& root, const std::string& rel);

// Lowercase hex sha256 of a file. Raises Error(VLF_ERR_BUNDLE) if unreadable.
std::string sha256_file(const std::string& path);

// Every `location` of ONNX external data in a serialized ModelProto
// (initializers, Constant attributes, subgraphs, functions). Raises
// Error(VLF_ERR_BUNDLE) on a malformed file. Exposed for tests.
struct ExternalRef {
  std::string tensor, location;
  int64_t offset = 0, length = -1;
};
std::vector<ExternalRef> onnx_external_data(const std::string& model_bytes);

ModelConfig config_from_json(const nlohmann::json& config);

}  // namespace vlfront::impl
