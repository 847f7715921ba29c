#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <pcre2.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base64.h"
#include "error.h"
#include "json_guard.h"
#include "unicode.h"

namespace vlfront::impl {

const char* const kQwenPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const std::vector<std::string>& spec_special_tokens() {
  static const std::vector<std::string> tokens = {
      "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
      "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
      "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
      "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
      "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>"};
  return tokens;
}

namespace {

// Unicode White_Space (what Rust's regex, and so tiktoken, means by \s).
constexpr const char* kWhiteSpace = R"(\t-\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

Error tok_error(const std::string& origin, const std::string& what) {
  return Error(VLF_ERR_TOKENIZER, "tokenizer " + origin + ": " + what);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw tok_error(path, "cannot be opened (missing or unreadable)");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// GPT-2 byte-level alphabet: the code point that stands for each byte.
std::vector<int> byte_level_alphabet() {
  std::vector<int> cp(256, -1);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    cp[b] = printable ? b : next++;
  }
  return cp;
}

// Decodes a byte-level vocab entry back to the raw bytes it stands for.
bool decode_byte_level(std::string_view s, const std::vector<int>& byte_of_cp, std::string& out) {
  out.clear();
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) {
      cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
      i += 2;
    } else {
      return false;  // the alphabet only uses code points below U+0800
    }
    if (cp >= byte_of_cp.size() || byte_of_cp[cp] < 0) return false;
    out.push_back(static_cast<char>(byte_of_cp[cp]));
  }
  return true;
}

void check_ranks(const BpeRanks& ranks, const std::string& origin) {
  if (ranks.size() != static_cast<size_t>(kNumOrdinaryTokens))
    throw tok_error(origin, "has " + std::to_string(ranks.size()) + " ordinary tokens, SPEC §1.2 needs " +
                                std::to_string(kNumOrdinaryTokens) + " (the Qwen ranks)");
  for (int b = 0; b < 256; ++b) {
    char c = static_cast<char>(b);
    if (ranks.find(std::string_view(&c, 1)) == BpeRanks::kNone)
      throw tok_error(origin, "lacks the single byte 0x" + std::to_string(b) + "; byte-level BPE needs all 256");
  }
}

// Finds the Split pre-tokenizer's regex anywhere inside `node`.
const nlohmann::json* find_split_regex(const nlohmann::json& node) {
  if (node.is_object()) {
    auto t = node.find("type");
    if (t != node.end() && *t == "Split") {
      auto p = node.find("pattern");
      if (p != node.end() && p->is_object() && p->contains("Regex") && (*p)["Regex"].is_string())
        return &(*p)["Regex"];
      // Python refuses such a file too (tokenizers cannot read it): never fall back to the Qwen regex
      throw Error(VLF_ERR_TOKENIZER, "pre_tokenizer Split needs a pattern {\"Regex\": string}");
    }
    for (const auto& [k, v] : node.items())
      if (const auto* r = find_split_regex(v)) return r;
  } else if (node.is_array()) {
    for (const auto& v : node)
      if (const auto* r = find_split_regex(v)) return r;
  }
  return nullptr;
}

// Per-thread PCRE2 scratch, independent of the pattern so that one serves all.
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, nullptr);
  MatchScratch() {
    if (!data || !context || !stack) throw Error(VLF_ERR_OUT_OF_MEMORY, "PCRE2 match scratch allocation failed");
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

// Per-thread, direct-mapped cache of merged pieces: text repeats its rare words
// (identifiers, names), and their merges are most of the tokenizer's time.
// Entries carry the tokenizer's instance id, so tokenizers never share results.
struct PieceCache {
  static constexpr size_t kSlots = 4096, kMaxPiece = 48;
  struct Entry {
    uint64_t owner = 0;
    uint32_t hash = 0;
    std::string piece;
    std::vector<int32_t> ids;
  };
  std::vector<Entry> slots = std::vector<Entry>(kSlots);
};

PieceCache& piece_cache() {
  thread_local PieceCache c;
  return c;
}

std::atomic<uint64_t> next_instance_id{1};

}  // namespace

std::string translate_whitespace_classes(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      char e = pattern[++i];
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
      } else if (e == 'S') {
        if (in_class) throw Error(VLF_ERR_TOKENIZER, "pre-split pattern uses \\S inside a character class (unsupported)");
        out += "[^" + std::string(kWhiteSpace) + "]";
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];  // literal ]
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

struct Tokenizer::Regex {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Regex() { pcre2_code_free(code); }
};

Tokenizer::Tokenizer(BpeRanks ranks, std::string pattern, std::string origin)
    : ranks_(std::move(ranks)),
      pattern_(std::move(pattern)),
      origin_(std::move(origin)),
      regex_(new Regex),
      instance_id_(next_instance_id++) {
  const std::string translated = translate_whitespace_classes(pattern_);
  int err = 0;
  PCRE2_SIZE offset = 0;
  regex_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                               PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &offset, nullptr);
  if (!regex_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw tok_error(origin_, "pre-split pattern does not compile at offset " + std::to_string(offset) + ": " +
                                 reinterpret_cast<char*>(msg));
  }
  regex_->jit = pcre2_jit_compile(regex_->code, PCRE2_JIT_COMPLETE) == 0;
}

Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::from_tokenizer_json(const std::string& path) {
  try {
    return from_tokenizer_json_checked(path);
  } catch (const nlohmann::json::exception& e) {  // a shape no check above foresaw: still our error
    throw tok_error(path, std::string("is malformed: ") + e.what());
  }
}

std::unique_ptr<Tokenizer> Tokenizer::from_tokenizer_json_checked(const std::string& path) {
  nlohmann::json doc;
  try {
    const std::string text = read_file(path);
    // Nothing below may recurse into a hostile value (dump() in messages): depth first.
    if (json_guard::depth_error_offset(text.data(), text.size()) != std::string::npos)
      throw tok_error(path, "JSON nested too deeply; not a tokenizer.json");
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw tok_error(path, std::string("is not valid JSON: ") + e.what());
  }
  const auto model = doc.find("model");
  if (model == doc.end() || !model->is_object() || model->value("type", "") != "BPE")
    throw tok_error(path, "has no byte-level BPE model (model.type must be \"BPE\")");
  const auto vocab = model->find("vocab");
  if (vocab == model->end() || !vocab->is_object()) throw tok_error(path, "has no model.vocab object");

  const std::vector<int> cp_of_byte = byte_level_alphabet();
  std::vector<int> byte_of_cp(512, -1);
  for (int b = 0; b < 256; ++b) byte_of_cp[cp_of_byte[b]] = b;

  BpeRanks ranks;
  std::string bytes;
  for (const auto& [token, id] : vocab->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= kNumOrdinaryTokens)
      throw tok_error(path, "vocab entry " + nlohmann::json(token).dump() + " has id " + id.dump() + " outside 0.." +
                                std::to_string(kNumOrdinaryTokens - 1));
    if (!decode_byte_level(token, byte_of_cp, bytes))
      throw tok_error(path, "vocab entry " + nlohmann::json(token).dump() + " is not byte-level encoded");
    if (!ranks.insert(bytes, static_cast<uint32_t>(id.get<int64_t>())))
      throw tok_error(path, "vocab has two entries for the bytes of " + nlohmann::json(token).dump());
  }
  check_ranks(ranks, path);
  for (int32_t r = 0; r < kNumOrdinaryTokens; ++r)
    if (ranks.bytes_of(static_cast<uint32_t>(r)).empty())
      throw tok_error(path, "vocab ids are not dense: id " + std::to_string(r) + " is missing");

  // Added tokens must be SPEC's specials, with SPEC's ids.
  const auto& specials = spec_special_tokens();
  if (auto added = doc.find("added_tokens"); added != doc.end() && !added->is_null()) {
    bool ok = added->is_array();
    for (size_t i = 0; ok && i < added->size(); ++i) {
      const auto& t = (*added)[i];
      ok = t.is_object() && t.contains("id") && t["id"].is_number_integer() && t.contains("content") &&
           t["content"].is_string();
    }
    if (!ok) throw tok_error(path, "added_tokens must be a list of {'id': int, 'content': str} objects");
    for (const auto& t : *added) {
      const int64_t id = t.value("id", int64_t{-1});
      const std::string content = t.value("content", std::string());
      const int64_t k = id - kNumOrdinaryTokens;
      if (k < 0 || k >= static_cast<int64_t>(specials.size()) || specials[static_cast<size_t>(k)] != content)
        throw tok_error(path, "added token " + nlohmann::json(content).dump() + " with id " + std::to_string(id) +
                                  " is not the SPEC §1.2 special token of that id");
    }
  }
  std::string pattern = kQwenPattern;
  if (auto pre = doc.find("pre_tokenizer"); pre != doc.end()) {
    try {
      if (const auto* rx = find_split_regex(*pre)) pattern = rx->get<std::string>();
    } catch (const Error& e) {
      throw tok_error(path, e.what());
    }
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(ranks), std::move(pattern), path));
}

std::unique_ptr<Tokenizer> Tokenizer::from_tiktoken(const std::string& path) {
  const std::string text = read_file(path);
  BpeRanks ranks;
  std::string bytes;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || !base64_decode(line.substr(0, space), bytes) || bytes.empty())
      throw tok_error(path, "line " + std::to_string(line_no) + " is not `<base64> <rank>`");
    const std::string rank_text(line.substr(space + 1));
    char* stop = nullptr;
    const long rank = std::strtol(rank_text.c_str(), &stop, 10);
    if (rank_text.empty() || *stop != '\0' || rank < 0 || rank >= kNumOrdinaryTokens)
      throw tok_error(path, "line " + std::to_string(line_no) + ": rank " + rank_text + " outside 0.." +
                                std::to_string(kNumOrdinaryTokens - 1));
    if (!ranks.insert(bytes, static_cast<uint32_t>(rank)))
      throw tok_error(path, "line " + std::to_string(line_no) + " repeats a token");
  }
  check_ranks(ranks, path);
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(ranks), kQwenPattern, path));
}

std::unique_ptr<Tokenizer> Tokenizer::from_file(const std::string& path) {
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) return from_tokenizer_json(path);
  return from_tiktoken(path);
}

void Tokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  const uint32_t whole = ranks_.find(piece);
  if (whole != BpeRanks::kNone) {
    out.push_back(static_cast<int32_t>(whole));
    return;
  }
  if (piece.size() > PieceCache::kMaxPiece) {
    if (piece.size() <= 96) bpe_merge_scan(ranks_, piece, out);  // quadratic: fastest for short pieces
    else bpe_merge_heap(ranks_, piece, out);
    return;
  }
  const uint32_t h = BpeRanks::hash(piece);
  PieceCache::Entry& e = piece_cache().slots[h & (PieceCache::kSlots - 1)];
  if (e.owner == instance_id_ && e.hash == h && e.piece == piece) {
    out.insert(out.end(), e.ids.begin(), e.ids.end());
    return;
  }
  const size_t start = out.size();
  bpe_merge_scan(ranks_, piece, out);
  e.owner = instance_id_;
  e.hash = h;
  e.piece.assign(piece.data(), piece.size());
  e.ids.assign(out.begin() + static_cast<long>(start), out.end());
}

void Tokenizer::clear_thread_cache() {
  for (auto& e : piece_cache().slots) e.owner = 0;
}

namespace {

std::string_view checked_nfc(std::string_view utf8, std::string& normalized) {
  if (utf8.size() > (size_t{1} << 30))
    throw Error(VLF_ERR_REQUEST, "text of " + std::to_string(utf8.size()) + " bytes exceeds the 1 GiB limit");
  const size_t bad = find_invalid_utf8(utf8);
  if (bad != std::string_view::npos)
    throw Error(VLF_ERR_REQUEST, "text is not valid UTF-8 at byte " + std::to_string(bad));
  return nfc_if_needed(utf8, normalized) ? std::string_view(normalized) : utf8;
}

// The code point at byte i of valid UTF-8, and its length.
uint32_t code_point(std::string_view s, size_t i, size_t* len) {
  const auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[i + k])); };
  const uint32_t c = b(0);
  if (c < 0x80) return *len = 1, c;
  if (c < 0xE0) return *len = 2, ((c & 0x1F) << 6) | (b(1) & 0x3F);
  if (c < 0xF0) return *len = 3, ((c & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
  return *len = 4, ((c & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
}

// The sets of runtime/text_prefix.py (supersets/subsets that hold in every Unicode table).
bool maybe_whitespace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         c == 0x180E || (c >= 0x2000 && c <= 0x200B) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

bool sure_letter(uint32_t c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= 0x4E00 && c <= 0x9FA5) ||
         (c >= 0x3041 && c <= 0x3094) || (c >= 0x30A1 && c <= 0x30FA) || (c >= 0xAC00 && c <= 0xD7A3);
}

bool sure_non_letter(uint32_t c) {
  return (c <= 0x7F && !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) || c == 0x3001 || c == 0x3002 ||
         c == 0xFF01 || c == 0xFF0C || c == 0xFF1A || c == 0xFF1B || c == 0xFF1F;
}

// Whether the Qwen split of any text with these two code points at c-1, c
// has a piece boundary at c that no continuation can move.
bool exact_cut(uint32_t a, uint32_t b) {
  return (a >= '0' && a <= '9') || ((b == ' ' || b == '\t') && !maybe_whitespace(a)) ||
         ((a == '\r' || a == '\n') && !maybe_whitespace(b)) || (sure_letter(a) && sure_non_letter(b));
}

size_t count_code_points(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

size_t first_cut(std::string_view text, size_t start, size_t stop, size_t* byte) {
  start = std::max<size_t>(start, 1);
  size_t ci = 0, bi = 0, len = 0;
  uint32_t prev = 0;
  while (bi < text.size() && ci < start) {  // to the code point at `start`, remembering the one before
    prev = code_point(text, bi, &len);
    bi += len;
    ++ci;
  }
  for (; bi < text.size() && ci < stop; ++ci) {
    const uint32_t cur = code_point(text, bi, &len);
    if (exact_cut(prev, cur)) {
      if (byte) *byte = bi;
      return ci;
    }
    prev = cur;
    bi += len;
  }
  return std::string_view::npos;
}

void Tokenizer::encode(std::string_view utf8, std::vector<int32_t>& out) const {
  std::string normalized;
  encode_normalized(checked_nfc(utf8, normalized), out);
}

bool Tokenizer::encode_prefix(std::string_view utf8, size_t limit, std::vector<int32_t>& out, size_t full_chars,
                              size_t max_gap) const {
  std::string normalized;
  const std::string_view text = checked_nfc(utf8, normalized);
  const size_t n = count_code_points(text);
  if (pattern_ != kQwenPattern || n <= full_chars) {
    encode_normalized(text, out);
    return true;
  }
  std::vector<int32_t> ids;
  auto keep = [&](bool all) {
    const bool complete = all && ids.size() <= limit;
    out.insert(out.end(), ids.begin(), complete ? ids.end() : ids.begin() + static_cast<long>(limit));
    return complete;
  };
  size_t target = std::max<size_t>(4 * (limit + 1), 64);
  while (target < n) {
    size_t byte = 0;
    const size_t c = first_cut(text, target, target + max_gap + 1, &byte);
    if (c == std::string_view::npos) {
      if (target + max_gap + 1 >= n) break;  // the rest is shorter than a gap: encode it all
      throw Error(VLF_ERR_REQUEST,
                  "text of " + std::to_string(n) + " characters has no place to cut it exactly in characters " +
                      std::to_string(target) + ".." + std::to_string(target + max_gap) +
                      " (a word, number, whitespace or punctuation run over " + std::to_string(max_gap) +
                      " characters), so its kept tokens cannot be found without tokenizing all of it: shorten the "
                      "text or split that run");
    }
    ids.clear();
    encode_normalized(text.substr(0, byte), ids);
    if (ids.size() > limit) return keep(false);
    target = 2 * c;
  }
  ids.clear();
  encode_normalized(text, ids);
  return keep(true);
}

void Tokenizer::encode_normalized(std::string_view text, std::vector<int32_t>& out) const {
  MatchScratch& s = scratch();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  PCRE2_SIZE start = 0;
  while (start < text.size()) {
    const int rc = regex_->jit ? pcre2_jit_match(regex_->code, subject, text.size(), start, 0, s.data, s.context)
                               : pcre2_match(regex_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, s.data, s.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw Error(VLF_ERR_INTERNAL, std::string("pre-split regex failed: ") + reinterpret_cast<char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
    if (ov[1] == ov[0]) {  // empty match: step over one code point
      start = ov[1] + 1;
      while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
      continue;
    }
    encode_piece(text.substr(ov[0], ov[1] - ov[0]), out);
    start = ov[1];
  }
}

std::string Tokenizer::decode(const int32_t* ids, size_t n) const {
  std::string out;
  const auto& specials = spec_special_tokens();
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = ids[i];
    if (id >= kNumOrdinaryTokens && id < kTokenizerSize)
      out += specials[static_cast<size_t>(id - kNumOrdinaryTokens)];
    else if (id >= 0 && id < kNumOrdinaryTokens)
      out += ranks_.bytes_of(static_cast<uint32_t>(id));
    else
      throw Error(VLF_ERR_INVALID_ARGUMENT, "token id " + std::to_string(id) + " outside 0.." + std::to_string(kTokenizerSize - 1));
  }
  return out;
}

}  // namespace vlfront::impl
