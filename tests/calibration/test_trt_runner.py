"""The TensorRT runner's logic on the CPU, with fake engines, contexts and device memory.

What a GPU would add is TensorRT itself; what is tested here is ours: one execution context per
concurrent caller, batches split to the profile, placeholders for empty tensors, and every TensorRT
call's result checked.
"""

import threading
import time

import numpy as np
import pytest

from vlfront.config import IMAGE_PAD_ID
from vlfront.errors import EngineError, VlfrontError
from vlfront.runtime.backends.trt_exec import ContextPool, EngineRunner, split_feeds

TPI, D, SEQ = 4, 3, 24  # tokens per image, hidden size, sequence length of the fake graphs


class FakeDevice:
    """Device memory as numpy arrays behind integer addresses (0 is never handed out)."""

    def __init__(self):
        self.mem, self.next, self.lock = {}, 0x1000, threading.Lock()

    def stream(self):
        return object()

    def handle(self, stream):
        return id(stream)

    def upload(self, array, stream):
        return array.copy()

    def empty(self, shape, dtype, stream):
        return np.full(shape, np.nan, dtype) if np.dtype(dtype).kind == "f" else np.zeros(shape, dtype)

    def address(self, buf, keep):
        if buf.size == 0:
            buf = np.zeros(1, np.uint8)
            keep.append(buf)
        with self.lock:
            addr, self.next = self.next, self.next + 0x100
            self.mem[addr] = buf
        return addr

    def synchronize(self, stream):
        pass

    def download(self, buf):
        return buf.copy()


def patch_embed(feeds):
    px = feeds["pixel_values"].astype(np.float32)
    return {"visual_tokens": px.mean(axis=(1, 2, 3))[:, None, None] + np.arange(TPI * D, dtype=np.float32).reshape(TPI, D)}


def fusion(feeds):
    """The fused graph's rule: the k-th pad of the (flattened) batch takes visual row k."""
    ids, visual = feeds["input_ids"], feeds["visual_tokens"].reshape(-1, D)
    out = np.repeat(ids[..., None].astype(np.float32), D, axis=-1)
    pads = ids == IMAGE_PAD_ID
    out[pads] = visual[:pads.sum()] if len(visual) >= pads.sum() else np.nan
    return {"inputs_embeds": out}


GRAPHS = {
    "patch_embed": ({"pixel_values": ("uint8", lambda s: None)}, {"visual_tokens": "float32"}, patch_embed,
                    lambda shapes: (shapes["pixel_values"][0], TPI, D)),
    "fusion": ({"input_ids": ("int64", None), "visual_tokens": ("float32", None)}, {"inputs_embeds": "float32"}, fusion,
               lambda shapes: (shapes["input_ids"][0], SEQ, D)),
}


class FakeEngine:
    def __init__(self, graph, device):
        self.inputs, self.outputs, self.compute, self.shape_of = GRAPHS[graph]
        self.device = device
        self.names = list(self.inputs) + list(self.outputs)
        self.clashes = self.launches = self.contexts = 0
        self.refuse = set()  # names of the calls that return False
        self.bad_output_shape = False

    num_io_tensors = property(lambda self: len(self.names))

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return "in" if name in self.inputs else "out"

    def get_tensor_dtype(self, name):
        return self.inputs[name][0] if name in self.inputs else self.outputs[name]

    def create_execution_context(self):
        self.contexts += 1
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addr, self.busy = engine, {}, {}, False

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return "set_input_shape" not in self.engine.refuse

    def set_tensor_address(self, name, address):
        if address == 0 or "set_tensor_address" in self.engine.refuse:
            return False  # TensorRT refuses a null address
        self.addr[name] = address
        return True

    def get_tensor_shape(self, name):
        shape = self.engine.shape_of(self.shapes)
        return (shape[0], shape[1] + 1, shape[2]) if self.engine.bad_output_shape else shape

    def execute_async_v3(self, stream_handle):
        e = self.engine
        if self.busy:
            e.clashes += 1  # two threads inside one context: what the pool must prevent
        self.busy = True
        time.sleep(0.001)
        mem = e.device.mem
        feeds = {n: (mem[self.addr[n]].reshape(self.shapes[n]) if np.prod(self.shapes[n]) else
                     np.zeros(self.shapes[n], e.inputs[n][0])) for n in e.inputs}
        for name, value in e.compute(feeds).items():
            mem[self.addr[name]][...] = value
        e.launches += 1
        self.busy = False
        return "execute_async_v3" not in e.refuse


def make_runner(graph, contexts=2, max_images=3, max_rows=2):
    device = FakeDevice()
    engine = FakeEngine(graph, device)
    profile = ({"pixel_values": {"min": [1, 2, 2, 3], "opt": [2, 2, 2, 3], "max": [max_images, 2, 2, 3]}}
               if graph == "patch_embed" else
               {"input_ids": {"min": [1, SEQ], "opt": [2, SEQ], "max": [max_rows, SEQ]},
                "visual_tokens": {"min": [0, TPI, D], "opt": [2, TPI, D], "max": [max_images, TPI, D]}})
    entry = {"file": f"engines/{graph}.plan", "profile": profile}
    outputs = {"visual_tokens": ["N", TPI, D]} if graph == "patch_embed" else {"inputs_embeds": ["B", SEQ, D]}
    runner = EngineRunner(engine, entry, device, is_input=lambda mode: mode == "in", dtype_of=np.dtype,
                          outputs=outputs, tokens_per_image=TPI, contexts=contexts)
    return runner, engine


def fusion_batch(images_per_row, rng):
    ids = rng.integers(0, 1000, size=(len(images_per_row), SEQ)).astype(np.int64)
    for b, n in enumerate(images_per_row):
        for k in range(n):
            ids[b, 1 + k * (TPI + 2):1 + k * (TPI + 2) + TPI] = IMAGE_PAD_ID
    visual = rng.standard_normal((sum(images_per_row), TPI, D)).astype(np.float32)
    return {"input_ids": ids, "visual_tokens": visual}


def test_patch_embed_beyond_the_profile_runs_in_launches_and_matches_one_launch():
    runner, engine = make_runner("patch_embed", max_images=3)
    px = np.random.default_rng(0).integers(0, 256, size=(8, 2, 2, 3), dtype=np.uint8)
    got = runner.run("patch_embed", {"pixel_values": px})["visual_tokens"]
    assert engine.launches == 3  # 3 + 3 + 2 images
    np.testing.assert_array_equal(got, patch_embed({"pixel_values": px})["visual_tokens"])


def test_fusion_splits_between_requests_keeping_each_requests_images():
    runner, engine = make_runner("fusion", max_images=3, max_rows=2)
    feeds = fusion_batch([1, 2, 0, 3, 1, 0, 0], np.random.default_rng(1))
    parts = split_feeds("fusion", feeds, runner.entry, TPI)
    assert [len(p["input_ids"]) for p in parts] == [2, 2, 2, 1]  # at most 2 requests and 3 images a launch
    assert [len(p["visual_tokens"]) for p in parts] == [3, 3, 1, 0]
    got = runner.run("fusion", feeds)["inputs_embeds"]
    assert engine.launches == 4
    np.testing.assert_array_equal(got, fusion(feeds)["inputs_embeds"])


def test_a_malformed_fusion_batch_is_not_split_and_the_profile_names_the_limit():
    runner, _ = make_runner("fusion", max_images=3, max_rows=2)
    feeds = fusion_batch([1, 2, 1], np.random.default_rng(2))
    feeds["visual_tokens"] = feeds["visual_tokens"][:2]  # fewer images than the pads announce
    assert split_feeds("fusion", feeds, runner.entry, TPI) == [feeds]
    with pytest.raises(VlfrontError, match=r"input input_ids has shape \[3, 24\].*--max-batch"):
        runner.run("fusion", feeds)


def test_a_text_only_batch_gets_a_placeholder_address_not_null():
    runner, engine = make_runner("fusion")
    feeds = fusion_batch([0, 0], np.random.default_rng(3))
    assert feeds["visual_tokens"].shape == (0, TPI, D)
    got = runner.run("fusion", feeds)["inputs_embeds"]
    np.testing.assert_array_equal(got, np.repeat(feeds["input_ids"][..., None].astype(np.float32), D, axis=-1))


@pytest.mark.parametrize("contexts", [1, 2, 3])
def test_concurrent_callers_never_share_an_execution_context(contexts):
    runner, engine = make_runner("patch_embed", contexts=contexts, max_images=4)
    errors, rng = [], np.random.default_rng(4)
    batches = [rng.integers(0, 256, size=(int(n), 2, 2, 3), dtype=np.uint8) for n in rng.integers(1, 9, size=64)]

    def work(chunk):
        try:
            for px in chunk:
                got = runner.run("patch_embed", {"pixel_values": px})["visual_tokens"]
                np.testing.assert_array_equal(got, patch_embed({"pixel_values": px})["visual_tokens"])
        except Exception as e:  # reported below, with the thread's failure
            errors.append(e)

    threads = [threading.Thread(target=work, args=(batches[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert engine.clashes == 0
    assert 1 <= engine.contexts <= contexts and runner.pool.made == engine.contexts


def test_a_shared_context_without_the_pool_does_clash():
    """The control: the fake does detect two threads in one context (so the test above means something)."""
    _, engine = make_runner("patch_embed")
    context = engine.create_execution_context()
    device = engine.device
    px = np.zeros((1, 2, 2, 3), np.uint8)
    context.set_input_shape("pixel_values", px.shape)
    context.set_tensor_address("pixel_values", device.address(px, []))
    context.set_tensor_address("visual_tokens", device.address(np.zeros((1, TPI, D), np.float32), []))
    threads = [threading.Thread(target=lambda: [context.execute_async_v3(0) for _ in range(20)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engine.clashes > 0


@pytest.mark.parametrize("call, message", [
    ("set_input_shape", r"refused the shape \[2, 2, 2, 3\] of input pixel_values"),
    ("set_tensor_address", "refused the device address of tensor pixel_values"),
    ("execute_async_v3", "TensorRT execution failed"),
])
def test_every_tensorrt_call_result_is_checked(call, message):
    runner, engine = make_runner("patch_embed")
    engine.refuse.add(call)
    with pytest.raises(EngineError, match=message):
        runner.run("patch_embed", {"pixel_values": np.zeros((2, 2, 2, 3), np.uint8)})
    engine.refuse.clear()  # the failed call gave its context back: the runner still works
    assert runner.run("patch_embed", {"pixel_values": np.zeros((2, 2, 2, 3), np.uint8)})["visual_tokens"].shape == \
        (2, TPI, D)


def test_output_shapes_are_compared_with_the_graph_and_dtypes_with_the_engine():
    runner, engine = make_runner("patch_embed")
    engine.bad_output_shape = True
    with pytest.raises(EngineError, match=r"reports output visual_tokens of shape \[1, 5, 3\], the graph's is "
                                          r"\['N', 4, 3\]"):
        runner.run("patch_embed", {"pixel_values": np.zeros((1, 2, 2, 3), np.uint8)})
    runner, _ = make_runner("patch_embed")
    with pytest.raises(EngineError, match="engine's input pixel_values is uint8, the graph's is float32"):
        runner.run("patch_embed", {"pixel_values": np.zeros((1, 2, 2, 3), np.float32)})


def test_the_pool_refuses_zero_contexts_and_gives_back_a_slot_when_creation_fails():
    with pytest.raises(VlfrontError, match="at least 1 execution context"):
        ContextPool(object(), FakeDevice(), 0, "x.plan")

    class NoMemory:
        calls = 0

        def create_execution_context(self):
            self.calls += 1
            return None

    pool = ContextPool(NoMemory(), FakeDevice(), 1, "x.plan")
    for _ in range(2):  # a failed creation must not leave the pool believing its one slot is taken
        with pytest.raises(EngineError, match="could not create an execution context"):
            with pool.take():
                pass
    assert pool.made == 0 and pool.engine.calls == 2
