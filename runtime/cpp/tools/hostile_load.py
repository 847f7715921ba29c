"""Mixed hostile load against the example servers (C++ vlfront-http-server, Python examples/server.py).

Good requests run while every hostile class is in flight: a 100,000-deep JSON body, a chunked body
far over --max-body-mb, invalid UTF-8, stalled uploads (1 byte/s), a 30 MiB single-word text and
an over-long header line. tests/cpp/test_hostile_load.py runs a short version and asserts on it;
run this file for the figures (p50/p99 of good requests, clean vs mixed, peak RSS):

    .venv/bin/python runtime/cpp/tools/hostile_load.py --bundle build/default \\
        --cpp-server build/cpp/examples/vlfront-http-server [--old-cpp-server PATH] --out build/i9a-load.json

Everything is loopback; the servers are started and stopped here.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

REPO = pathlib.Path(__file__).resolve().parents[3]
MiB = 1 << 20


# -- servers ------------------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int

    def pids(self) -> list[int]:
        """The server's process and its children (the Python server's body parsers)."""
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            for task in pathlib.Path(f"/proc/{pid}/task").glob("*"):
                try:
                    todo.extend(int(c) for c in (task / "children").read_text().split())
                except OSError:
                    pass
        return out

    def rss_mb(self, key: str = "VmRSS") -> float:
        """VmRSS (or VmHWM: each process's peak, summed: an upper bound of the peak) of all pids()."""
        total = 0.0
        for pid in self.pids():
            try:
                lines = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            total += next((int(ln.split()[1]) / 1024 for ln in lines if ln.startswith(key + ":")), 0.0)
        return total

    def reset_peak(self) -> bool:
        """VmHWM := VmRSS in every process (False where the kernel does not allow it)."""
        try:
            for pid in self.pids():
                pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def stop(self) -> int | None:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if request(port, "GET", "/healthz", timeout=2)[0] == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not answer /healthz in time")


def start_cpp(binary, bundle, max_body_mb: float = 32, extra=()) -> Server:
    proc = subprocess.Popen([str(binary), "--bundle", str(bundle), "--port", "0", "--threads", "1",
                             "--max-body-mb", str(max_body_mb), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"C++ server did not start: {line!r}")
    port = int(line.rsplit(":", 1)[1])
    _wait_healthy(port, proc)
    return Server("cpp", proc, port)


def start_python(bundle, max_body_mb: float = 32) -> Server:
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(REPO / "examples" / "server.py"), "--bundle", str(bundle),
                             "--port", str(port), "--max-body-mb", str(max_body_mb)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _wait_healthy(port, proc)
    return Server("python", proc, port)


# -- clients ------------------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}


def request(port: int, method: str, path: str, body: bytes = b"", headers=None, timeout: float = 60):
    """(status, headers, body) of one request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def good_bodies(n: int) -> list[dict]:
    import skimage

    data = pathlib.Path(skimage.__file__).parent / "data"
    photos = [(data / p).read_bytes() for p in ("rocket.jpg", "astronaut.png", "coffee.png", "chelsea.png")]
    out = []
    for i in range(n):
        if i % 3 == 2:
            content = f"Text-only request {i}: tell me a story about ünïcödé."
        else:
            content = [{"type": "image", "image_base64": base64.b64encode(photos[i % len(photos)]).decode()},
                       {"type": "text", "text": f"Request {i}: what is in this picture?"}]
        out.append({"messages": [{"role": "user", "content": content}], "add_generation_prompt": True})
    return out


def as_runtime_request(body: dict) -> dict:
    def item(it):
        return {"type": "image", "image": base64.b64decode(it["image_base64"])} if it["type"] == "image" else it

    return {"messages": [{**m, "content": m["content"] if isinstance(m["content"], str)
                          else [item(it) for it in m["content"]]} for m in body["messages"]],
            "add_generation_prompt": body["add_generation_prompt"]}


@dataclass
class Answer:
    kind: str
    status: int | None
    seconds: float
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    note: str = ""


def good(port: int, body: dict, timeout: float = 60) -> Answer:
    t0 = time.perf_counter()
    try:
        status, headers, data = request(port, "POST", "/v1/embed", json.dumps(body).encode(), JSON, timeout)
    except (TimeoutError, socket.timeout):
        return Answer("good", None, time.perf_counter() - t0, note=f"no answer within {timeout} s")
    return Answer("good", status, time.perf_counter() - t0, data, headers)


def simple(kind: str, port: int, body: bytes, headers=JSON, timeout: float = 60) -> Answer:
    t0 = time.perf_counter()
    try:
        status, h, data = request(port, "POST", "/v1/embed", body, headers, timeout=timeout)
    except OSError as e:
        return Answer(kind, None, time.perf_counter() - t0, note=f"{type(e).__name__}: {e}")
    return Answer(kind, status, time.perf_counter() - t0, data, h)


def deep_json(port: int, depth: int = 100_000) -> Answer:
    return simple("deep_json", port, ('{"messages":[{"role":' + "[" * depth + "]" * depth +
                                      ',"content":"hi"}]}').encode())


def invalid_utf8(port: int) -> Answer:
    return simple("invalid_utf8", port, b'{"messages":[{"role":"user","content":"\xff\xfe"}]}')


def big_text_body(mib: int = 30, word: bool = False) -> bytes:
    """The body of mib MiB of text: words (truncated to what fits) or one single word."""
    text = "a" * (mib * MiB) if word else ("lorem ipsum dolor sit amet " * (mib * MiB // 27 + 1))[: mib * MiB]
    return json.dumps({"messages": [{"role": "user", "content": text}]}).encode()


def big_text(port: int, mib: int = 30, word: bool = False, body: bytes | None = None) -> Answer:
    """mib MiB of text: words (truncated to what fits) or one single word. Pass body (big_text_body)
    made beforehand when timing others: json.dumps of 30 MiB holds this process's GIL ~0.3 s, which
    would stall the good requests' own client threads and be counted as server latency."""
    body = big_text_body(mib, word) if body is None else body
    return simple("big_word" if word else "big_text", port, body, timeout=120)


def lone_big_text(server: Server, mib: int = 30, repeats: int = 3) -> dict:
    """One mib MiB text request with nothing else in flight, repeated: its time and the server's RSS
    growth over the RSS just before it (peak: VmHWM, reset per request through /proc/PID/clear_refs)."""
    body = big_text_body(mib)
    good(server.port, good_bodies(1)[0])  # warm-up
    runs = []
    for _ in range(repeats):
        before = server.rss_mb()
        # no reset: the growth is then what is left after the request
        peak_key = "VmHWM" if server.reset_peak() else "VmRSS"
        a = big_text(server.port, mib, body=body)
        runs.append({"status": a.status, "seconds": a.seconds, "rss_growth_mb": server.rss_mb(peak_key) - before})
    return {"mib": mib, "status": [r["status"] for r in runs],
            "seconds_median": round(statistics.median(r["seconds"] for r in runs), 3),
            "rss_growth_mb_median": round(statistics.median(r["rss_growth_mb"] for r in runs), 1),
            "seconds": [round(r["seconds"], 3) for r in runs],
            "rss_growth_mb": [round(r["rss_growth_mb"], 1) for r in runs]}


def _read_answer(sock: socket.socket, timeout: float) -> tuple[int | None, bytes]:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data) < 12:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return (int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.") else None), rest
    except (OSError, ValueError, IndexError):
        return None, b""


def chunked_huge(port: int, total_mib: int = 256) -> Answer:
    """A chunked upload of total_mib MiB sent at full speed; reads the answer while sending."""
    t0 = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    result: dict = {}
    reader = threading.Thread(target=lambda: result.update(answer=_read_answer(sock, 60)), daemon=True)
    reader.start()
    chunk = b"%x\r\n" % MiB + b"[" * MiB + b"\r\n"
    sent = 0
    try:
        for _ in range(total_mib):
            sock.sendall(chunk)
            sent += 1
            if "answer" in result:
                break
        sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server stopped reading: expected once it has answered 413
    reader.join(60)
    sock.close()
    status, body = result.get("answer", (None, b""))
    return Answer("chunked_huge", status, time.perf_counter() - t0, body, note=f"sent {sent} MiB")


def long_header(port: int) -> Answer:
    """One header line of 64 MiB without a newline."""
    t0 = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    result: dict = {}
    reader = threading.Thread(target=lambda: result.update(answer=_read_answer(sock, 60)), daemon=True)
    reader.start()
    try:
        sock.sendall(b"POST /v1/embed HTTP/1.1\r\nX-Long: ")
        for _ in range(64):
            sock.sendall(b"a" * MiB)
            if "answer" in result:
                break
    except OSError:
        pass
    reader.join(60)
    sock.close()
    status, body = result.get("answer", (None, b""))
    return Answer("long_header", status, time.perf_counter() - t0, body)


class Stalled:
    """n uploads that declare a body and send it at 1 byte/s until stop()."""

    def __init__(self, port: int, n: int):
        self.stop_event = threading.Event()
        self.answers: list[Answer] = []
        self.threads = [threading.Thread(target=self._run, args=(port,), daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, port: int) -> None:
        t0 = time.perf_counter()
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n")
            while not self.stop_event.wait(1.0):
                sock.sendall(b" ")
            sock.close()
            self.answers.append(Answer("stalled", None, time.perf_counter() - t0, note="stopped by the client"))
        except OSError as e:  # the server gave up on us (408 then close): fine
            self.answers.append(Answer("stalled", None, time.perf_counter() - t0, note=f"{type(e).__name__}"))

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(10)


# -- the run ------------------------------------------------------------------------------------

def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def run_load(server: Server, n_good: int = 20, stalled: int = 8, chunked_mib: int = 256,
             text_mib: int = 30) -> dict:
    """Clean phase, then the same good requests with every hostile class in flight."""
    bodies = good_bodies(n_good)
    good(server.port, bodies[0])  # warm-up (sessions, caches of the tokenizer)
    rss_idle = server.rss_mb()
    clean = [good(server.port, b) for b in bodies]
    text_body, word_body = big_text_body(text_mib), big_text_body(text_mib, word=True)  # before any timing
    stall = Stalled(server.port, stalled)
    time.sleep(0.5)
    hostile: list[Answer] = []
    threads = [threading.Thread(target=lambda f=f: hostile.append(f()), daemon=True) for f in (
        lambda: big_text(server.port, text_mib, body=text_body),
        lambda: big_text(server.port, text_mib, word=True, body=word_body),
        lambda: deep_json(server.port), lambda: invalid_utf8(server.port),
        lambda: chunked_huge(server.port, chunked_mib), lambda: long_header(server.port))]
    for t in threads:
        t.start()
    time.sleep(0.05)
    mixed: list[Answer] = []
    t0 = time.monotonic()  # good requests for as long as any hostile one is in flight (at least n_good)
    while (len(mixed) < n_good or any(t.is_alive() for t in threads)) and time.monotonic() - t0 < 120:
        mixed.append(good(server.port, bodies[len(mixed) % len(bodies)]))
    for t in threads:
        t.join(120)
    stall.stop()
    health = request(server.port, "GET", "/healthz", timeout=10)
    return {"server": server.name, "bodies": bodies, "clean": clean, "mixed": mixed, "hostile": hostile,
            "stalled": stall.answers, "healthz": health[0], "rss_idle_mb": rss_idle,
            "rss_peak_mb": server.rss_mb("VmHWM"), "rss_end_mb": server.rss_mb()}


def slow_clients(server: Server, n: int = 12, goods: int = 5) -> dict:
    """The issue's probe: n connections at 1 byte/s, then good requests; their latencies."""
    bodies = good_bodies(goods)
    good(server.port, bodies[0])
    before = [good(server.port, b).seconds for b in bodies]
    stall = Stalled(server.port, n)
    time.sleep(1.0)
    during = [good(server.port, b, timeout=15) for b in bodies]
    stall.stop()
    return {"server": server.name, "alone_s": before, "with_stalled_s": [a.seconds for a in during],
            "statuses": [a.status for a in during]}


def summary(run: dict) -> dict:
    def ms(xs):
        return {"p50_ms": round(1000 * statistics.median(xs), 1), "p99_ms": round(1000 * percentile(xs, 0.99), 1)}

    clean, mixed = [a.seconds for a in run["clean"]], [a.seconds for a in run["mixed"]]
    return {"server": run["server"], "clean": ms(clean), "mixed": ms(mixed),
            "p99_ratio": round(percentile(mixed, 0.99) / percentile(clean, 0.99), 2),
            "hostile": {a.kind: {"status": a.status, "seconds": round(a.seconds, 2), "note": a.note}
                        for a in run["hostile"]},
            "rss_idle_mb": round(run["rss_idle_mb"]), "rss_peak_mb": round(run["rss_peak_mb"]),
            "rss_end_mb": round(run["rss_end_mb"]), "healthz": run["healthz"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--cpp-server", required=True, help="path of vlfront-http-server")
    p.add_argument("--old-cpp-server", help="an earlier vlfront-http-server binary to compare (slow clients)")
    p.add_argument("--servers", default="cpp,python")
    p.add_argument("--good", type=int, default=40)
    p.add_argument("--out", help="write the summary JSON here")
    a = p.parse_args(argv)
    report = {"machine": f"{os.cpu_count()} CPUs, shared with other work; loopback", "runs": []}
    starters = {"cpp": lambda: start_cpp(a.cpp_server, a.bundle), "python": lambda: start_python(a.bundle)}
    if a.old_cpp_server:
        starters["cpp-old"] = lambda: start_cpp(a.old_cpp_server, a.bundle)
    for name in a.servers.split(","):
        server = starters[name]()
        try:
            lone = lone_big_text(server)  # first, on a fresh server: no memory left over from the load
            if name != "cpp-old":
                s = summary(run_load(server, n_good=a.good))
            else:
                s = {"server": name}
            s["lone_30mib_text"] = lone
            s["slow_clients"] = {k: v for k, v in slow_clients(server).items() if k != "server"}
            report["runs"].append(s)
            print(json.dumps(s), flush=True)
        finally:
            server.stop()
    if a.out:
        pathlib.Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
