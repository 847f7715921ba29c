// manifest.json of a bundle (Bundle::open): a tampered manifest is refused with
// Error(VLF_ERR_BUNDLE) and nothing else. The bundle directory holds only the manifest.
#include <cstdint>

#include "bundle.h"
#include "error.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::write_file("manifest.json", data, size);
  try {
    vlfront::impl::Bundle bundle = vlfront::impl::Bundle::open(fuzz::scratch_dir());
    (void)bundle.config();
  } catch (const vlfront::impl::Error&) {
  }
  return 0;
}
