#!/usr/bin/env bash
# Fetch ONNX Runtime's C/C++ headers from Debian 13's libonnxruntime-dev package.
#
# The onnxruntime wheel on PyPI ships the library (onnxruntime/capi/libonnxruntime.so.*)
# but no headers. Debian 13 (trixie) packages them; we download that one .deb with
# apt-get under a private apt configuration (own sources list, state and cache
# directories below OUT; the host's apt.conf.d still applies, e.g. for a proxy) so the
# host's package lists and state are left as they are; then
# unpack it with dpkg -x. Only the headers are used; the library comes from the wheel.
#
# Usage: fetch_ort_headers.sh OUT_DIR      (idempotent: a no-op when OUT_DIR/include exists)
set -euo pipefail
out=${1:?usage: fetch_ort_headers.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
stamp="$out/.fetched"
if [[ -f "$stamp" ]]; then exit 0; fi
apt_root="$out/apt"
mkdir -p "$apt_root"/{state/lists/partial,cache/archives/partial,etc/preferences.d}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$keyring] http://deb.debian.org/debian trixie main" > "$apt_root/etc/sources.list"
: > "$apt_root/status"
opts=(
  -o "Dir::Etc::SourceList=$apt_root/etc/sources.list"
  -o "Dir::Etc::SourceParts=$apt_root/etc/sources.list.d-none"
  -o "Dir::Etc::Preferences=$apt_root/etc/preferences"
  -o "Dir::Etc::PreferencesParts=$apt_root/etc/preferences.d"
  -o "Dir::State=$apt_root/state"
  -o "Dir::State::status=$apt_root/status"
  -o "Dir::Cache=$apt_root/cache"
  -o "APT::Architecture=amd64"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
echo "[cpp] apt-get update (private config, Debian 13 trixie) -> $apt_root"
apt-get "${opts[@]}" -qq update
cd "$out"
rm -f libonnxruntime-dev_*.deb
echo "[cpp] apt-get download libonnxruntime-dev (trixie)"
apt-get "${opts[@]}" -qq download libonnxruntime-dev
deb=$(ls libonnxruntime-dev_*.deb)
rm -rf root && dpkg -x "$deb" root
hdr=$(dirname "$(find root -name onnxruntime_c_api.h | head -n1)")
[[ -f "$hdr/onnxruntime_c_api.h" ]] || { echo "[cpp] onnxruntime_c_api.h not in $deb" >&2; exit 1; }
rm -rf include && mkdir include && cp -r "$hdr"/. include/
echo "$deb" > "$stamp"
echo "[cpp] ONNX Runtime headers from $deb in $out/include"
