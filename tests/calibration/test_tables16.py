"""FP16 fusion: tables stored in FP16, rows cast after the Gather; ONNX Runtime never casts a whole table per call."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto

from vlfront.calibration import graphs, tables16
from vlfront.calibration.gate import Thresholds, figures
from vlfront.config import preset

CFG = preset("tiny")


def _session(path, optimized=None):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if optimized:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_fp16_tables_keep_io_and_halve_storage(tiny_bundle, tmp_path):
    model = graphs.load_inline(tiny_bundle / "fusion.onnx")
    half = tables16.tables_to_float16(model)
    io = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in (*m.graph.input, *m.graph.output)]  # noqa: E731
    assert io(half) == io(model)
    assert not [i.name for i in half.graph.initializer if i.data_type == TensorProto.FLOAT]
    tables = {i.name for i in half.graph.initializer if i.data_type == TensorProto.FLOAT16}
    assert "token_embed.weight_fp16" in tables
    for node in half.graph.node:  # a table is read by a Gather (rows) or cast once (used whole)
        for k, name in enumerate(node.input):
            if name in tables:
                assert (node.op_type == "Gather" and k == 0) or node.op_type == "Cast", (node.op_type, name)
    graphs.save(half, tmp_path / "fusion.fp16.onnx")


def test_onnxruntime_casts_gathered_rows_only_and_stays_close(tiny_bundle, tmp_path):
    path = tmp_path / "fusion.fp16.onnx"
    graphs.save(tables16.tables_to_float16(graphs.load_inline(tiny_bundle / "fusion.onnx")), path)
    opt = tmp_path / "optimized.onnx"
    rng = np.random.default_rng(0)
    ids = rng.integers(0, CFG.vocab_rows, (2, CFG.max_seq_len)).astype(np.int64)
    ids[:, 5:5 + CFG.tokens_per_image] = 151655  # one image's <|image_pad|> run per row
    feeds = {"input_ids": ids,
             "visual_tokens": rng.standard_normal((2, CFG.tokens_per_image, CFG.hidden_size)).astype(np.float32)}
    got = _session(path, opt).run(None, feeds)[0]
    want = _session(tiny_bundle / "fusion.onnx").run(None, feeds)[0]
    optimized = onnx.load(str(opt), load_external_data=False)
    big = {i.name for i in optimized.graph.initializer if i.data_type == TensorProto.FLOAT16}
    assert "token_embed.weight_fp16" in big  # still FP16 after ONNX Runtime's optimizations
    readers = [n.op_type for n in optimized.graph.node if "token_embed.weight_fp16" in n.input]
    assert readers and set(readers) == {"Gather"}, readers  # no Cast of the whole table, per call
    fig, gate = figures(got, want), Thresholds()
    assert fig["finite"] and fig["cosine_min"] >= gate.min_cosine and fig["cosine_mean"] >= gate.mean_cosine
    # the only rounding is the tables' own: FP16 has a 2^-11 relative step
    assert fig["rel_l2"] <= 2.0 ** -11
