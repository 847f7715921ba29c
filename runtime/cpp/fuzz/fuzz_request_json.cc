// Request JSON (C ABI vlf_request_create_from_json, vlfront-embed --request) and the
// untrusted-JSON guard under it. Only our Error may come out; a body the guard accepts
// must dump and parse back to the same value (no recursion, no invalid UTF-8 reaches dump())
// and equal nlohmann's own parse of the same bytes.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "error.h"
#include "json_guard.h"
#include "request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const nlohmann::json value = vlfront::json_guard::parse(text, "the body");
    if (nlohmann::json::parse(vlfront::json_guard::dump_safe(value)) != value) abort();
    // Differential: the guard's own decoding of big strings (every string of 8+ bytes in this
    // build) must give exactly nlohmann's document, and accept only what nlohmann accepts.
    nlohmann::json plain;
    try {
      plain = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception&) {
      abort();
    }
    if (plain != value) abort();
  } catch (const vlfront::json_guard::Refused&) {
  }
  try {
    vlfront::impl::request_from_json(text, 0);
  } catch (const vlfront::impl::Error&) {
  }
  return 0;
}
