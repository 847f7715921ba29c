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

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] installing redis-server (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) ||
      echo "[setup] WARNING: apt-get could not install redis-server; the shared-cache tests will skip"
  else
    echo "[setup] WARNING: redis-server is missing and we are not root: apt-get install redis-server"
  fi
fi

"$PY" -m pip install $PIP -c constraints.txt -e '.[triton]' &&
  "$PY" -m pip install $PIP -c constraints.txt --no-deps nvidia-pytriton tritonclient ||
  echo "[setup] WARNING: could not install nvidia-pytriton/tritonclient; the Triton tests will skip"

if [ ! -x "$ENV/bin/python3" ]; then
  # The stub links the system's libpython3.X: build the env from that same Python (its stdlib, its ssl),
  # else stdlib and libpython differ (e.g. pyenv 3.11.7 vs Debian 3.11.2) and modules like ssl fail in the stub.
  VER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  BASE=/usr/bin/python$VER
  [ -x "$BASE" ] || BASE=$("$PY" -c 'import sys; print(sys._base_executable)')
  "$BASE" -m venv "$ENV"
fi
"$ENV/bin/python" -m pip install $PIP -r "$HERE/stub-requirements.txt" &&
  "$ENV/bin/python" -m pip install $PIP --no-deps -e . &&
  touch "$ENV/.installed" ||
  echo "[setup] WARNING: could not build the Triton stub env $ENV; the Triton tests will skip"
