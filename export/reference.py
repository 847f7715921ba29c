"""PyTorch reference front-end (SPEC sections 1.5, 1.6 and 2).

`FrontEnd` holds the weights under their SPEC names. `PatchEmbedStage` and
`FusionStage` are the two traced graphs, written with graph-friendly ops
(Gather / CumSum / Where, no data-dependent writes). `reference_fusion`
follows SPEC 1.6 literally, request by request, and is what the graphs and
the tests are checked against.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from vlfront.config import IMAGE_PAD_ID, Config
from vlfront.errors import WeightsError
from vlfront.weights import check_weights, expected_tensors

INIT_STD = 0.02


def sincos2d(config: Config) -> torch.Tensor:
    """SPEC 1.5 `sincos2d`: [tokens_per_image, D], k = r*grid + c.

    The angles are evaluated with Python's `math` (float64 libm), then cast to float32. torch's
    float64 sin/cos did not give the same bits for one input within one process (a test session
    exported a tiny bundle whose table differed in one value by one float32 ulp from a later
    export), and an export must be byte-reproducible.
    """
    q = config.hidden_size // 4
    omega = [10000.0 ** (-j / q) for j in range(q)]
    # per grid line p: sin(p*omega) then cos(p*omega), the half of a token's row for its r (or c)
    half = [[math.sin(p * w) for w in omega] + [math.cos(p * w) for w in omega] for p in range(config.grid)]
    rows = [half[k // config.grid] + half[k % config.grid] for k in range(config.grid * config.grid)]
    return torch.tensor(rows, dtype=torch.float64).to(torch.float32)


class FrontEnd(nn.Module):
    """The weights of the front-end, named as in SPEC section 2."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config.validate()
        d = config.hidden_size
        self.patch_embed = nn.Conv2d(3, d, config.patch_size, stride=config.patch_size)
        self.token_embed = nn.Embedding(config.vocab_rows, d)
        self.position_embed = nn.Embedding(config.max_seq_len, d)
        self.modality_embed = nn.Embedding(2, d)
        if config.vision_pos == "learned":
            self.vision_position_embed = nn.Embedding(config.tokens_per_image, d)
        else:
            self.register_buffer("vis_pos_table", sincos2d(config), persistent=False)
        mean = torch.tensor(config.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(config.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("image_mean", mean, persistent=False)
        self.register_buffer("image_std", std, persistent=False)
        self.requires_grad_(False)

    def vis_pos(self) -> torch.Tensor:
        if self.config.vision_pos == "learned":
            return self.vision_position_embed.weight
        return self.vis_pos_table

    # --- weights -----------------------------------------------------------
    def init_weights(self, seed: int) -> "FrontEnd":
        """Deterministic random weights from `seed` (the default bundle has no trained weights)."""
        g = torch.Generator().manual_seed(seed)
        for name, p in sorted(self.named_parameters()):
            if name == "patch_embed.weight":
                fan_in = 3 * self.config.patch_size**2
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * INIT_STD)
        return self

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The SPEC tensors, contiguous float32, by name."""
        return {n: p.detach().contiguous() for n, p in self.named_parameters()}

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        save_file(self.state_tensors(), os.fspath(path))

    def load(self, path: str | os.PathLike) -> "FrontEnd":
        """Load SPEC-named weights; a missing, extra or misshapen tensor raises WeightsError naming it."""
        from safetensors.torch import load_file

        check_weights(path, self.config)
        try:
            tensors = load_file(os.fspath(path))
        except Exception as e:  # safetensors raises its own untyped errors
            raise WeightsError(f"{path}: cannot read weights: {e}") from None
        params = dict(self.named_parameters())
        for name in expected_tensors(self.config):
            params[name].copy_(tensors[name])
        return self


class PatchEmbedStage(nn.Module):
    """Graph `patch_embed`: uint8 pixels [N,H,W,3] -> visual_tokens [N,196,D]."""

    def __init__(self, front: FrontEnd):
        super().__init__()
        self.patch_embed = front.patch_embed
        if front.config.vision_pos == "learned":
            self.vision_position_embed = front.vision_position_embed
        else:
            self.register_buffer("vis_pos_table", front.vis_pos_table, persistent=False)
        self.register_buffer("image_mean", front.image_mean, persistent=False)
        self.register_buffer("image_std", front.image_std, persistent=False)
        self.learned = front.config.vision_pos == "learned"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # Cast first: TensorRT's parser takes uint8 only as a network input or output, never as the
        # operand of a Transpose/Reshape (docs/calibration.md, TensorRT parser rules).
        x = pixel_values.to(torch.float32).permute(0, 3, 1, 2)
        x = (x / 255.0 - self.image_mean) / self.image_std
        p = self.patch_embed(x)  # [N, D, grid, grid]
        tokens = p.flatten(2).transpose(1, 2)  # [N, grid*grid, D], k = r*grid + c
        pos = self.vision_position_embed.weight if self.learned else self.vis_pos_table
        return tokens + pos


class FusionStage(nn.Module):
    """Graph `fusion`: input_ids [B,S] + visual_tokens [N,196,D] -> inputs_embeds [B,S,D].

    Every position is `token_embed[id] + table[index]`: two row gathers and one add over
    the output, with no Where over [B,S,D] (3x faster in ONNX Runtime than the literal form).
    `table` = [position_embed + modality_embed[0] (S rows, folded once at load);
    visual_tokens + modality_embed[1] - token_embed[<|image_pad|>] (N*196 rows)].
    A text position t takes row t; an image pad takes row S + its number. Pads are numbered
    across the flattened batch with CumSum: each image owns exactly 196 consecutive pads, so
    that number equals first_image(b)*196 + j of SPEC 1.6. Indices are clamped so that a
    malformed batch can never read outside the tables (TensorRT does not check).
    """

    def __init__(self, front: FrontEnd):
        super().__init__()
        self.token_embed = front.token_embed
        self.position_embed = front.position_embed
        self.modality_embed = front.modality_embed
        self.vocab_rows = front.config.vocab_rows

    def forward(self, input_ids: torch.Tensor, visual_tokens: torch.Tensor) -> torch.Tensor:
        d = self.token_embed.weight.shape[1]
        seq = input_ids.shape[1]
        is_img = input_ids == IMAGE_PAD_ID
        flags = is_img.reshape(-1)
        # The count runs in float32 (TensorRT's CumSum takes only float types; exact up to 2^24 tokens in one
        # call, 16384 requests of 1024) and is cast back to int64; to_float16 keeps this Cast float32.
        number = (torch.cumsum(flags.to(torch.float32), 0).to(torch.int64) - flags.to(torch.int64))
        number = number.reshape(input_ids.shape)
        # The pad row's index is derived from the (dynamic) batch size, so graph optimizers cannot
        # constant-fold this Gather: folding it would load the whole token table into memory
        # (ONNX Runtime: +660 MB peak RSS on the default preset) to compute one row.
        pad_index = (torch.tensor(input_ids.shape[0]) * 0 + IMAGE_PAD_ID).reshape(1)
        pad_row = self.token_embed.weight[pad_index]
        visual = visual_tokens.reshape(-1, d) + (self.modality_embed.weight[1] - pad_row)
        table = torch.cat([self.position_embed.weight + self.modality_embed.weight[0], visual], 0)
        # Min/Max rather than clamp: TensorRT's Clip takes only float types, Min/Max take int64.
        last = torch.tensor(table.shape[0]) - 1
        position = torch.arange(seq, dtype=torch.int64).unsqueeze(0)
        index = torch.where(is_img, torch.minimum(number + seq, last), position)
        ids = torch.maximum(torch.minimum(input_ids, torch.tensor(self.vocab_rows - 1)), torch.tensor(0))
        return self.token_embed.weight[ids] + table[index]


def reference_visual_tokens(front: FrontEnd, pixel_values: torch.Tensor) -> torch.Tensor:
    """SPEC 1.5 written out: normalise per channel, strided conv, add vis_pos[k], k = r*grid + c."""
    cfg = front.config
    x = pixel_values.to(torch.float32) / 255.0
    mean = torch.tensor(cfg.image_mean, dtype=torch.float32)
    std = torch.tensor(cfg.image_std, dtype=torch.float32)
    x = ((x - mean) / std).permute(0, 3, 1, 2)  # CHW
    p = torch.nn.functional.conv2d(x, front.patch_embed.weight, front.patch_embed.bias, stride=cfg.patch_size)
    out = torch.empty(x.shape[0], cfg.tokens_per_image, cfg.hidden_size)
    pos = front.vis_pos()
    for r in range(cfg.grid):
        for c in range(cfg.grid):
            k = r * cfg.grid + c
            out[:, k] = p[:, :, r, c] + pos[k]
    return out


def reference_fusion(front: FrontEnd, input_ids: torch.Tensor, visual_tokens: torch.Tensor) -> torch.Tensor:
    """SPEC 1.6 literally. Images are numbered by request, then appearance (196 pads each)."""
    tpi = front.config.tokens_per_image
    B, S = input_ids.shape
    out = torch.empty(B, S, front.config.hidden_size)
    first_image = 0
    tok, pos, mod = front.token_embed.weight, front.position_embed.weight, front.modality_embed.weight
    for b in range(B):
        j = 0
        for t in range(S):
            if int(input_ids[b, t]) == IMAGE_PAD_ID:
                out[b, t] = visual_tokens[first_image + j // tpi, j % tpi] + mod[1]
                j += 1
            else:
                out[b, t] = tok[input_ids[b, t]] + pos[t] + mod[0]
        first_image += j // tpi
    return out
