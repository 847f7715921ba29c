// Standard base64 (RFC 4648) decoding, shared by the request JSON reader and the
// tiktoken ranks reader.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace vlfront::impl {

// Appends the bytes of `in` to `out` (a std::string or std::vector<uint8_t>).
// Line breaks are skipped; '=' is accepted only as trailing padding (at most two).
// Returns false on any other character.
template <class Bytes>
bool base64_decode(std::string_view in, Bytes& out) {
  static const auto table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(a[i])] = static_cast<int8_t>(i);
    return t;
  }();
  out.clear();
  out.reserve(in.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (char ch : in) {
    if (ch == '=') {
      ++pad;
      continue;
    }
    if (ch == '\n' || ch == '\r') continue;
    const int v = table[static_cast<unsigned char>(ch)];
    if (v < 0 || pad) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<typename Bytes::value_type>((acc >> bits) & 0xFF));
    }
  }
  return pad <= 2;
}

}  // namespace vlfront::impl
