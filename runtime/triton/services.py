"""Start and stop a real `tritonserver` (from the nvidia-pytriton wheel) and a real `redis-server` on loopback.

Used by the tests and `bench.py`; a deployment runs its own (docs/triton.md). Both bind 127.0.0.1
on free ports, are waited for until ready, and are stopped (TERM, then KILL) on exit.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request

from vlfront.errors import VlfrontError


class ServiceError(VlfrontError):
    """A server binary that is missing, or a server that did not become ready in time."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def triton_install() -> dict[str, pathlib.Path]:
    """Paths inside the installed nvidia-pytriton wheel: binary, libs, python backend, stub.

    Raises:
        ServiceError: the wheel is not installed (`make setup` installs it) or lacks a part.
    """
    spec = importlib.util.find_spec("pytriton")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("tritonserver is not installed: run `make setup` (installs the nvidia-pytriton wheel)")
    root = pathlib.Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    paths = {"binary": root / "bin" / "tritonserver", "libs": root.parent.parent / "nvidia_pytriton.libs",
             "python_backend": root / "backends" / "python",
             "stub": root / "python_backend_stubs" / ver / "triton_python_backend_stub"}
    missing = [f"{k}={v}" for k, v in paths.items() if not v.exists()]
    if missing:
        raise ServiceError(f"the nvidia-pytriton wheel lacks {missing}; reinstall it with `make setup`")
    return paths


def backends_dir(dest: pathlib.Path) -> pathlib.Path:
    """A --backend-directory holding python/ = the wheel's python backend + the stub for this Python."""
    paths = triton_install()
    py = dest / "python"
    py.mkdir(parents=True, exist_ok=True)
    for src in (*paths["python_backend"].glob("*.so"), paths["python_backend"] / "triton_python_backend_utils.py",
                paths["stub"]):
        target = py / src.name
        if not target.exists():
            target.symlink_to(src)
    return dest


def _stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class TritonServer:
    """`tritonserver --model-repository REPO` on 127.0.0.1 with free HTTP, gRPC and metrics ports.

    Example:
        >>> with TritonServer("build/triton-repo") as server:
        ...     print(server.http_url, server.grpc_url)
    """

    def __init__(self, repository, *, ready_timeout_s: float = 120.0, log_path=None, extra_args=(), env=None,
                 python_env=None):
        self.repository = pathlib.Path(repository).resolve()
        self.python_env = pathlib.Path(python_env or stub_env())
        self.ready_timeout_s = ready_timeout_s
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self._tmp = tempfile.mkdtemp(prefix="vlfront-triton-")
        self.log_path = pathlib.Path(log_path or pathlib.Path(self._tmp) / "tritonserver.log")
        self._extra_args, self._env = list(extra_args), env or {}
        self.proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> "TritonServer":
        paths = triton_install()
        backends = backends_dir(pathlib.Path(self._tmp) / "backends")
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(paths["libs"]), env.get("LD_LIBRARY_PATH")]))
        # The stub embeds Python, which finds its prefix by looking for `python3` on PATH: the stub env's bin
        # first, so the stub sees that environment's site-packages (numpy<2, vlfront), as pytriton does.
        env["PATH"] = os.pathsep.join([str(self.python_env / "bin"), env.get("PATH", "")])
        env.update({k: v for k, v in server_malloc_env().items() if k not in env})
        env.update(self._env)
        cmd = [str(paths["binary"]), f"--model-repository={self.repository}", f"--backend-directory={backends}",
               "--http-address=127.0.0.1", f"--http-port={self.http_port}",
               "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
               "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}", "--allow-metrics=true",
               "--allow-gpu-metrics=false", "--allow-cpu-metrics=false",
               "--exit-on-error=true", "--strict-readiness=true",
               *self._extra_args]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"tritonserver exited with {self.proc.returncode}:\n{self.log_tail(12000)}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ServiceError(f"tritonserver not ready after {self.ready_timeout_s:g} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, grace_s=15)
            self._log.close()
        shutil.rmtree(self._tmp, ignore_errors=True)  # backends links, cache dir (and the log, unless log_path)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RedisServer:
    """Debian's `redis-server` on 127.0.0.1:<free port>, bounded (maxmemory + allkeys-lru), no persistence."""

    def __init__(self, *, maxmemory: str = "256mb", port: int | None = None):
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.binary):
            raise ServiceError("redis-server is not installed: run `make setup` (apt-get install redis-server)")
        self.port = port or free_port()
        self.maxmemory = maxmemory
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        cmd = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
               "--maxmemory", self.maxmemory, "--maxmemory-policy", "allkeys-lru", "--protected-mode", "yes",
               "--dir", tempfile.gettempdir(), "--loglevel", "warning"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ServiceError(f"redis-server did not answer PING on 127.0.0.1:{self.port} within 10 s")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, grace_s=5)

    def kill(self) -> None:
        """SIGKILL, as when a Redis host dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def server_malloc_env() -> dict[str, str]:
    """glibc malloc settings for the tritonserver process: keep its multi-MB buffers in the heap.

    Each response's output is a fresh buffer of a few MB (inputs_embeds: 3 MB fp32) in the server (the
    python backend copies it out of the stub's shared memory into the gRPC/HTTP response). Above glibc's
    mmap threshold each one is a new mmap whose every page faults in and is zeroed by the kernel, then an
    munmap: measured 3.1 ms of compute_output per response at 3 MB here, 1.6-2.0 ms with these settings
    (docs/triton.md). As GLIBC_TUNABLES, not MALLOC_*_ variables: the stub inherits the environment,
    and runtime/memory.py leaves a process alone that has MALLOC_*_ set; with tunables it still applies
    its own (larger) trim threshold for image decoding in the stub (Debian's glibc 2.36 applies both
    tunables in tritonserver but passes only the first on to its children; the stub's mallopt settles it
    there). An environment that already sets GLIBC_TUNABLES keeps its own.
    """
    from vlfront.runtime.memory import MMAP_BYTES

    if not sys.platform.startswith("linux"):
        return {}
    return {"GLIBC_TUNABLES": f"glibc.malloc.mmap_threshold={MMAP_BYTES}:glibc.malloc.trim_threshold={MMAP_BYTES}"}


def stub_env() -> pathlib.Path:
    """The Python environment the python-backend stub runs in.

    The wheel's stub embeds pybind11 built against numpy 1.x: with numpy 2 it misreads array
    descriptors (BYTES tensors come out garbled), so it needs an environment with numpy<2 and the
    runtime's dependencies. `make setup` builds one at build/triton-env; $VLFRONT_TRITON_ENV overrides.
    Without either, this Python (fine when it has numpy<2).
    """
    if os.environ.get("VLFRONT_TRITON_ENV"):
        return pathlib.Path(os.environ["VLFRONT_TRITON_ENV"])
    local = pathlib.Path(__file__).resolve().parents[2] / "build" / "triton-env"
    return local if (local / "bin" / "python3").exists() else pathlib.Path(sys.prefix)


def site_packages(env=None) -> str:
    """The site-packages of the stub env (see `stub_env`), which model.py adds with site.addsitedir."""
    env = pathlib.Path(env or stub_env())
    found = sorted(env.glob("lib/python3*/site-packages"))
    return str(found[-1]) if found else sysconfig.get_paths()["purelib"]
