// The example server's HTTP/1.1 request parser (examples/http_front.cc), fed the
// input in two pieces (a split anywhere must parse the same as one piece).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "http_front.h"

using vlfront_server::RequestParser;

namespace {

// Parses data as a sequence of requests; returns a transcript of what came out.
std::string run(const uint8_t* data, size_t size, size_t split) {
  vlfront_server::ParseLimits limits;
  limits.max_body = 1 << 16;
  RequestParser p(limits);
  std::string out;
  const char* bytes = reinterpret_cast<const char*>(data);
  size_t pos = 0;
  for (int guard = 0; pos < size && guard < 10000; ++guard) {
    const size_t end = pos < split ? split : size;
    pos += p.feed(bytes + pos, end - pos);
    switch (p.state()) {
      case RequestParser::State::kHeadDone:
        p.begin_body();
        break;
      case RequestParser::State::kDone:
        out += p.request().method + " " + p.request().target + " " + std::to_string(p.request().body.size()) + ";";
        p.reset();
        break;
      case RequestParser::State::kError:
        return out + "E" + std::to_string(p.error_status());
      default:
        break;
    }
    if (p.state() == RequestParser::State::kError) return out + "E" + std::to_string(p.error_status());
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string whole = run(data, size, size);
  const std::string split = run(data, size, size / 2);
  if (whole != split) abort();
  return 0;
}
