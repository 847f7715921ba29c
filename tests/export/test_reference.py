"""The PyTorch reference against hand-computed cases, one per SPEC rule (tiny preset)."""

import math

import numpy as np
import pytest
import torch

from vlfront.config import IMAGE_PAD_ID, PAD_ID, preset
from vlfront.export.reference import (FrontEnd, FusionStage, PatchEmbedStage, reference_fusion,
                                      reference_visual_tokens, sincos2d)

CFG = preset("tiny")


@pytest.fixture(scope="module")
def front():
    return FrontEnd(CFG).init_weights(7)


def test_sincos2d_layout_matches_spec_formula():
    table = sincos2d(CFG)
    q = CFG.hidden_size // 4
    for k in (0, 1, 13, 14, 15, 29, 195):
        r, c = divmod(k, 14)
        expected = [math.sin(r * 10000 ** (-j / q)) for j in range(q)]
        expected += [math.cos(r * 10000 ** (-j / q)) for j in range(q)]
        expected += [math.sin(c * 10000 ** (-j / q)) for j in range(q)]
        expected += [math.cos(c * 10000 ** (-j / q)) for j in range(q)]
        np.testing.assert_allclose(table[k].numpy(), expected, atol=1e-6, err_msg=f"k={k} (r={r}, c={c})")


def test_patch_embedding_of_one_patch_by_hand(front):
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    out = reference_visual_tokens(front, torch.from_numpy(px)).numpy()
    staged = PatchEmbedStage(front)(torch.from_numpy(px)).numpy()
    w = front.patch_embed.weight.numpy().astype(np.float64)
    b = front.patch_embed.bias.numpy().astype(np.float64)
    pos = sincos2d(CFG).numpy()
    mean, std = np.array(CFG.image_mean), np.array(CFG.image_std)
    for r, c in ((0, 0), (2, 5), (13, 13)):
        patch = px[0, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16].astype(np.float64)  # HW3
        x = ((patch / 255 - mean) / std).transpose(2, 0, 1)  # CHW
        expected = np.einsum("dchw,chw->d", w, x) + b + pos[r * 14 + c]
        np.testing.assert_allclose(out[0, r * 14 + c], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(staged[0, r * 14 + c], expected, rtol=1e-5, atol=1e-5)


def test_learned_vision_positions_are_used():
    cfg = preset("tiny").__class__(**{**preset("tiny").__dict__, "vision_pos": "learned"})
    front = FrontEnd(cfg).init_weights(1)
    px = torch.zeros(1, 224, 224, 3, dtype=torch.uint8)
    out = reference_visual_tokens(front, px)
    delta = out[0, 5] - out[0, 4]
    expected = front.vision_position_embed.weight[5] - front.vision_position_embed.weight[4]
    torch.testing.assert_close(delta, expected, rtol=1e-5, atol=1e-6)  # same pixels, only vis_pos differs


def _batch(images_per_request):
    """input_ids with recognisable text tokens and 196 image pads per image."""
    rows = []
    for n in images_per_request:
        ids = [11, 12]
        for _ in range(n):
            ids += [151652] + [IMAGE_PAD_ID] * 196 + [151653, 13]
        ids += [PAD_ID] * (1024 - len(ids))
        rows.append(ids)
    return torch.tensor(rows)


@pytest.mark.parametrize("layout", [[0, 1, 3], [3, 0, 1], [0, 0], [1], [2, 2]])
def test_image_pad_indexing_across_the_batch(front, layout):
    ids = _batch(layout)
    n = sum(layout)
    # visual_tokens[i, k, :] = 1000*i + k: the value says which image and token landed where.
    marker = torch.arange(n)[:, None, None] * 1000.0 + torch.arange(196)[None, :, None]
    vis = marker.expand(n, 196, CFG.hidden_size).contiguous()
    mod = front.modality_embed.weight
    for out in (reference_fusion(front, ids, vis), FusionStage(front)(ids, vis)):
        image = 0
        for b, count in enumerate(layout):
            pads = (ids[b] == IMAGE_PAD_ID).nonzero().flatten().tolist()
            assert len(pads) == 196 * count
            for j, t in enumerate(pads):
                expected = 1000.0 * (image + j // 196) + j % 196 + mod[1]
                torch.testing.assert_close(out[b, t], expected)
            image += count
            for t in (0, 1, 1023):  # text and pad positions: token + position + modality[0]
                tok = front.token_embed.weight[ids[b, t]] + front.position_embed.weight[t] + mod[0]
                torch.testing.assert_close(out[b, t], tok)


def test_pad_positions_get_the_pad_embedding(front):
    ids = _batch([0])
    out = FusionStage(front)(ids, torch.zeros(0, 196, CFG.hidden_size))
    t = 1000
    assert int(ids[0, t]) == PAD_ID
    expected = front.token_embed.weight[PAD_ID] + front.position_embed.weight[t] + front.modality_embed.weight[0]
    torch.testing.assert_close(out[0, t], expected)


def test_init_is_deterministic_per_seed():
    a = FrontEnd(CFG).init_weights(3).state_tensors()
    b = FrontEnd(CFG).init_weights(3).state_tensors()
    c = FrontEnd(CFG).init_weights(4).state_tensors()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["token_embed.weight"], c["token_embed.weight"])
