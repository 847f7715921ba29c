// UTF-8 validation and Unicode NFC, as Python's unicodedata.normalize("NFC", s).
#pragma once

#include <string>
#include <string_view>

namespace vlfront::impl {

// Index of the first byte of the first invalid UTF-8 sequence, or npos when
// `text` is valid (overlongs, surrogates and code points > U+10FFFF are invalid).
size_t find_invalid_utf8(std::string_view text) noexcept;

// NFC of valid UTF-8 `text`. Returns false and leaves `out` alone when `text`
// is already in NFC (the common case: every ASCII string), so the caller can
// keep using its own buffer.
bool nfc_if_needed(std::string_view text, std::string& out);

}  // namespace vlfront::impl
