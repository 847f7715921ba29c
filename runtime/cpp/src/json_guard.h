// Untrusted JSON, parsed one way everywhere (request JSON in the C ABI and
// vlfront-embed, the example HTTP server, bundle files): the bytes must be
// UTF-8 and nest at most kMaxJsonDepth arrays/objects, checked by one linear,
// non-recursive scan before nlohmann parses them, so that no later dump(),
// destructor or error message can recurse deeply or meet an invalid byte.
// Error texts never quote client bytes; they name a byte offset and a kind.
// The same rules and words are in Python (runtime/json_guard.py);
// docs/runtime.md ("Untrusted JSON") is their text.
//
// Header-only so the example server (which links only libvlfront.so's C ABI)
// parses bodies with exactly the same function as the runtime.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace vlfront::json_guard {

constexpr int kMaxJsonDepth = 64;

// Thrown by parse(); what() is the whole reason, e.g. "the request is not valid
// UTF-8: byte 0xff at offset 45". Callers rethrow it as their own error type.
class Refused : public std::runtime_error {
 public:
  Refused(const std::string& message, size_t offset) : std::runtime_error(message), offset_(offset) {}
  size_t offset() const { return offset_; }

 private:
  size_t offset_;
};

// Offset of the first byte that does not start or continue a well-formed UTF-8
// sequence (Unicode 15 table 3-7: no overlongs, no surrogates, <= U+10FFFF), or
// npos. It is the start of the bad sequence, as Python's UnicodeDecodeError.start.
inline size_t utf8_error_offset(const char* data, size_t n) {
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) {  // eight ASCII bytes at a time (a 30 MiB text is mostly ASCII)
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if ((w & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else return i;
    if (i + 1 >= n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (i + k >= n || (p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return std::string::npos;
}

// Offset of the quote that closes the string literal whose body starts at i, or n
// if none (memchr over the body: a big string costs what memchr costs).
inline size_t string_end(const char* data, size_t i, size_t n) {
  while (i < n) {
    const void* q = std::memchr(data + i, '"', n - i);
    const size_t quote = q ? static_cast<size_t>(static_cast<const char*>(q) - data) : n;
    const void* b = std::memchr(data + i, '\\', quote - i);
    if (!b) return quote;
    i = static_cast<size_t>(static_cast<const char*>(b) - data) + 2;  // skip the escaped byte
  }
  return n;
}

// Offset of the bracket that opens level max_depth + 1, or npos. Brackets inside
// strings do not count; the scan does not judge syntax (the parser does).
inline size_t depth_error_offset(const char* data, size_t n, int max_depth = kMaxJsonDepth) {
  int depth = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = data[i];
    if (c == '"') {
      i = string_end(data, i + 1, n);  // at the closing quote (or n)
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return i;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return std::string::npos;
}

// nlohmann's description of a parse error without its "last read: '...'" part
// (which echoes client bytes) and without the position (we give the byte offset).
inline std::string describe(const nlohmann::json::parse_error& e) {
  std::string what = e.what();
  const size_t dash = what.find(" - ");
  std::string kind = dash == std::string::npos ? std::string("syntax error") : what.substr(dash + 3);
  const size_t last_read = kind.find("; last read: '");
  if (last_read != std::string::npos) kind.erase(last_read);
  if (kind.size() > 120) kind.erase(120);
  return kind;
}

// String values of at least kBigString bytes (a 30 MiB text, a base64 image) are
// decoded here, not by nlohmann, whose lexer reads ~50 MB/s (it keeps every byte
// twice, once for the value and once for its error messages); this runs at memory
// speed. The result is the same document: a literal is lifted only when it is a
// value (not a key) and decodes exactly as JSON says; anything else (a raw control
// character, a bad escape or surrogate, broken syntax) leaves the whole text to
// nlohmann, so that errors and their offsets are nlohmann's.
// Fuzz builds lower it (VLFRONT_JSON_BIG_STRING=8, fuzz/CMakeLists.txt) so that libFuzzer's short
// inputs drive this decoder, and fuzz_request_json checks it against nlohmann alone.
#ifndef VLFRONT_JSON_BIG_STRING
#define VLFRONT_JSON_BIG_STRING (64 * 1024)
#endif
constexpr size_t kBigString = VLFRONT_JSON_BIG_STRING;

// The body of a JSON string literal (between its quotes, UTF-8 already checked)
// decoded into out; false where nlohmann would refuse it.
inline bool decode_string(const char* p, size_t n, std::string& out) {
  out.clear();
  out.reserve(n);
  auto hex4 = [&](size_t at, unsigned& v) {
    if (at + 4 > n) return false;
    v = 0;
    for (size_t k = 0; k < 4; ++k) {
      const char c = p[at + k];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
      else return false;
    }
    return true;
  };
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    for (uint64_t w; j + 8 <= n; j += 8) {  // no byte < 0x20 and no backslash among eight
      std::memcpy(&w, p + j, 8);
      const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
      const uint64_t bs = w ^ (ones * '\\');
      if (((w - ones * 0x20) & ~w & highs) | ((bs - ones) & ~bs & highs)) break;
    }
    while (j < n && p[j] != '\\' && static_cast<unsigned char>(p[j]) >= 0x20) ++j;
    out.append(p + i, j - i);
    if (j == n) break;
    if (p[j] != '\\' || j + 1 >= n) return false;  // a raw control character, or a lone backslash
    i = j + 2;
    switch (p[j + 1]) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        unsigned cp = 0, lo = 0;
        if (!hex4(i, cp)) return false;
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (i + 1 >= n || p[i] != '\\' || p[i + 1] != 'u' || !hex4(i + 2, lo) || lo < 0xDC00 || lo > 0xDFFF)
            return false;
          i += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return false;
        }
        if (cp < 0x80) {
          out += static_cast<char>(cp);
        } else if (cp < 0x800) {
          out += static_cast<char>(0xC0 | (cp >> 6));
          out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
          out += static_cast<char>(0xE0 | (cp >> 12));
          out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
          out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
          out += static_cast<char>(0xF0 | (cp >> 18));
          out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
          out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
          out += static_cast<char>(0x80 | (cp & 0x3F));
        }
        break;
      }
      default:
        return false;
    }
  }
  return true;
}

// text with each big string value replaced by "" (rest), and the decoded values
// with their ordinal among all string values, in document order (big). false when
// there is nothing to lift or a big literal does not decode.
inline bool lift_big_strings(std::string_view text, std::string& rest,
                             std::vector<std::pair<size_t, std::string>>& big) {
  const size_t n = text.size();
  size_t ordinal = 0, copied = 0;
  for (size_t i = 0; i < n; ++i) {
    if (text[i] != '"') continue;
    const size_t j = string_end(text.data(), i + 1, n);
    if (j >= n) return false;
    size_t k = j + 1;
    while (k < n && (text[k] == ' ' || text[k] == '\t' || text[k] == '\n' || text[k] == '\r')) ++k;
    if (k >= n || text[k] != ':') {  // a value, not a key
      if (j - i - 1 >= kBigString) {
        std::string value;
        if (!decode_string(text.data() + i + 1, j - i - 1, value)) return false;
        rest.append(text.data() + copied, i - copied);
        rest += "\"\"";
        copied = j + 1;
        big.emplace_back(ordinal, std::move(value));
      }
      ++ordinal;
    }
    i = j;
  }
  if (big.empty()) return false;
  rest.append(text.data() + copied, n - copied);
  return true;
}

// Parses text as JSON under the rules above; subject names the input in the
// message ("the request", "the body", "manifest.json").
inline nlohmann::json parse(std::string_view text, const std::string& subject) {
  char hex[8];
  const size_t bad = utf8_error_offset(text.data(), text.size());
  if (bad != std::string::npos) {
    std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned char>(text[bad]));
    throw Refused(subject + " is not valid UTF-8: byte " + hex + " at offset " + std::to_string(bad), bad);
  }
  const size_t deep = depth_error_offset(text.data(), text.size());
  if (deep != std::string::npos)
    throw Refused(subject + " nests arrays/objects deeper than " + std::to_string(kMaxJsonDepth) + " levels", deep);
  try {
    std::string rest;
    std::vector<std::pair<size_t, std::string>> big;
    if (text.size() >= kBigString && lift_big_strings(text, rest, big)) {
      // nlohmann reads the rest (small); each lifted string goes back in as the string value it was.
      size_t ordinal = 0, next = 0;
      const nlohmann::json::parser_callback_t put_back = [&](int, nlohmann::json::parse_event_t event,
                                                            nlohmann::json& value) {
        if (event == nlohmann::json::parse_event_t::value && value.is_string()) {
          if (next < big.size() && big[next].first == ordinal) *value.get_ptr<std::string*>() = std::move(big[next++].second);
          ++ordinal;
        }
        return true;
      };
      try {
        nlohmann::json doc = nlohmann::json::parse(rest, put_back);
        if (next == big.size()) return doc;
      } catch (const nlohmann::json::exception&) {
      }  // not JSON after all: the full parse below words the error and its offset
    }
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte counts from 1 and points past the byte that failed.
    const size_t at = e.byte > 0 ? e.byte - 1 : 0;
    throw Refused(subject + " is not valid JSON: " + describe(e) + " at offset " + std::to_string(at), at);
  } catch (const nlohmann::json::exception&) {
    // out_of_range 406: a number beyond double (1e99999); its what() quotes the number.
    throw Refused(subject + " is not valid JSON: a number is out of range", std::string::npos);
  }
}

// dump() for text that may hold client strings: never throws on bad UTF-8.
inline std::string dump_safe(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace vlfront::json_guard
