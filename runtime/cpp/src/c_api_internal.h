// What the opaque C handles are, and the boundary helper that turns every
// exception into a vlf_status (no exception crosses the C ABI).
#pragma once

#include <new>
#include <string>
#include <vector>

#include "error.h"
#include "vlfront/vlfront.h"

struct vlf_status {
  vlf_status_code code;
  std::string message;
};

struct vlf_tokens {
  std::vector<int32_t> ids;
};

namespace vlfront::impl {

// Out of memory while reporting an error: one static status, which
// vlf_status_destroy knows not to free.
vlf_status* oom_status() noexcept;

inline vlf_status* make_status(vlf_status_code code, std::string message) noexcept {
  try {
    return new vlf_status{code, std::move(message)};
  } catch (...) {
    return oom_status();
  }
}

// Runs `fn`; maps exceptions to a status the caller owns (NULL on success).
template <typename F>
vlf_status* guarded(F&& fn) noexcept {
  try {
    fn();
    return nullptr;
  } catch (const Error& e) {
    return make_status(e.code(), e.what());
  } catch (const std::bad_alloc&) {
    return make_status(VLF_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return make_status(VLF_ERR_INTERNAL, std::string("internal error: ") + e.what());
  } catch (...) {
    return make_status(VLF_ERR_INTERNAL, "internal error: unknown exception");
  }
}

inline void require(const void* p, const char* what) {
  if (!p) throw Error(VLF_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

}  // namespace vlfront::impl
