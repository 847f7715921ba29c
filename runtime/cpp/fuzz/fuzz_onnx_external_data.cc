// The ONNX protobuf scan for external-data locations (bundle rule 5) on arbitrary bytes.
#include <cstdint>
#include <string>

#include "bundle.h"
#include "error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    (void)vlfront::impl::onnx_external_data(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const vlfront::impl::Error&) {
  }
  return 0;
}
