#include "bundle.h"

#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "error.h"

namespace vlfront::impl {

namespace {

using nlohmann::json;

Error bundle_error(const std::string& m) { return Error(VLF_ERR_BUNDLE, m); }

std::string read_all(const std::string& path, size_t limit) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw bundle_error(path + ": cannot be read");
  std::string out;
  char buf[1 << 16];
  while (f) {
    f.read(buf, sizeof buf);
    out.append(buf, static_cast<size_t>(f.gcount()));
    if (out.size() > limit) throw bundle_error(path + ": over the " + std::to_string(limit) + "-byte limit");
  }
  return out;
}

std::string real_path(const std::string& p) {
  char buf[PATH_MAX];
  if (!::realpath(p.c_str(), buf)) return {};
  return buf;
}

int64_t json_int(const json& v, const std::string& key) {
  if (!v.is_number_integer()) throw Error(VLF_ERR_CONFIG, key + "=" + v.dump() + ": must be an integer");
  return v.get<int64_t>();
}

std::vector<TensorSpec> tensor_specs(const json& list, const std::string& where) {
  std::vector<TensorSpec> out;
  if (!list.is_array()) throw bundle_error(where + " is not a list");
  for (const auto& t : list) {
    if (!t.is_object() || !t.contains("name") || !t.contains("dtype") || !t.contains("shape") ||
        !t["name"].is_string() || !t["dtype"].is_string() || !t["shape"].is_array())
      throw bundle_error(where + ": entry " + t.dump() + " needs name, dtype and shape");
    TensorSpec s{t["name"].get<std::string>(), t["dtype"].get<std::string>(), {}};
    for (const auto& d : t["shape"]) s.shape.push_back(d.is_number_integer() ? d.get<int64_t>() : -1);
    out.push_back(std::move(s));
  }
  return out;
}

// --- the manifest schema (docs/bundle.md): Python's runtime/manifest_schema.py, same order and messages ---

constexpr int kMaxJsonDepth = 64;

// Whether arrays/objects in JSON text nest deeper than kMaxJsonDepth (checked before parsing).
bool json_too_deep(const std::string& text) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return true;
    } else if (c == ']' || c == '}') --depth;
  }
  return false;
}

std::string json_kind(const json& v) {
  if (v.is_number_integer()) return "integer";
  if (v.is_number()) return "number";
  return v.type_name();
}

// Python's repr() of a short str (messages only).
std::string quoted(const std::string& s, size_t limit) {
  std::string cut = s.substr(0, limit);
  while (!cut.empty() && (static_cast<unsigned char>(cut.back()) & 0xC0) == 0x80) cut.pop_back();
  if (cut.size() < s.size() && !cut.empty() && static_cast<unsigned char>(cut.back()) >= 0xC0) cut.pop_back();
  return "'" + cut + "'";
}

struct SchemaCheck {
  std::string where;
  Error bad(const std::string& msg) const {
    return bundle_error(where + ": " + msg + "; rebuild the bundle with `vlfront export`");
  }

  void config_types(const json& cfg) const {
    static const std::vector<std::pair<const char*, const char*>> keys = {
        {"hidden_size", "integer"}, {"image_size", "integer"}, {"patch_size", "integer"}, {"vocab_rows", "integer"},
        {"max_seq_len", "integer"}, {"max_text_tokens", "integer"}, {"image_mean", "3 numbers"},
        {"image_std", "3 numbers"}, {"vision_pos", "string"}, {"seed", "integer"}, {"tokens_per_image", "integer"}};
    for (const auto& [key, kind] : keys) {
      const std::string k = key, kd = kind;
      if (!cfg.contains(k)) {
        if (k == "seed" || k == "tokens_per_image") continue;
        throw bad("config." + k + " is missing (a config lists every SPEC 1.1 key; none defaults)");
      }
      const json& v = cfg[k];
      bool ok;
      if (kd == "integer") ok = v.is_number_integer();
      else if (kd == "string") ok = v.is_string();
      else {
        ok = v.is_array() && v.size() == 3;
        for (size_t i = 0; ok && i < 3; ++i) ok = v[i].is_number();
      }
      if (!ok) {
        const std::string got = v.is_array() ? "an array of " + std::to_string(v.size()) : json_kind(v);
        const std::string article = kd == "integer" ? "an " : kd == "string" ? "a " : "";
        throw bad("config." + k + " must be " + article + kd + ", got " + got);
      }
    }
  }

  void io(const json& specs, const std::vector<std::pair<std::string, std::pair<std::string, std::vector<json>>>>& want,
          const std::string& at) const {
    bool ok = specs.is_array();
    for (size_t i = 0; ok && i < specs.size(); ++i) ok = specs[i].is_object();
    if (!ok) throw bad(at + " must be an array of {name, dtype, shape} objects");
    std::vector<std::string> names, wanted;
    for (const auto& t : specs)
      names.push_back(t.contains("name") && t["name"].is_string() ? t["name"].get<std::string>()
                                                                  : json_kind(t.contains("name") ? t["name"] : json()));
    for (const auto& w : want) wanted.push_back(w.first);
    std::vector<std::string> sorted_names = names;
    std::sort(sorted_names.begin(), sorted_names.end());
    std::sort(wanted.begin(), wanted.end());
    if (sorted_names != wanted) {
      std::string shown, serves;
      for (size_t i = 0; i < names.size() && i < 8; ++i) shown += (i ? ", " : "") + quoted(names[i], 40);
      for (size_t i = 0; i < wanted.size(); ++i) serves += (i ? ", " : "") + quoted(wanted[i], 40);
      throw bad(at + " names [" + shown + "], this vlfront serves [" + serves + "]");
    }
    for (const auto& t : specs) {
      const std::string name = t["name"].get<std::string>();
      const auto& w = std::find_if(want.begin(), want.end(), [&](const auto& x) { return x.first == name; })->second;
      const json dtype = t.contains("dtype") ? t["dtype"] : json();
      if (dtype != w.first) {
        const std::string shown = dtype.is_string() ? dtype.get<std::string>().substr(0, 20) : json_kind(dtype);
        throw bad(at + ": " + name + " has dtype " + shown + ", SPEC's is " + w.first);
      }
      const json got = t.contains("shape") ? t["shape"] : json();
      bool same = got.is_array() && got.size() == w.second.size();
      for (size_t i = 0; same && i < got.size(); ++i)
        same = w.second[i].is_string() ? got[i].is_string() : got[i].is_number_integer() && got[i] == w.second[i];
      if (!same) {
        std::string shown, expect;
        if (got.is_array() && got.size() <= 8) {
          for (size_t i = 0; i < got.size(); ++i)
            shown += (i ? ", " : "") + (got[i].is_number_integer() ? got[i].dump()
                                        : got[i].is_string()       ? quoted(got[i].get<std::string>(), 20)
                                                                   : json_kind(got[i]));
          shown = "[" + shown + "]";
        } else {
          shown = json_kind(got);
        }
        for (size_t i = 0; i < w.second.size(); ++i)
          expect += (i ? ", " : "") + (w.second[i].is_string() ? quoted(w.second[i].get<std::string>(), 20)
                                                               : w.second[i].dump());
        throw bad(at + ": " + name + " has shape " + shown + ", the config makes it [" + expect + "]");
      }
    }
  }

  void graphs(const json& gs, const ModelConfig& c) const {
    using Io = std::vector<std::pair<std::string, std::pair<std::string, std::vector<json>>>>;
    const json D = c.hidden_size, T = c.tokens_per_image(), S = c.max_seq_len, I = c.image_size;
    const Io pe_in = {{"pixel_values", {"uint8", {"N", I, I, 3}}}};
    const Io pe_out = {{"visual_tokens", {"float32", {"N", T, D}}}};
    const Io fu_in = {{"input_ids", {"int64", {"B", S}}}, {"visual_tokens", {"float32", {"N", T, D}}}};
    const Io fu_out = {{"inputs_embeds", {"float32", {"B", S, D}}}};
    for (const char* name : {"patch_embed", "fusion"})
      if (!gs.contains(name)) throw bad(std::string("graphs.") + name + " is missing");
    for (const auto& [name, variants] : gs.items()) {
      if (!variants.is_object()) throw bad("graphs." + name + " must be an object, got " + json_kind(variants));
      const bool served = name == "patch_embed" || name == "fusion";
      if (served && !variants.contains("fp32")) throw bad("graphs." + name + ".fp32 is missing");
      for (const auto& [precision, e] : variants.items()) {
        const std::string at = "graphs." + name + "." + precision;
        if (!e.is_object()) throw bad(at + " must be an object, got " + json_kind(e));
        if (!e.contains("file")) throw bad(at + ".file is missing");
        if (!e["file"].is_string()) throw bad(at + ".file must be a string, got " + json_kind(e["file"]));
        if (e.contains("external_data")) {
          bool ok = e["external_data"].is_array();
          for (size_t i = 0; ok && i < e["external_data"].size(); ++i) ok = e["external_data"][i].is_string();
          if (!ok) throw bad(at + ".external_data must be an array of strings");
        }
        if (!served) continue;
        const json none;
        io(e.contains("inputs") ? e["inputs"] : none, name == "fusion" ? fu_in : pe_in, at + ".inputs");
        io(e.contains("outputs") ? e["outputs"] : none, name == "fusion" ? fu_out : pe_out, at + ".outputs");
      }
    }
  }

  void file_entry(const std::string& rel, const json& entry) const {
    if (!entry.is_object())
      throw bad("files['" + rel + "'] must be an object with size and sha256, got " + json_kind(entry));
    const json size = entry.contains("size") ? entry["size"] : json();
    if (!size.is_number_integer() || (size.is_number_integer() && !size.is_number_unsigned() && size.get<int64_t>() < 0))
      throw bad("files['" + rel + "'].size must be a non-negative integer, got " + json_kind(size));
    const json sha = entry.contains("sha256") ? entry["sha256"] : json();
    bool hex = sha.is_string() && sha.get<std::string>().size() == 64;
    if (hex)
      for (char ch : sha.get<std::string>()) hex = hex && ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'));
    if (!hex) throw bad("files['" + rel + "'].sha256 must be 64 lowercase hex digits");
  }
};

}  // namespace

ModelConfig config_from_json(const json& d) {
  if (!d.is_object()) throw Error(VLF_ERR_CONFIG, "config is not an object");
  static const std::set<std::string> known = {"hidden_size", "image_size", "patch_size", "vocab_rows",
                                              "max_seq_len", "max_text_tokens", "image_mean", "image_std",
                                              "vision_pos", "seed", "tokens_per_image"};
  std::vector<std::string> unknown;
  for (const auto& [k, _] : d.items())
    if (!known.count(k)) unknown.push_back("'" + k + "'");
  if (!unknown.empty()) {
    std::string list;
    for (const auto& u : unknown) list += (list.empty() ? "" : ", ") + u;
    throw Error(VLF_ERR_CONFIG, "config has unknown keys [" + list + "]");
  }
  ModelConfig c;
  auto get = [&](const char* k, int64_t& field) {
    if (d.contains(k)) field = json_int(d[k], k);
  };
  get("hidden_size", c.hidden_size);
  get("image_size", c.image_size);
  get("patch_size", c.patch_size);
  get("vocab_rows", c.vocab_rows);
  get("max_seq_len", c.max_seq_len);
  get("max_text_tokens", c.max_text_tokens);
  for (const char* k : {"image_mean", "image_std"}) {
    if (!d.contains(k)) continue;
    const json& v = d[k];
    if (!v.is_array() || v.size() != 3) throw Error(VLF_ERR_CONFIG, "image_mean and image_std need 3 values each, std > 0");
    auto& dst = std::string(k) == "image_mean" ? c.image_mean : c.image_std;
    for (size_t i = 0; i < 3; ++i) {
      if (!v[i].is_number()) throw Error(VLF_ERR_CONFIG, std::string(k) + " holds a non-number " + v[i].dump());
      dst[i] = v[i].get<double>();
    }
  }
  if (d.contains("vision_pos")) {
    if (!d["vision_pos"].is_string()) throw Error(VLF_ERR_CONFIG, "vision_pos must be a string");
    c.vision_pos = d["vision_pos"].get<std::string>();
  }
  c.validate();
  if (d.contains("tokens_per_image") && json_int(d["tokens_per_image"], "tokens_per_image") != c.tokens_per_image())
    throw Error(VLF_ERR_CONFIG, "tokens_per_image=" + d["tokens_per_image"].dump() +
                                    " disagrees with image_size/patch_size");
  return c;
}

std::string safe_path(const std::string& root, const std::string& rel) {
  auto refuse = [&](const std::string& why) { return bundle_error(root + ": " + why); };
  const std::string shown = "'" + rel + "'";
  if (rel.empty() || rel[0] == '/' || rel[0] == '~' || rel.find('\\') != std::string::npos ||
      rel.find('\0') != std::string::npos)
    throw refuse("manifest path " + shown + " leaves the bundle directory; refusing it");
  std::stringstream parts(rel);
  std::string part;
  while (std::getline(parts, part, '/'))
    if (part == "..") throw refuse("manifest path " + shown + " leaves the bundle directory; refusing it");
  const std::string full = root + "/" + rel;
  struct stat st {};
  if (::lstat(full.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
    throw refuse(rel + " is a symbolic link; bundles hold plain files only");
  const std::string real_root = real_path(root);
  const std::string real = real_path(full);
  if (!real.empty() && !real_root.empty() && real.compare(0, real_root.size() + 1, real_root + "/") != 0)
    throw refuse(rel + " resolves outside the bundle directory; refusing it");
  return full;
}

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw bundle_error(path + ": cannot be read");
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    throw Error(VLF_ERR_INTERNAL, "SHA-256 unavailable");
  }
  std::vector<char> buf(8u << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (f.gcount() > 0) EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(f.gcount()));
  }
  unsigned char md[32];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) out += hex[md[i] >> 4], out += hex[md[i] & 15];
  return out;
}

Bundle::Bundle(Bundle&& o) noexcept
    : root_(std::move(o.root_)), manifest_(std::move(o.manifest_)), config_(std::move(o.config_)),
      graphs_(std::move(o.graphs_)), verified_(std::move(o.verified_)) {}

Bundle Bundle::open(const std::string& root_in) {
  std::string root = root_in;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  const std::string path = root + "/manifest.json";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    throw bundle_error(root + ": no manifest.json; build a bundle with `vlfront export --out " + root + "`");
  if (static_cast<size_t>(st.st_size) > kMaxManifestBytes)
    throw bundle_error(path + ": " + std::to_string(st.st_size) + " bytes exceeds the " +
                       std::to_string(kMaxManifestBytes) + "-byte limit");
  Bundle b;
  b.root_ = root;
  try {
    const std::string text = read_all(path, kMaxManifestBytes);
    if (json_too_deep(text))
      throw bundle_error(path + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) +
                         " levels; not a vlfront manifest (rebuild the bundle)");
    b.manifest_ = json::parse(text);
  } catch (const json::exception& e) {
    throw bundle_error(path + ": not valid JSON (" + e.what() + "); rebuild the bundle");
  }
  const json& m = b.manifest_;
  if (!m.is_object() || !m.contains("format") || m["format"] != "vlfront-bundle")
    throw bundle_error(path + ": not a vlfront bundle manifest (format != 'vlfront-bundle')");
  const json version = m.contains("schema_version") ? m["schema_version"] : json();
  if (!version.is_number_integer() || version.get<int64_t>() != kSchemaVersion)
    throw bundle_error(path + ": schema_version " + (version.is_null() ? std::string("None") : version.dump()) +
                       ", this vlfront reads " + std::to_string(kSchemaVersion) +
                       "; rebuild the bundle with this vlfront (`vlfront export`) or upgrade vlfront");
  const SchemaCheck schema{path};
  for (const char* key : {"config", "files", "graphs", "special_ids", "tokenizer"}) {
    if (!m.contains(key)) throw bundle_error(path + ": manifest lacks the '" + key + "' section");
    if (!m[key].is_object()) throw schema.bad(std::string("'") + key + "' must be an object, got " + json_kind(m[key]));
  }
  for (const char* key : {"calibration", "engines"})
    if (m.contains(key) && !m[key].is_object())
      throw schema.bad(std::string("'") + key + "' must be an object, got " + json_kind(m[key]));
  schema.config_types(m["config"]);
  try {
    b.config_ = config_from_json(m["config"]);
  } catch (const Error& e) {
    throw bundle_error(path + ": invalid config: " + e.what());
  }
  if (!m["tokenizer"].contains("file")) throw schema.bad("tokenizer.file is missing");
  if (!m["tokenizer"]["file"].is_string())
    throw schema.bad("tokenizer.file must be a string, got " + json_kind(m["tokenizer"]["file"]));
  schema.graphs(m["graphs"], b.config_);
  const json spec_ids = {{"pad", kPadId}, {"im_start", kImStartId}, {"im_end", kImEndId},
                         {"vision_start", kVisionStartId}, {"vision_end", kVisionEndId}, {"image_pad", kImagePadId}};
  if (m["special_ids"] != spec_ids)
    throw bundle_error(path + ": special_ids " + m["special_ids"].dump() + " differ from the SPEC's " + spec_ids.dump());
  for (const auto& [rel, entry] : m["files"].items()) {
    safe_path(root, rel);
    schema.file_entry(rel, entry);
  }
  for (const auto& [name, variants] : m["graphs"].items()) {
    if (!variants.is_object()) continue;
    for (const auto& [precision, e] : variants.items()) {
      if (!e.is_object() || !e.contains("file") || !e["file"].is_string()) continue;
      const std::string where = path + ": graphs." + name + "." + precision;
      GraphEntry g;
      g.file = e["file"].get<std::string>();
      if (e.contains("external_data") && e["external_data"].is_array())
        for (const auto& x : e["external_data"])
          if (x.is_string()) g.external_data.push_back(x.get<std::string>());
      g.inputs = tensor_specs(e.value("inputs", json::array()), where + ".inputs");
      g.outputs = tensor_specs(e.value("outputs", json::array()), where + ".outputs");
      b.graphs_[name][precision] = std::move(g);
    }
  }
  return b;
}

std::string Bundle::path(const std::string& rel) {
  const json& files = manifest_["files"];
  if (!files.contains(rel) || !files[rel].is_object())
    throw bundle_error(root_ + ": " + rel + " is not listed in the manifest; rebuild the bundle");
  const std::string full = safe_path(root_, rel);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (verified_.count(rel)) return full;
  }
  const json& entry = files[rel];
  struct stat st {};
  if (::stat(full.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    throw bundle_error(root_ + ": " + rel + " is missing; rebuild the bundle with `vlfront export`");
  if (!entry["size"].is_number_integer() || entry["size"].get<int64_t>() != static_cast<int64_t>(st.st_size))
    throw bundle_error(root_ + ": " + rel + " has " + std::to_string(st.st_size) + " bytes, the manifest lists " +
                       entry["size"].dump() + ": the file was changed or truncated; rebuild the bundle");
  const std::string digest = sha256_file(full);
  const std::string want = entry["sha256"].is_string() ? entry["sha256"].get<std::string>() : entry["sha256"].dump();
  if (digest != want)
    throw bundle_error(root_ + ": " + rel + " sha256 " + digest.substr(0, 16) + "\u2026 differs from the manifest's " +
                       want.substr(0, 16) + "\u2026: the file was tampered with; rebuild the bundle");
  std::lock_guard<std::mutex> lock(mutex_);
  verified_.insert(rel);
  return full;
}

const GraphEntry& Bundle::graph(const std::string& name, const std::string& precision) const {
  auto it = graphs_.find(name);
  if ((name != "patch_embed" && name != "fusion") || it == graphs_.end())
    throw bundle_error(root_ + ": graph '" + name + "' is not in the manifest; rebuild the bundle");
  auto v = it->second.find(precision);
  if (v == it->second.end()) {
    std::string have;
    for (const auto& [p, _] : it->second) have += (have.empty() ? "'" : ", '") + p + "'";
    const std::string hint = (precision == "int8" || precision == "fp16") ? "run `vlfront calibrate --bundle DIR`"
                                                                          : "rebuild the bundle";
    throw bundle_error(root_ + ": graph " + name + " has no " + precision + " variant (has [" + have + "]); " + hint);
  }
  return v->second;
}

std::string Bundle::graph_path(const std::string& name, const std::string& precision) {
  const GraphEntry& g = graph(name, precision);
  for (const auto& rel : g.external_data) path(rel);
  const std::string full = path(g.file);
  const std::string bytes = read_all(full, SIZE_MAX);
  const json& files = manifest_["files"];
  std::vector<ExternalRef> refs;
  try {
    refs = onnx_external_data(bytes);
  } catch (const Error& e) {
    throw bundle_error(root_ + ": " + g.file + ": " + e.what() + "; rebuild the bundle");
  }
  for (const ExternalRef& ref : refs) {
    // Locations are relative to the graph's directory: the bundle root here.
    std::string rel = ref.location;
    while (rel.rfind("./", 0) == 0) rel = rel.substr(2);
    if (!files.contains(rel))
      throw bundle_error(root_ + ": " + g.file + ": tensor " + ref.tensor + " keeps its data in '" + ref.location +
                         "', a file the manifest does not list; refusing the graph (rebuild the bundle)");
    path(rel);  // inside the bundle, size and sha256 checked
    const int64_t size = files[rel]["size"].get<int64_t>();
    if (ref.offset < 0 || ref.offset > size || (ref.length >= 0 && ref.length > size - ref.offset))
      throw bundle_error(root_ + ": " + g.file + ": tensor " + ref.tensor + " points at bytes " +
                         std::to_string(ref.offset) + "+" + std::to_string(ref.length) + " of " + rel + ", which has " +
                         std::to_string(size) + "; rebuild the bundle");
  }
  return full;
}

}  // namespace vlfront::impl
