#!/usr/bin/env bash
# clang and its libFuzzer/sanitizer runtimes from Debian, for make cpp-fuzz (as root it installs
# them; otherwise it prints the command). Debian 12 ships them as clang + libclang-rt-14-dev.
set -euo pipefail
if command -v clang >/dev/null && command -v clang++ >/dev/null; then
  for lib in "$(clang -print-resource-dir)"/lib/linux/libclang_rt.fuzzer-*.a "$(clang -print-resource-dir)"/lib/*/libclang_rt.fuzzer.a; do
    [[ -f $lib ]] && exit 0
  done
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "[fuzz] clang with libFuzzer is missing; install: sudo apt-get install clang libclang-rt-dev" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
command -v clang >/dev/null || { apt-get update -qq; apt-get install -y -qq --no-install-recommends clang; }
major=$(clang --version | grep -o 'version [0-9]*' | grep -o '[0-9]*' | head -1)
echo "[fuzz] installing the compiler-rt of clang $major"
apt-get install -y -qq --no-install-recommends "libclang-rt-$major-dev" 2>/dev/null ||
  { apt-get update -qq; apt-get install -y -qq --no-install-recommends "libclang-rt-$major-dev"; }
