// tokenizer.json (Tokenizer::from_tokenizer_json): only our Error may come out; a
// tokenizer that loads must encode a short text without failing.
#include <cstdint>
#include <cstdlib>

#include "error.h"
#include "fuzz_util.h"
#include "tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_file("tokenizer.json", data, size);
  try {
    auto tok = vlfront::impl::Tokenizer::from_tokenizer_json(path);
    (void)tok->encode("Hello, 世界! 123  ");
  } catch (const vlfront::impl::Error&) {
  }
  return 0;
}
