#!/usr/bin/env bash
# Installs the Debian packages the C++ runtime builds against, if any is missing.
# As root (CI) it runs apt-get; otherwise it prints the command to run.
set -euo pipefail
packages=(
  cmake make g++ pkg-config ca-certificates
  libpcre2-dev            # Qwen pre-split regex (UTF + UCP + JIT)
  libicu-dev              # NFC normalisation
  libjpeg62-turbo-dev     # JPEG decode (libjpeg-turbo)
  libpng-dev              # PNG decode
  libssl-dev              # sha256 of bundle files and cache keys (libcrypto)
  nlohmann-json3-dev      # manifest, tokenizer.json and request JSON
  libgtest-dev            # unit tests (ctest)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then exit 0; fi
if [[ $(id -u) -ne 0 ]]; then
  echo "[cpp] missing Debian packages: ${missing[*]}" >&2
  echo "[cpp] install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "[cpp] installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
