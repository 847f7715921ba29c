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
#include <stdexcept>
#include <string>

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

// Offset of the bracket that opens level max_depth + 1, or npos. Brackets inside
// strings do not count; the scan does not judge syntax (the parser does).
inline size_t depth_error_offset(const char* data, size_t n, int max_depth = kMaxJsonDepth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < n; ++i) {
    const char c = data[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
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

// Parses text as JSON under the rules above; subject names the input in the
// message ("the request", "the body", "manifest.json").
inline nlohmann::json parse(const std::string& text, const std::string& subject) {
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
    return nlohmann::json::parse(text);
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
