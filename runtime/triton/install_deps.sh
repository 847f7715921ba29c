#!/bin/sh
# Set-up for serving on Triton (docs/triton.md), called by `make setup`:
#   1. Debian's redis-server, when missing (apt-get, as root);
#   2. into the project venv: the pinned nvidia-pytriton wheel (ships tritonserver 2.51 + the python
#      backend) and tritonclient, both --no-deps: their metadata pins numpy<2, protobuf<7 and
#      ml-dtypes<=0.5.4, which the export pins contradict; the parts we use (the server binary,
#      tritonclient.http/.grpc, model_config_pb2) work with ours, and the triton extra brings their
#      other dependencies;
#   3. the stub env (numpy<2 + the runtime's dependencies + vlfront, editable) for the python backend.
# A step that cannot be done is reported and skipped: the Triton/Redis tests then skip with the reason.
# Usage: install_deps.sh VENV_PYTHON STUB_ENV_DIR
PY=$1
ENV=$2
HERE=$(dirname "$0")
PIP="-q --disable-pip-version-check"

# Debian packages: redis-server; the libpython the stub links and the venv module of that Python.
VER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
MISSING=""
command -v redis-server >/dev/null 2>&1 || MISSING="redis-server"
if command -v dpkg >/dev/null 2>&1; then
  for pkg in "libpython$VER" "python$VER-venv"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || MISSING="$MISSING $pkg"
  done
fi
if [ -n "$MISSING" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing$MISSING (apt-get)"
    apt-get update -qq >/dev/null 2>&1
    for pkg in $MISSING; do  # one by one: a package this distribution lacks must not block the others
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 ||
        echo "[setup] WARNING: apt-get could not install $pkg; the Triton/shared-cache tests may skip"
    done
  else
    echo "[setup] WARNING: missing$MISSING and not root with apt-get; the Triton/shared-cache tests may skip"
  fi
fi

"$PY" -m pip install $PIP -c constraints.txt -e '.[triton]' &&
  "$PY" -m pip install $PIP -c constraints.txt --no-deps nvidia-pytriton tritonclient ||
  echo "[setup] WARNING: could not install nvidia-pytriton/tritonclient; the Triton tests will skip"

if [ ! -x "$ENV/bin/python3" ]; then
  # The stub links the system's libpython3.X: build the env from that same Python (its stdlib, its ssl),
  # else stdlib and libpython differ (e.g. pyenv 3.11.7 vs Debian 3.11.2) and modules like ssl fail in the stub.
  BASE=/usr/bin/python$VER
  [ -x "$BASE" ] || BASE=$("$PY" -c 'import sys; print(sys._base_executable)')
  "$BASE" -m venv "$ENV"
fi
"$ENV/bin/python" -m pip install $PIP -r "$HERE/stub-requirements.txt" &&
  "$ENV/bin/python" -m pip install $PIP --no-deps -e . &&
  touch "$ENV/.installed" ||
  echo "[setup] WARNING: could not build the Triton stub env $ENV; the Triton tests will skip"
