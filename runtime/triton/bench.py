"""`make bench-triton`: Triton vs the Starlette example server, and two Triton replicas sharing one Redis.

    python -m vlfront.runtime.triton.bench --bundle build/default --out build/bench-triton

1. Throughput and latency at concurrency 1, 8, 32 of one Triton server (python backend, one
   instance; tritonclient gRPC, or --protocol http) and of examples/server.py (http.client), on
   the same bundle, same max batch (8) and batching delay (5 ms). Rounds alternate between the two servers so that load from other processes hits both
   alike. Real photos (scikit-image), cache off: every request carries a photo whose bytes are new
   (a counter appended after the JPEG end marker, which decoders ignore), so no cache can hit.
2. Two Triton replicas, one Redis, repeated images round-robin: each image is asked of replica A,
   then B, then A, B; B's first answer for an image is a cross-replica (Redis) hit. Redis's own
   keyspace counters give the hit rate; the client's latencies (gRPC) give hit vs miss; the same
   workload on two Runtime objects without Triton shows what the cache saves inside a replica. Replica B's own
   Triton statistics (queue + compute_input + compute_infer + compute_output, read around each of its requests;
   each photo also gets a fresh copy sent to B, a miss there) give hit vs miss at the model, without the client
   transfer; --shm repeats miss/hit with inputs_embeds in a system shared-memory region. Requests go one at a
   time, so these replicas run with max_queue_delay 0 (no batch would fill; a delay would only add
   the same wait to hits and misses).
3. The same workload with Redis killed half-way: the count of failed requests.

--images-input tensor sends the replicas' photos in the `images` input instead of as image_base64
(same photos, same JSON otherwise): what the base64 parse and its larger transfer cost.

Results: a JSON file and a printed table; figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import http.client
import io
import json
import os
import pathlib
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np

from vlfront.runtime.triton.repository import RepositoryOptions, write_repository
from vlfront.runtime.triton.request import encode_request, encode_request_images
from vlfront.runtime.triton.services import RedisServer, TritonServer, free_port

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def photos(mp: float | None = None) -> list[bytes]:
    """The workload's photos: scikit-image samples as JPEG q90, or camera-size versions of them
    (`mp` megapixels, made as `vlfront bench` makes its camera photos: upscaled + sensor noise)."""
    from PIL import Image
    from skimage import data

    if mp:
        from vlfront.runtime.bench_photos import PHOTOS as CAMERA_SOURCES, camera_photo

        return [camera_photo(mp, "JPEG", name, seed=k) for k, name in enumerate(CAMERA_SOURCES)]
    out = []
    for name in PHOTOS:
        buf = io.BytesIO()
        Image.fromarray(getattr(data, name)()).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def unique_bodies(n: int, base: list[bytes], start: int, images_input: str = "base64") -> list:
    """n request bodies, each with a photo whose bytes no earlier request had (a cache can never hit).

    images_input "base64": JSON bytes with image_base64; "tensor": (JSON bytes, [the photo]) for the
    `images` input, the JSON naming it by image_index."""
    encode = encode_request_images if images_input == "tensor" else encode_request
    return [encode([{"role": "user", "content": [
        {"type": "image", "image": base[i % len(base)] + b"vlfront-bench-%d" % (start + i)},
        {"type": "text", "text": "Describe this picture."}]}]) for i in range(n)]


def triton_inputs(client_module, body) -> list:
    """The InferInputs of one body from `unique_bodies`: `request`, and `images` when it has files."""
    json_body, files = body if isinstance(body, tuple) else (body, None)
    inp = client_module.InferInput("request", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[json_body]], dtype=object))
    if files is None:
        return [inp]
    images = client_module.InferInput("images", [1, len(files)], "BYTES")
    images.set_data_from_numpy(np.array([files], dtype=object))
    return [inp, images]


class TritonClient:
    def __init__(self, url: str):
        import tritonclient.http as http

        self.http = http
        self.local = threading.local()
        self.url = url

    def __call__(self, body: bytes) -> np.ndarray:
        c = getattr(self.local, "client", None)
        if c is None:
            c = self.local.client = self.http.InferenceServerClient(self.url)
        out = [self.http.InferRequestedOutput("inputs_embeds")]  # all the bench reads, as RawHttpClient
        return c.infer("vlfront", triton_inputs(self.http, body), outputs=out).as_numpy("inputs_embeds")


class TritonGrpcClient:
    def __init__(self, url: str):
        import tritonclient.grpc as grpc

        self.grpc = grpc
        self.local = threading.local()
        self.url = url

    def __call__(self, body: bytes) -> np.ndarray:
        c = getattr(self.local, "client", None)
        if c is None:
            c = self.local.client = self.grpc.InferenceServerClient(self.url)
        out = [self.grpc.InferRequestedOutput("inputs_embeds")]  # all the bench reads, as RawHttpClient
        return c.infer("vlfront", triton_inputs(self.grpc, body), outputs=out).as_numpy("inputs_embeds")


class RawHttpClient:
    """Triton's HTTP/REST endpoint through http.client, the same client library as StarletteClient:
    KServe v2 with Triton's binary-tensor extension (the JSON header, then the raw tensors; the answer's
    inputs_embeds comes back as raw bytes after its JSON header). Only inputs_embeds is asked for, as
    the Starlette server sends only it. So both servers are driven by equal client code, and the
    client's own CPU on the shared two cores (tritonclient's gRPC client costs ~1 ms more per 3 MB
    answer) does not count against one server."""

    def __init__(self, url: str, model: str = "vlfront"):
        host, _, port = url.rpartition(":")
        self.host, self.port, self.path = host.split("//")[-1], int(port), f"/v2/models/{model}/infer"
        self.local = threading.local()

    @staticmethod
    def _bytes_tensor(items) -> bytes:
        from tritonclient.utils import serialize_byte_tensor  # Triton's BYTES layout: 4-byte length, bytes

        return serialize_byte_tensor(np.array(items, dtype=object)).item()

    def __call__(self, body) -> np.ndarray:
        json_body, files = body if isinstance(body, tuple) else (body, None)
        tensors = [("request", [1, 1], self._bytes_tensor([json_body]))]
        if files is not None:
            tensors.append(("images", [1, len(files)], self._bytes_tensor(files)))
        head = json.dumps({"inputs": [{"name": n, "shape": s, "datatype": "BYTES",
                                       "parameters": {"binary_data_size": len(d)}} for n, s, d in tensors],
                           "outputs": [{"name": "inputs_embeds", "parameters": {"binary_data": True}}]}).encode()
        c = getattr(self.local, "conn", None)
        if c is None:
            c = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        c.request("POST", self.path, b"".join([head, *(d for _, _, d in tensors)]),
                  {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))})
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
        n = int(r.getheader("Inference-Header-Content-Length") or 0)
        out = json.loads(data[:n])["outputs"][0]
        dtype = {"FP32": np.float32, "FP16": np.float16}[out["datatype"]]
        return np.frombuffer(data, dtype, offset=n).reshape(out["shape"])


class StarletteClient:
    def __init__(self, port: int):
        import http.client

        self.httpc = http.client
        self.port = port
        self.local = threading.local()

    def __call__(self, body: bytes) -> np.ndarray:
        c = getattr(self.local, "conn", None)
        if c is None:
            c = self.local.conn = self.httpc.HTTPConnection("127.0.0.1", self.port, timeout=120)
        c.request("POST", "/v1/embed", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
        return np.load(io.BytesIO(data))


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants so far (Linux /proc; the
    tritonserver's python-backend stubs are its children)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick)  # ppid, utime + stime
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo.extend(c for c, (ppid, _) in stats.items() if ppid == p)
    return total


def run_load(call, bodies: list[bytes], concurrency: int, server_pid: int | None = None) -> dict:
    """`bodies` through `call` from `concurrency` threads: req/s, p50/p99 ms, errors; with server_pid,
    also the CPU ms per request of that server (its process tree) and of this client process."""
    latencies, errors = [], 0

    def one(body):
        t0 = time.perf_counter()
        call(body)
        return time.perf_counter() - t0

    cpu0 = tree_cpu_s(server_pid) if server_pid else None
    own0 = time.process_time()
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(one, b) for b in bodies]:
            try:
                latencies.append(f.result())
            except Exception:  # noqa: BLE001 — counted
                errors += 1
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    res = {"rps": len(latencies) / wall, "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
           "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None, "errors": errors,
           "client_cpu_ms": (time.process_time() - own0) * 1000 / len(bodies)}
    if cpu0 is not None:
        res["server_cpu_ms"] = (tree_cpu_s(server_pid) - cpu0) * 1000 / len(bodies)
    return res


class StarletteServer:
    def __init__(self, bundle):
        self.port = free_port()
        script = pathlib.Path(__file__).resolve().parents[2] / "examples" / "server.py"
        self.proc = subprocess.Popen([sys.executable, str(script), "--bundle", str(bundle), "--port", str(self.port),
                                      "--max-batch", "8", "--max-wait-ms", "5"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("the example server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def throughput_client(protocol: str, triton) -> object:
    if protocol == "grpc":
        return TritonGrpcClient(triton.grpc_url)
    return TritonClient(triton.http_url) if protocol == "http" else RawHttpClient(triton.http_url)


def throughput(bundle, out: pathlib.Path, rounds: int, concurrencies, base, protocol: str = "raw-http",
               requests: int = 96, instances: int = 1) -> list[dict]:
    """Rounds of max(requests, 8 * c) requests at each concurrency c, alternating which server goes first,
    after a warm-up of `requests` requests each at concurrency 8."""
    repo = write_repository(bundle, out / "repo-throughput",
                            RepositoryOptions(max_batch=8, max_queue_delay_us=5000, instances=instances), force=True)
    triton, starlette = TritonServer(repo).start(), StarletteServer(bundle)
    clients = {"triton": (throughput_client(protocol, triton), triton.proc.pid),
               "starlette": (StarletteClient(starlette.port), starlette.proc.pid)}
    rows, counter = [], 0
    try:
        for name, (call, _) in clients.items():  # warm-up: ORT sessions, connections, malloc arenas
            run_load(call, unique_bodies(requests, base, counter), 8)
            counter += requests
        for c in concurrencies:
            n = max(requests, 8 * c)
            for r in range(rounds):
                order = list(clients.items()) if r % 2 == 0 else list(clients.items())[::-1]
                for name, (call, pid) in order:
                    res = run_load(call, unique_bodies(n, base, counter), c, server_pid=pid)
                    counter += n
                    rows.append({"server": name, "concurrency": c, "round": r, "requests": n, **res})
                    print(f"  {name:9s} c={c:2d} round {r}: {res['rps']:.1f} req/s p50 {res['p50_ms']:.0f} ms "
                          f"p99 {res['p99_ms']:.0f} ms errors {res['errors']}; CPU ms/request: server "
                          f"{res['server_cpu_ms']:.1f}, client {res['client_cpu_ms']:.1f}", flush=True)
    finally:
        triton.stop()
        starlette.stop()
    return rows


class ModelStats:
    """Triton's own per-model statistics (tritonclient `get_inference_statistics`), as deltas.

    Triton counts, per model, the time each request spent queued and in compute_input (the backend
    taking the inputs), compute_infer (`execute`) and compute_output (the backend handing the outputs
    to Triton). Their sum is what a request costs at the model, without the client transfer: what an
    ensemble or BLS step inside the same Triton (the LLM next to it) would see.
    """

    FIELDS = ("queue", "compute_input", "compute_infer", "compute_output")

    def __init__(self, url: str, model: str = "vlfront"):
        import tritonclient.grpc as grpc

        self.client = grpc.InferenceServerClient(url)
        self.model = model

    def snapshot(self) -> dict[str, tuple[int, int]]:
        stats = self.client.get_inference_statistics(self.model, as_json=True)["model_stats"][0]["inference_stats"]
        return {f: (int(stats.get(f, {}).get("count", 0)), int(stats.get(f, {}).get("ns", 0))) for f in self.FIELDS}

    @staticmethod
    def delta_ms(before: dict, after: dict) -> dict[str, float]:
        """Per request ms of each field over the requests between two snapshots, and their sum as `model`."""
        out = {}
        for f in ModelStats.FIELDS:
            n = after[f][0] - before[f][0]
            out[f] = (after[f][1] - before[f][1]) / n / 1e6 if n else 0.0
        out["model"] = sum(out[f] for f in ModelStats.FIELDS)
        return out


class ShmGrpcClient:
    """gRPC client whose inputs_embeds output lands in a registered system shared-memory region
    (tritonclient.utils.shared_memory): Triton writes the 3 MB output there instead of into the gRPC
    response. Only inputs_embeds is asked for."""

    def __init__(self, url: str, nbytes: int, name: str):
        import tritonclient.grpc as grpc
        import tritonclient.utils.shared_memory as shm

        self.grpc, self.shm = grpc, shm
        self.client = grpc.InferenceServerClient(url)
        self.nbytes, self.name = nbytes, name
        self.key = f"/{name}"
        self.handle = shm.create_shared_memory_region(name, self.key, nbytes)
        self.client.unregister_system_shared_memory(name)
        self.client.register_system_shared_memory(name, self.key, nbytes)

    def __call__(self, body, shape, dtype) -> np.ndarray:
        out = self.grpc.InferRequestedOutput("inputs_embeds")
        out.set_shared_memory(self.name, self.nbytes)
        self.client.infer("vlfront", triton_inputs(self.grpc, body), outputs=[out])
        return self.shm.get_contents_as_numpy(self.handle, dtype, shape)

    def close(self) -> None:
        try:
            self.client.unregister_system_shared_memory(self.name)
        finally:
            self.shm.destroy_shared_memory_region(self.handle)


def replicas(bundle, out: pathlib.Path, base, images: int, kill_redis: bool, output_dtype: str = "float32",
             model_stats: bool = False, shm: bool = False, images_input: str = "base64",
             protocol: str = "raw-http") -> dict:
    """The round-robin workload. With model_stats, each image also gets a fresh copy sent to B (a miss
    at B), and B's Triton statistics are read around each of B's requests: the model-level miss and
    cross-replica hit on the same replica. With shm, the same miss/cross-hit pair is repeated with
    the output bound to a system shared-memory region."""
    import redis

    with RedisServer(maxmemory="512mb") as rs:
        repo = write_repository(bundle, out / "repo-replicas",
                                RepositoryOptions(max_batch=8, max_queue_delay_us=0, cache=rs.url,
                                                  output_dtype=output_dtype), force=True)
        with TritonServer(repo) as a, TritonServer(repo) as b:
            ca, cb = throughput_client(protocol, a), throughput_client(protocol, b)
            tag = int(time.time())
            bodies = [unique_bodies(1, base, tag * 1000 + i, images_input)[0] for i in range(images)]
            fresh = [unique_bodies(1, base, tag * 1000 + 20_000 + i, images_input)[0] for i in range(images)]
            shm_bodies = [unique_bodies(1, base, tag * 1000 + 30_000 + i, images_input)[0] for i in range(images)]
            for warm in unique_bodies(4, base, tag * 1000 + 10_000, images_input):
                ref = ca(warm)
                cb(warm)
            stats_b = ModelStats(b.grpc_url) if model_stats else None
            r = redis.Redis.from_url(rs.url)
            hits0 = int(r.info("stats")["keyspace_hits"])
            lat = {"miss": [], "cross_hit": [], "local_hit": []}
            if model_stats:
                lat["miss_at_b"] = []
            model = {"miss": [], "cross_hit": []}
            errors = 0
            for i, body in enumerate(bodies):
                if kill_redis and i == images // 2:
                    rs.kill()
                steps = [("miss", ca, body), ("cross_hit", cb, body), ("local_hit", ca, body), ("local_hit", cb, body)]
                if model_stats:
                    steps.append(("miss_at_b", cb, fresh[i]))
                for kind, call, req in steps:
                    snap = stats_b.snapshot() if stats_b is not None and call is cb else None
                    t0 = time.perf_counter()
                    try:
                        call(req)
                        lat[kind].append((time.perf_counter() - t0) * 1000)
                    except Exception:  # noqa: BLE001 — counted
                        errors += 1
                        continue
                    if snap is not None and kind in ("cross_hit", "miss_at_b"):
                        model["miss" if kind == "miss_at_b" else kind].append(ModelStats.delta_ms(snap, stats_b.snapshot()))
            hits = None if kill_redis else int(r.info("stats")["keyspace_hits"]) - hits0
            shm_res = _shm_pair(ca, cb, a, b, shm_bodies, ref) if shm and not kill_redis else None
    med = {k: statistics.median(v) if v else None for k, v in lat.items()}
    res = {"images": images, "requests": sum(len(v) for v in lat.values()) + errors, "output_dtype": output_dtype,
           "images_input": images_input,
           "errors": errors, "redis_killed_at": images // 2 if kill_redis else None, "p50_ms": med}
    if not kill_redis:
        res["cross_replica_hit_rate"] = hits / images
        res["hit_speedup"] = med["miss"] / med["cross_hit"]
    if model_stats and model["miss"] and model["cross_hit"]:
        res["model_p50_ms"] = {k: {f: statistics.median(d[f] for d in v) for f in (*ModelStats.FIELDS, "model")}
                               for k, v in model.items()}
        res["model_hit_speedup"] = res["model_p50_ms"]["miss"]["model"] / res["model_p50_ms"]["cross_hit"]["model"]
        res["hit_speedup_at_b"] = med["miss_at_b"] / med["cross_hit"]
    if shm_res is not None:
        res["shm_output"] = shm_res
    return res


def _shm_pair(ca, cb, a, b, bodies, ref: np.ndarray) -> dict:
    """Miss at A then cross-replica hit at B, each with inputs_embeds written into a client-registered
    system shared-memory region; the hit's array is checked equal to the plain gRPC answer's layout."""
    try:
        sa = ShmGrpcClient(a.grpc_url, ref.nbytes, f"vlfront_bench_a_{id(bodies)}")
        sb = ShmGrpcClient(b.grpc_url, ref.nbytes, f"vlfront_bench_b_{id(bodies)}")
    except Exception as e:  # noqa: BLE001 — reported, not fatal
        return {"error": f"{type(e).__name__}: {e}"}
    lat = {"miss": [], "cross_hit": []}
    try:
        for body in bodies:
            plain = None
            for kind, call in (("miss", sa), ("cross_hit", sb)):
                t0 = time.perf_counter()
                arr = call(body, ref.shape, ref.dtype)
                lat[kind].append((time.perf_counter() - t0) * 1000)
                if kind == "miss":
                    plain = arr.copy()
                elif not np.array_equal(arr, plain):
                    return {"error": "shared-memory output of the hit differs from the miss"}
    except Exception as e:  # noqa: BLE001 — reported, not fatal
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        sa.close(), sb.close()
    med = {k: statistics.median(v) for k, v in lat.items()}
    return {"p50_ms": med, "hit_speedup": med["miss"] / med["cross_hit"], "checked_equal": True}


def runtime_replicas(bundle, base, images: int, images_input: str = "base64") -> dict:
    """The same round-robin workload on two Runtime objects sharing one Redis, without Triton in between:
    what the cache saves inside a replica (Triton adds the same transport cost to hits and misses)."""
    from vlfront.runtime import Runtime
    from vlfront.runtime.triton.request import parse_request

    with RedisServer(maxmemory="512mb") as rs:
        a, b = (Runtime.load(bundle, cache=rs.url) for _ in range(2))
        lat = {"miss": [], "cross_hit": [], "local_hit": []}
        for body in unique_bodies(images, base, int(time.time()) * 1000 + 50_000, images_input):
            req = parse_request(body[0], images=body[1]) if isinstance(body, tuple) else parse_request(body)
            for kind, rt in (("miss", a), ("cross_hit", b), ("local_hit", a)):
                t0 = time.perf_counter()
                rt.embed([req])
                lat[kind].append((time.perf_counter() - t0) * 1000)
        hits = b.stats()["shared_cache"]["hits"]
        a.close(), b.close()
    med = {k: statistics.median(v) for k, v in lat.items()}
    return {"images": images, "p50_ms": med, "cross_replica_hit_rate": hits / images,
            "hit_speedup": med["miss"] / med["cross_hit"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", default="build/default")
    p.add_argument("--out", default="build/bench-triton")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--instances", type=int, default=1,
                   help="throughput: Triton model instances (stub processes, each with its own runtime)")
    p.add_argument("--requests", type=int, default=96,
                   help="throughput: requests per round (at least 8 per client thread) and of the warm-up")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--images", type=int, default=24, help="distinct images of the replica workload")
    p.add_argument("--replica-output-dtype", default="float32", choices=["float32", "float16"],
                   help="inputs_embeds type of the replica repositories (float16 halves what Triton moves)")
    p.add_argument("--parts", default="throughput,replicas", help="which parts to run (comma-separated)")
    p.add_argument("--photo-mp", type=float, default=None,
                   help="camera-size photos of this many megapixels instead of the native samples")
    p.add_argument("--shm", action="store_true",
                   help="replicas: also time miss/hit with inputs_embeds bound to a system shared-memory region")
    p.add_argument("--images-input", default="base64", choices=["base64", "tensor"],
                   help="replicas: photos as image_base64 in the JSON (the SPEC body) or in the `images` input tensor")
    p.add_argument("--protocol", default="raw-http", choices=["raw-http", "grpc", "http"],
                   help="Triton client for the throughput and replica runs: raw-http (http.client + the binary-tensor "
                        "extension, the Starlette client's library), grpc or http (tritonclient)")
    a = p.parse_args(argv)
    # The client's malloc as the servers' (runtime/memory.py): each answer is a fresh 3 MB buffer; without this
    # every one is an mmap whose pages fault in (the same cost on hits and misses, and on every server).
    from vlfront.runtime.memory import tune_malloc

    tune_malloc()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    base = photos(a.photo_mp)
    parts = set(a.parts.split(","))
    result = {"protocol": a.protocol, "photo_mp": a.photo_mp or "native samples", "images_input": a.images_input, "note": "medians over rounds; the machine is shared with other jobs"}
    if "throughput" in parts:
        result.update(_throughput_part(a, out, base))
    if "replicas" in parts:
        result.update(_replicas_part(a, out, base))
    (out / "bench_triton.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'bench_triton.json'}")


def _throughput_part(a, out, base) -> dict:
    print("[bench-triton] Triton vs Starlette (cache off, real photos)", flush=True)
    rows = throughput(a.bundle, out, a.rounds, [int(c) for c in a.concurrency.split(",")], base, a.protocol,
                      a.requests, a.instances)
    summary = []
    for c in sorted({r["concurrency"] for r in rows}):
        med = {s: {k: statistics.median(r[k] for r in rows if r["server"] == s and r["concurrency"] == c)
                   for k in ("rps", "p50_ms", "p99_ms", "server_cpu_ms", "client_cpu_ms")}
               for s in ("triton", "starlette")}
        errs = sum(r["errors"] for r in rows if r["concurrency"] == c)
        summary.append({"concurrency": c, **{f"{s}_{k}": v for s in med for k, v in med[s].items()},
                        "ratio": med["triton"]["rps"] / med["starlette"]["rps"],
                        "cpu_ratio": med["starlette"]["server_cpu_ms"] / med["triton"]["server_cpu_ms"],
                        "errors": errs})
    print(f"\nTriton client: {a.protocol}; medians of {a.rounds} rounds. server CPU = CPU ms per request of the "
          "server's process tree (tritonserver + stub; uvicorn + parsers); its ratio is starlette/triton")
    print("concurrency | triton req/s p50/p99 ms | starlette req/s p50/p99 ms | triton/starlette | server CPU ms "
          "triton/starlette (ratio)")
    for s in summary:
        print(f"{s['concurrency']:11d} | {s['triton_rps']:6.1f} {s['triton_p50_ms']:6.0f}/{s['triton_p99_ms']:<6.0f} | "
              f"{s['starlette_rps']:6.1f} {s['starlette_p50_ms']:6.0f}/{s['starlette_p99_ms']:<6.0f} | "
              f"{s['ratio']:.2f}x            | {s['triton_server_cpu_ms']:.1f}/{s['starlette_server_cpu_ms']:.1f} "
              f"({s['cpu_ratio']:.2f}x)")
    return {"throughput_rounds": rows, "throughput": summary}


def _replicas_part(a, out, base) -> dict:
    print(f"[bench-triton] two replicas, one Redis (photos as {a.images_input}, client {a.protocol})", flush=True)
    shared = replicas(a.bundle, out, base, a.images, kill_redis=False, output_dtype=a.replica_output_dtype,
                      model_stats=True, shm=a.shm, images_input=a.images_input, protocol=a.protocol)
    killed = replicas(a.bundle, out, base, a.images, kill_redis=True, output_dtype=a.replica_output_dtype,
                      images_input=a.images_input, protocol=a.protocol)
    inside = runtime_replicas(a.bundle, base, a.images, a.images_input)
    print(f"replicas: cross-replica hit rate {shared['cross_replica_hit_rate']:.2f}, p50 miss "
          f"{shared['p50_ms']['miss']:.1f} ms, cross-replica hit {shared['p50_ms']['cross_hit']:.1f} ms "
          f"({shared['hit_speedup']:.1f}x), local hit {shared['p50_ms']['local_hit']:.1f} ms")
    if "model_p50_ms" in shared:
        m = shared["model_p50_ms"]
        print(f"at the model (replica B's Triton statistics, queue+compute_input+compute_infer+compute_output): "
              f"miss {m['miss']['model']:.1f} ms (infer {m['miss']['compute_infer']:.1f}, output "
              f"{m['miss']['compute_output']:.2f}), cross-replica hit {m['cross_hit']['model']:.1f} ms (infer "
              f"{m['cross_hit']['compute_infer']:.1f}, output {m['cross_hit']['compute_output']:.2f}) "
              f"({shared['model_hit_speedup']:.1f}x); end to end at B: miss {shared['p50_ms']['miss_at_b']:.1f} ms "
              f"vs hit ({shared['hit_speedup_at_b']:.1f}x)")
    if "shm_output" in shared:
        s = shared["shm_output"]
        if "error" in s:
            print(f"system shared-memory output: failed: {s['error']}")
        else:
            print(f"system shared-memory output: p50 miss {s['p50_ms']['miss']:.1f} ms, cross-replica hit "
                  f"{s['p50_ms']['cross_hit']:.1f} ms ({s['hit_speedup']:.1f}x)")
    print(f"inside a replica (Runtime, no Triton): p50 miss {inside['p50_ms']['miss']:.1f} ms, cross-replica hit "
          f"{inside['p50_ms']['cross_hit']:.1f} ms ({inside['hit_speedup']:.1f}x), hit rate "
          f"{inside['cross_replica_hit_rate']:.2f}")
    print(f"Redis killed after {killed['redis_killed_at']} of {killed['images']} images: "
          f"{killed['errors']} failed of {killed['requests']} requests")
    return {"replicas": shared, "redis_killed": killed, "runtime_replicas": inside}


if __name__ == "__main__":
    main()
