#include "unicode.h"

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>
#include <unicode/utypes.h>

#include <cstdint>
#include <cstring>

#include "error.h"

namespace vlfront::impl {

size_t find_invalid_utf8(std::string_view text) noexcept {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // Fast path: 8 ASCII bytes at a time.
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s + i, 8);
      if ((w & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return i;
    i += len;
  }
  return std::string_view::npos;
}

namespace {

const icu::Normalizer2& nfc() {
  static const icu::Normalizer2* instance = [] {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(status);
    if (U_FAILURE(status) || n == nullptr)
      throw Error(VLF_ERR_INTERNAL, std::string("ICU NFC normalizer unavailable: ") + u_errorName(status));
    return n;
  }();
  return *instance;
}

bool is_ascii(std::string_view text) noexcept {
  size_t i = 0;
  const size_t n = text.size();
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, text.data() + i, 8);
    if (w & 0x8080808080808080ull) return false;
  }
  for (; i < n; ++i)
    if (static_cast<unsigned char>(text[i]) & 0x80) return false;
  return true;
}

}  // namespace

bool nfc_if_needed(std::string_view text, std::string& out) {
  if (is_ascii(text)) return false;  // ASCII is always NFC
  const icu::Normalizer2& n = nfc();
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  UErrorCode status = U_ZERO_ERROR;
  int32_t span = n.spanQuickCheckYes(u, status);
  if (U_FAILURE(status)) throw Error(VLF_ERR_INTERNAL, std::string("ICU NFC check failed: ") + u_errorName(status));
  if (span == u.length()) return false;
  icu::UnicodeString normalized = n.normalize(u, status);
  if (U_FAILURE(status)) throw Error(VLF_ERR_INTERNAL, std::string("ICU NFC failed: ") + u_errorName(status));
  out.clear();
  normalized.toUTF8String(out);
  return true;
}

}  // namespace vlfront::impl
