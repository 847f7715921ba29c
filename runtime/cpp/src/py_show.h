// Client values in request error messages, shown exactly as Python's processor shows them
// (runtime/processor.py _show/_keys): never the whole value. A str of up to 60 characters,
// a bool, null, a float or an int within +-10^18 as Python's repr(); a longer str by its first
// 60 characters and its length; anything else (lists, dicts, huge ints) by its type. Key lists:
// sorted, each key cut to 60 characters, at most 10 and "and N more".
#pragma once

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vlfront::impl {

// Byte length of the first n code points of valid UTF-8 (json_guard checked it), and the count.
inline size_t utf8_prefix_bytes(const std::string& s, size_t n) {
  size_t i = 0;
  for (size_t k = 0; k < n && i < s.size(); ++k) {
    ++i;
    while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) ++i;
  }
  return i;
}

inline size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Python's repr() of a str (quotes chosen and escapes as Python does for ASCII and C1 controls).
inline std::string py_repr(const std::string& s) {
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    char buf[8];
    if (c == '\\') out += "\\\\";
    else if (c == static_cast<unsigned char>(q)) out += std::string("\\") + q;
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) std::snprintf(buf, sizeof buf, "\\x%02x", c), out += buf;
    else if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) < 0xA0)
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(s[++i])), out += buf;  // U+0080..U+009F
    else out += static_cast<char>(c);
  }
  return out + q;
}

// Python's type(x).__name__ of the value json.loads would give.
inline std::string py_type(const nlohmann::json& v) {
  using t = nlohmann::json::value_t;
  switch (v.type()) {
    case t::object: return "dict";
    case t::array: return "list";
    case t::string: return "str";
    case t::boolean: return "bool";
    case t::number_float: return "float";
    case t::null: return "NoneType";
    default: return "int";
  }
}

inline std::string py_show(const nlohmann::json& v) {
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_null()) return "None";
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    const size_t n = utf8_length(s);
    if (n <= 60) return py_repr(s);
    return py_repr(s.substr(0, utf8_prefix_bytes(s, 60))) + "... (" + std::to_string(n) + " characters)";
  }
  if (v.is_number_integer()) {
    constexpr int64_t kLimit = 1000000000000000000;  // Python: -10**18 < value < 10**18
    if (v.is_number_unsigned()) return v.get<uint64_t>() < static_cast<uint64_t>(kLimit) ? v.dump() : "int";
    const int64_t x = v.get<int64_t>();
    return (x > -kLimit && x < kLimit) ? v.dump() : "int";
  }
  if (v.is_number_float()) return v.dump();
  return v.is_array() ? "list" : "dict";
}

inline std::string py_keys(const std::vector<std::string>& keys) {
  std::vector<std::string> names;
  for (const auto& k : keys) names.push_back(k.substr(0, utf8_prefix_bytes(k, 60)));
  std::sort(names.begin(), names.end());
  std::string out = "[";
  for (size_t i = 0; i < names.size() && i < 10; ++i) out += (i ? ", " : "") + py_repr(names[i]);
  out += "]";
  if (names.size() > 10) out += " and " + std::to_string(names.size() - 10) + " more";
  return out;
}

}  // namespace vlfront::impl
