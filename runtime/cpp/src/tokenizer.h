// Byte-level BPE over the Qwen ranks (SPEC §1.2), as tiktoken's
// encode_ordinary(NFC(text)): NFC, then the Qwen regex pre-split (PCRE2 with
// UTF, UCP and JIT), then rank-ordered merges inside each piece.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bpe_ranks.h"

namespace vlfront::impl {

// SPEC §1.2 constants.
inline constexpr int32_t kNumOrdinaryTokens = 151643;
inline constexpr int32_t kTokenizerSize = 151669;
inline constexpr int32_t kPadId = 151643;
inline constexpr int32_t kImStartId = 151644;
inline constexpr int32_t kImEndId = 151645;
inline constexpr int32_t kVisionStartId = 151652;
inline constexpr int32_t kVisionEndId = 151653;
inline constexpr int32_t kImagePadId = 151655;
extern const char* const kQwenPattern;
// The special tokens in id order, starting at kNumOrdinaryTokens.
const std::vector<std::string>& spec_special_tokens();

class Tokenizer {
 public:
  // Loads a Hugging Face tokenizer.json (byte-level BPE, vocab ids = ranks).
  // Raises Error(VLF_ERR_TOKENIZER) naming the file and what is wrong.
  static std::unique_ptr<Tokenizer> from_tokenizer_json(const std::string& path);
  // Loads tiktoken's ranks file (`<base64 bytes> <rank>` per line).
  static std::unique_ptr<Tokenizer> from_tiktoken(const std::string& path);
  // Dispatches on the suffix: ".json" -> tokenizer.json, otherwise tiktoken.
  static std::unique_ptr<Tokenizer> from_file(const std::string& path);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Appends the ids of ordinary text `utf8` to `out`: special-token strings in
  // the text stay ordinary text. Raises Error(VLF_ERR_REQUEST) for invalid UTF-8.
  // Thread-safe (per-thread match scratch).
  void encode(std::string_view utf8, std::vector<int32_t>& out) const;
  std::vector<int32_t> encode(std::string_view utf8) const {
    std::vector<int32_t> out;
    encode(utf8, out);
    return out;
  }
  // The first tokens of encode(utf8) with work bounded by `limit` (Python's
  // runtime/text_prefix.py, same rules, constants and messages). Appends to
  // `out` and returns true when they are all of encode(utf8); false when they
  // are encode(utf8)[:limit] and there are more. A text over `full_chars` code
  // points is encoded from a prefix cut where the Qwen split cannot move; with
  // no such cut within `max_gap` code points of where the kept tokens end it is
  // refused: Error(VLF_ERR_REQUEST). Other pre-split patterns: encoded in full.
  static constexpr size_t kFullChars = size_t{1} << 17;
  static constexpr size_t kMaxGap = size_t{1} << 16;
  bool encode_prefix(std::string_view utf8, size_t limit, std::vector<int32_t>& out,
                     size_t full_chars = kFullChars, size_t max_gap = kMaxGap) const;
  // The bytes of the given ids concatenated (specials as their strings).
  std::string decode(const int32_t* ids, size_t n) const;

  size_t vocab_size() const noexcept { return kTokenizerSize; }
  const std::string& pattern() const noexcept { return pattern_; }
  const BpeRanks& ranks() const noexcept { return ranks_; }
  // Empties this thread's cache of merged pieces (benchmarks measure cold caches).
  static void clear_thread_cache();

 private:
  Tokenizer(BpeRanks ranks, std::string pattern, std::string origin);
  static std::unique_ptr<Tokenizer> from_tokenizer_json_checked(const std::string& path);
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  // NFC text, already validated: the regex split and BPE.
  void encode_normalized(std::string_view text, std::vector<int32_t>& out) const;

  BpeRanks ranks_;
  std::string pattern_;
  std::string origin_;
  struct Regex;
  std::unique_ptr<Regex> regex_;
  uint64_t instance_id_;  // tells this tokenizer's entries in the per-thread piece cache apart
};

// Rewrites \s and \S into explicit Unicode White_Space classes, so PCRE2 (whose
// UCP \s also takes U+180E) agrees with tiktoken's Rust regex. Exposed for tests.
std::string translate_whitespace_classes(std::string_view pattern);

// The first exact cut c (in code points, start <= c < min(stop, n), c >= 1) of
// valid UTF-8 `text` of n code points, or npos; `byte` gets its byte offset.
// Rules: Python's runtime/text_prefix.py. Exposed for tests.
size_t first_cut(std::string_view text, size_t start, size_t stop, size_t* byte = nullptr);

}  // namespace vlfront::impl
