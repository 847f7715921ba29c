"""A numpy model of ONNX Runtime's int8 GEMM on x86 CPUs without VNNI, and the saturation bound.

Why it exists: the INT8 patch embedding runs as `MatMulIntegerToFloat` (s8
activations x s8 weights). Where the CPU has no VNNI (AMD Zen 1-3, Intel before
Cascade Lake), MLAS makes the activations unsigned (a + 128, zero point 128) and
multiplies with VPMADDUBSW: u8 x s8 products of two neighbouring K elements
are added into one int16 *with saturation*, then VPMADDWD adds the int16s into
int32 exactly. A machine with VNNI (or AMX, or ARM64 dot products) accumulates
in int32 directly and never saturates, so it cannot show the problem; this model
can, on any machine.

    pair(k) = sat16(u[2k] * w[2k] + u[2k+1] * w[2k+1]),   u = a + 128 in [0, 255]
    acc     = sum_k pair(k) - 128 * sum_k w[k]             (exact int32)

The bound: |pair| <= 255 * (|w[2k]| + |w[2k+1]|) <= 2 * 255 * max|w|. With the
shipped weights in [-64, 64] that is 32640 <= 32767: no pair can saturate,
whatever the pixels and however a kernel pairs its K elements.
"""

from __future__ import annotations

import numpy as np

INT16_MAX = 32767
U8_MAX = 255


def worst_pair_sum(weight_q: np.ndarray) -> int:
    """The largest |pair| any u8 activation can produce with these int8 weights ([K, N]), any pairing."""
    w = np.abs(np.asarray(weight_q, np.int64))
    top2 = np.sort(w, axis=0)[-2:].sum(axis=0) if w.shape[0] >= 2 else w.max(axis=0)
    return int(U8_MAX * top2.max())


def cannot_saturate(weight_q: np.ndarray) -> bool:
    """True when no input can saturate the int16 pair sums of the non-VNNI kernel."""
    return worst_pair_sum(weight_q) <= INT16_MAX


def u8s8_gemm(a_q: np.ndarray, weight_q: np.ndarray, block: int = 16) -> tuple[np.ndarray, int]:
    """Integer result of the non-VNNI kernel for s8 activations [M, K] and s8 weights [K, N].

    Returns:
        (acc int64 [M, N], number of saturated pair sums). With no saturation acc == a_q @ weight_q exactly.
    """
    a = np.asarray(a_q, np.int64)
    w = np.asarray(weight_q, np.int64)
    if a.shape[1] % 2:  # MLAS pads K with zeros to the pair width
        a, w = np.pad(a, ((0, 0), (0, 1))), np.pad(w, ((0, 1), (0, 0)))
    u = a + 128
    u_even, u_odd = u[:, 0::2], u[:, 1::2]
    acc = np.empty((a.shape[0], w.shape[1]), np.int64)
    saturated = 0
    for start in range(0, w.shape[1], block):
        we, wo = w[0::2, start:start + block], w[1::2, start:start + block]
        pairs = u_even[:, :, None] * we[None] + u_odd[:, :, None] * wo[None]  # [M, K/2, n]
        clipped = np.clip(pairs, -INT16_MAX - 1, INT16_MAX)
        saturated += int((clipped != pairs).sum())
        acc[:, start:start + block] = clipped.sum(axis=1) - 128 * w[:, start:start + block].sum(axis=0)
    return acc, saturated
