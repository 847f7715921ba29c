"""The GPU ensemble form of the repository (`--layout ensemble`). UNVERIFIED: written and its configs
validated against Triton's ModelConfig protobuf here, never served (no GPU; the wheel's Triton has
no ONNX Runtime or TensorRT backend).

    vlfront_preprocess  (python, KIND_CPU)   request JSON -> input_ids [1, L], pixel_values [N, S, S, 3], masks
    vlfront_patch_embed (GPU)                pixel_values -> visual_tokens [N, T, D]
    vlfront_fusion      (GPU)                input_ids + visual_tokens -> inputs_embeds [1, L, D]
    vlfront_ensemble    (platform ensemble)  the three in a row; what clients call

max_batch_size is 0 throughout: the number of images varies per request, so each request is its
own batch (the single python model batches across requests instead).
"""

from __future__ import annotations

import json

import numpy as np

from vlfront.runtime.triton.repository import _config, _outputs, _tensors, _write_model, link_or_copy

def write_ensemble(b, out, opts, params: dict) -> None:
    cfg = b.config
    L, T, D, S = cfg.max_seq_len, cfg.tokens_per_image, cfg.hidden_size, cfg.image_size
    gpu = "onnxruntime" if opts.gpu_backend == "onnxruntime" else "tensorrt"
    pre_out = [("input_ids", "TYPE_INT64", [1, L]), ("attention_mask", "TYPE_INT64", [1, L]),
               ("image_attention_mask", "TYPE_INT64", [1, L]), ("dropped_tokens", "TYPE_INT64", [1]),
               ("pixel_values", "TYPE_UINT8", [-1, S, S, 3])]
    _write_model(out / "vlfront_preprocess",
                 _config("vlfront_preprocess", "python", 0, [("request", "TYPE_STRING", [1])], pre_out,
                         {k: params[k] for k in ("bundle", "python_site", "decode")}, "KIND_CPU", opts.instances),
                 "vlfront.runtime.triton.ensemble.PreprocessModel")
    graphs = {"patch_embed": ([("pixel_values", "TYPE_UINT8", [-1, S, S, 3])],
                              [("visual_tokens", "TYPE_FP32", [-1, T, D])]),
              "fusion": ([("input_ids", "TYPE_INT64", [-1, L]), ("visual_tokens", "TYPE_FP32", [-1, T, D])],
                         [("inputs_embeds", "TYPE_FP32", [-1, L, D])])}
    for graph, (inputs, outputs) in graphs.items():
        name = f"vlfront_{graph}"
        entry = b.manifest["graphs"][graph][opts.precision]
        filename = entry["file"] if gpu == "onnxruntime" else "model.plan"
        _write_model(out / name, _config(name, gpu, 0, inputs, outputs, None, "KIND_GPU", 1,
                                         default_model_filename=filename), None)
        version = out / name / "1"
        if gpu == "onnxruntime":  # the graph and the weights file its external data points into
            for rel in [entry["file"], *entry.get("external_data", [])]:
                link_or_copy(b.path(rel), version / rel)
        else:
            (version / "README.txt").write_text(f"Put the TensorRT plan of {graph} ({opts.precision}) built by "
                                                f"`vlfront engines` for this GPU here as model.plan.\n")
    wire = {"vlfront_preprocess": ({"request": "request"},
                                   {"input_ids": "input_ids", "attention_mask": "attention_mask",
                                    "image_attention_mask": "image_attention_mask",
                                    "dropped_tokens": "dropped_tokens", "pixel_values": "_pixel_values"}),
            "vlfront_patch_embed": ({"pixel_values": "_pixel_values"}, {"visual_tokens": "_visual_tokens"}),
            "vlfront_fusion": ({"input_ids": "input_ids", "visual_tokens": "_visual_tokens"},
                               {"inputs_embeds": "inputs_embeds"})}
    steps = ",\n".join(
        f'  {{ model_name: "{m}" model_version: -1\n'
        + "".join(f'    input_map {{ key: "{k}" value: "{v}" }}\n' for k, v in ins.items())
        + "".join(f'    output_map {{ key: "{k}" value: "{v}" }}\n' for k, v in outs.items()) + "  }"
        for m, (ins, outs) in wire.items())
    ens_out = _outputs(cfg, "float32", batched=False)
    text = (f'name: "vlfront_ensemble"\nplatform: "ensemble"\nmax_batch_size: 0\n'
            + _tensors("input", [("request", "TYPE_STRING", [1])]) + _tensors("output", ens_out)
            + f"ensemble_scheduling {{\n step [\n{steps}\n ]\n}}\n")
    (out / "vlfront_ensemble" / "1").mkdir(parents=True, exist_ok=True)
    (out / "vlfront_ensemble" / "config.pbtxt").write_text(text)


class PreprocessModel:
    """The ensemble's first step: layout + decoding on the CPU, no graphs (those run on the GPU models)."""

    def __init__(self, args: dict, pb_utils=None):
        import importlib
        import pathlib

        from vlfront.runtime.bundle import Bundle
        from vlfront.runtime.images import ImageLimits
        from vlfront.runtime.processor import Processor
        from vlfront.runtime.tokenizer import Tokenizer
        from vlfront.runtime.triton.model import model_parameters

        self.pb = pb_utils or importlib.import_module("triton_python_backend_utils")
        p = model_parameters(json.loads(args["model_config"]))
        b = Bundle.open(pathlib.Path(p["bundle"]))
        tokenizer = Tokenizer.from_file(b.path(b.manifest["tokenizer"]["file"]))
        self.config = b.config
        self.processor = Processor(tokenizer, b.config, image_limits=ImageLimits(allow_paths=False),
                                   decode=p.get("decode") or "exact")

    def execute(self, requests: list) -> list:
        from vlfront.errors import RequestError
        from vlfront.runtime.triton.request import parse_request

        responses = []
        for r in requests:
            try:
                raw = self.pb.get_input_tensor_by_name(r, "request").as_numpy().reshape(-1)
                if raw.size != 1:
                    raise RequestError(f"the ensemble takes one request per call, got {raw.size}")
                lay = self.processor.layout(parse_request(raw[0]), None)
                s = self.config.image_size
                pixels = (np.stack([src.decode() for src in lay.images]) if lay.images
                          else np.zeros((0, s, s, 3), np.uint8))
                arrays = {"input_ids": lay.input_ids[None], "attention_mask": lay.attention_mask[None],
                          "image_attention_mask": lay.image_attention_mask[None],
                          "dropped_tokens": np.array([lay.dropped_tokens], np.int64), "pixel_values": pixels}
                responses.append(self.pb.InferenceResponse(
                    output_tensors=[self.pb.Tensor(k, np.ascontiguousarray(v)) for k, v in arrays.items()]))
            except RequestError as e:
                responses.append(self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(e.reason)))
        return responses

    def finalize(self) -> None:
        pass
