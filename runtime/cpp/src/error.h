// Internal error type. Every failure we raise on purpose is a vlfront::impl::Error
// whose code matches a vlf_status_code of the C ABI; the C boundary (c_api.cc)
// turns it into a status object. Messages name the input, the value, the limit
// and the fix (STYLE.md rule 5), so a server can hand them to its caller as is.
#pragma once

#include <stdexcept>
#include <string>

#include "vlfront/vlfront.h"

namespace vlfront::impl {

class Error : public std::runtime_error {
 public:
  Error(vlf_status_code code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  vlf_status_code code() const noexcept { return code_; }

 private:
  vlf_status_code code_;
};

// A request-level error carries the index of the request in its batch.
inline Error request_error(vlf_status_code code, long index, const std::string& message) {
  if (index < 0) return Error(code, message);
  return Error(code, "request " + std::to_string(index) + ": " + message);
}

}  // namespace vlfront::impl
