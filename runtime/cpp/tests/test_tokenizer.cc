#include <gtest/gtest.h>

#include <fstream>
#include <atomic>
#include <random>
#include <thread>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "error.h"
#include "tokenizer.h"
#include "unicode.h"

namespace vlfront::impl {
namespace {

bool exists(const std::string& p) { return std::ifstream(p).good(); }

const Tokenizer* ranks_tokenizer() {
  static std::unique_ptr<Tokenizer> tok =
      exists(VLFRONT_TEST_RANKS) ? Tokenizer::from_tiktoken(VLFRONT_TEST_RANKS) : nullptr;
  return tok.get();
}

#define NEED_TOKENIZER()                                                                   \
  const Tokenizer* tok = ranks_tokenizer();                                               \
  if (!tok) GTEST_SKIP() << "no Qwen ranks at " VLFRONT_TEST_RANKS " (run `make setup`)"

TEST(Utf8, AcceptsValidRejectsInvalid) {
  EXPECT_EQ(find_invalid_utf8("hello"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("h\xC3\xA9llo \xE4\xB8\xAD \xF0\x9F\x98\x80"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("ab\xC3"), 2u);              // truncated
  EXPECT_EQ(find_invalid_utf8("\xC0\x80"), 0u);            // overlong NUL
  EXPECT_EQ(find_invalid_utf8("xx\xED\xA0\x80"), 2u);      // surrogate
  EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);    // > U+10FFFF
  EXPECT_EQ(find_invalid_utf8("12345678\xFF"), 8u);        // after the 8-byte fast path
}

TEST(Nfc, ComposesLikePython) {
  std::string out;
  EXPECT_FALSE(nfc_if_needed("plain ascii", out));
  EXPECT_FALSE(nfc_if_needed("caf\xC3\xA9", out));  // already composed
  ASSERT_TRUE(nfc_if_needed("cafe\xCC\x81", out));  // e + COMBINING ACUTE
  EXPECT_EQ(out, "caf\xC3\xA9");
  ASSERT_TRUE(nfc_if_needed("\xE2\x84\xAB", out));  // ANGSTROM SIGN -> A WITH RING
  EXPECT_EQ(out, "\xC3\x85");
}

TEST(Pattern, WhitespaceClassesAreExplicit) {
  const std::string t = translate_whitespace_classes(R"(a\s+(?!\S)|[^\s\p{L}]|\\s)");
  EXPECT_NE(t.find("[^\\t-\\r"), std::string::npos);            // \S outside a class
  EXPECT_NE(t.find("[^\\t-\\r\\x{20}"), std::string::npos);     // \s inside [^...]
  EXPECT_NE(t.find("\\\\s"), std::string::npos);                // an escaped backslash stays
  EXPECT_THROW(translate_whitespace_classes(R"([\S])"), Error);
}

TEST(Tokenizer, KnownIds) {
  NEED_TOKENIZER();
  // tiktoken.Encoding(qwen ranks).encode_ordinary(...) values.
  EXPECT_EQ(tok->encode("Hello world"), (std::vector<int32_t>{9707, 1879}));
  EXPECT_EQ(tok->encode("user\n"), (std::vector<int32_t>{872, 198}));
  EXPECT_EQ(tok->encode(""), std::vector<int32_t>{});
}

TEST(Tokenizer, SpecialStringsStayOrdinaryText) {
  NEED_TOKENIZER();
  const auto ids = tok->encode("<|image_pad|><|im_start|>");
  for (int32_t id : ids) EXPECT_LT(id, kNumOrdinaryTokens);
  const std::string back = tok->decode(ids.data(), ids.size());
  EXPECT_EQ(back, "<|image_pad|><|im_start|>");
}

TEST(Tokenizer, RoundTripsRandomUnicode) {
  NEED_TOKENIZER();
  std::mt19937 rng(1234);
  const char32_t pools[] = {U'a', U'Z', U' ', U'\n', U'\t', U'1', U'\u00e9', U'\u4e2d', U'\U0001F600', U'\'',
                            U'\u0301', U'\u3000', U'\u00a0', U'\u180e', U'!', U'\r', U'\u0410'};
  for (int round = 0; round < 300; ++round) {
    std::u32string s;
    const int len = static_cast<int>(rng() % 40);
    for (int i = 0; i < len; ++i) s += pools[rng() % (sizeof pools / sizeof pools[0])];
    std::string utf8;
    for (char32_t c : s) {
      if (c < 0x80) utf8 += static_cast<char>(c);
      else if (c < 0x800) utf8 += {static_cast<char>(0xC0 | (c >> 6)), static_cast<char>(0x80 | (c & 0x3F))};
      else if (c < 0x10000)
        utf8 += {static_cast<char>(0xE0 | (c >> 12)), static_cast<char>(0x80 | ((c >> 6) & 0x3F)),
                 static_cast<char>(0x80 | (c & 0x3F))};
      else
        utf8 += {static_cast<char>(0xF0 | (c >> 18)), static_cast<char>(0x80 | ((c >> 12) & 0x3F)),
                 static_cast<char>(0x80 | ((c >> 6) & 0x3F)), static_cast<char>(0x80 | (c & 0x3F))};
    }
    std::string nfc;
    const std::string expect = nfc_if_needed(utf8, nfc) ? nfc : utf8;
    const auto ids = tok->encode(utf8);
    EXPECT_EQ(tok->decode(ids.data(), ids.size()), expect);
  }
}

TEST(Tokenizer, HeapAndScanMergeAlike) {
  NEED_TOKENIZER();
  // Pieces the regex would never produce, to exercise ties and long merges.
  std::mt19937 rng(7);
  const std::string alphabet = "aeinrst ETAO\xC3\xA9-_=\n";
  for (int round = 0; round < 300; ++round) {
    std::string piece;
    const size_t n = 1 + rng() % 300;
    const size_t k = 1 + rng() % alphabet.size();  // small alphabets give many equal-rank ties
    for (size_t i = 0; i < n; ++i) piece += alphabet[rng() % k];
    std::vector<int32_t> scan, heap;
    bpe_merge_scan(tok->ranks(), piece, scan);
    bpe_merge_heap(tok->ranks(), piece, heap);
    ASSERT_EQ(scan, heap) << piece;
  }
}

TEST(Tokenizer, RejectsInvalidUtf8) {
  NEED_TOKENIZER();
  try {
    tok->encode("ok \xFF bad");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), VLF_ERR_REQUEST);
    EXPECT_NE(std::string(e.what()).find("byte 3"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, MissingFileIsATokenizerError) {
  try {
    Tokenizer::from_file("/nonexistent/qwen.tiktoken");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), VLF_ERR_TOKENIZER);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/qwen.tiktoken"), std::string::npos);
  }
}

TEST(Tokenizer, CorruptRanksAreRefused) {
  const std::string path = ::testing::TempDir() + "/bad.tiktoken";
  std::ofstream(path) << "IQ== 0\nnot-base64! 1\n";
  try {
    Tokenizer::from_tiktoken(path);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), VLF_ERR_TOKENIZER);
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, TokenizerJsonMatchesRanks) {
  NEED_TOKENIZER();
  if (!exists(VLFRONT_TEST_TOKENIZER_JSON)) GTEST_SKIP() << "no " VLFRONT_TEST_TOKENIZER_JSON;
  auto tj = Tokenizer::from_tokenizer_json(VLFRONT_TEST_TOKENIZER_JSON);
  for (const char* s : {"Hello world", "  leading spaces\n\n\ttabs", "caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 123456",
                        "it's WE'LL they'RE"})
    EXPECT_EQ(tj->encode(s), tok->encode(s)) << s;
}

}  // namespace
}  // namespace vlfront::impl

namespace vlfront::impl {
namespace {

TEST(Tokenizer, ThreadsAgreeAndPieceCacheIsExact) {
  NEED_TOKENIZER();
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i)
    texts.push_back("identifier_" + std::to_string(i % 17) + " calls xyzzyPlugh" + std::to_string(i % 5) +
                    " \xE4\xB8\xAD\xE6\x96\x87 " + std::string(static_cast<size_t>(i % 60), 'q'));
  std::vector<std::vector<int32_t>> want;
  Tokenizer::clear_thread_cache();
  for (const auto& t : texts) want.push_back(tok->encode(t));  // cold, then warm below
  std::vector<std::thread> threads;
  std::atomic<int> same{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int round = 0; round < 3; ++round)
        for (size_t i = 0; i < texts.size(); ++i) same += tok->encode(texts[i]) == want[i];
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(same.load(), 4 * 3 * static_cast<int>(texts.size()));
  for (size_t i = 0; i < texts.size(); ++i) {  // without any cache: the merge loop itself
    Tokenizer::clear_thread_cache();
    EXPECT_EQ(tok->encode(texts[i]), want[i]);
  }
}

// Tokenizer::encode_prefix (docs/runtime.md): the exact cuts, and the prefix equal to the
// full encoding truncated, on texts made to defeat it (cuts forced every few characters).
TEST(TokenizerPrefix, CutRules) {
  EXPECT_EQ(first_cut("abc1def", 1, 100), 3u);        // a letter, then a sure non-letter
  EXPECT_EQ(first_cut("!1!", 1, 100), 2u);            // after a digit
  EXPECT_EQ(first_cut("ab cd", 1, 100), 2u);          // before a space, after a non-space
  EXPECT_EQ(first_cut("a  b", 2, 100), std::string_view::npos);  // not after whitespace
  EXPECT_EQ(first_cut("x\ny", 2, 100), 2u);           // after LF, before a non-space
  EXPECT_EQ(first_cut("x\n y", 2, 3), std::string_view::npos);
  EXPECT_EQ(first_cut("ab!", 1, 100), 2u);            // letter, then a sure non-letter
  EXPECT_EQ(first_cut("!!!!", 1, 100), std::string_view::npos);
  EXPECT_EQ(first_cut("\xE4\xB8\xAD\xE3\x80\x82", 1, 100), 1u);  // 中 then 。 (code points, not bytes)
  size_t byte = 0;
  EXPECT_EQ(first_cut("\xE4\xB8\xAD\xE6\x96\x87 x", 1, 100, &byte), 2u);
  EXPECT_EQ(byte, 6u);
}

TEST(TokenizerPrefix, EqualsTheTruncatedFullEncoding) {
  NEED_TOKENIZER();
  const std::vector<std::string> texts = {
      std::string(3000, 'a') + " b", "It's 5 o'clock \xE2\x80\x94 caf\xC3\xA9 2024! \r\n\tdon't 'LL x",
      "1234567890123 456 7\n\n\nline\r\nnext", "\xE4\xB8\xAD\xE6\x96\x87\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C\xE3\x80\x82 ok",
      "   leading   spaces   and\ttabs\t\t", "!?!? ... ---- ==== (x) [y] {z}"};
  for (std::string text : texts) {
    for (int k = 0; k < 3; ++k) text += text;
    const std::vector<int32_t> full = tok->encode(text);
    for (size_t limit : {size_t{1}, size_t{7}, size_t{64}, full.size() + 5}) {
      std::vector<int32_t> ids;
      bool complete = false;
      try {
        complete = tok->encode_prefix(text, limit, ids, 0, 4096);
      } catch (const Error& e) {
        ADD_FAILURE() << "refused: " << e.what();
        continue;
      }
      if (complete) {
        EXPECT_EQ(ids, full);
      } else {
        ASSERT_GT(full.size(), limit);
        EXPECT_EQ(ids, std::vector<int32_t>(full.begin(), full.begin() + static_cast<long>(limit)));
      }
    }
  }
  std::vector<int32_t> ids;
  EXPECT_THROW(tok->encode_prefix(std::string(200000, 'b'), 512, ids), Error);  // no cut within 65536
}

}  // namespace
}  // namespace vlfront::impl
