"""Triton kernel for ``row-rans`` decoding on a GPU, bit-identical to the CPU decoder.

Each lane of a ``row-rans`` stream (FORMAT 4.5) reads its own word segment, so every
lane is one GPU thread: a program decodes ``BLOCK`` lanes side by side, row after row
of each. A row of m distinct values costs no memory per lane beyond its state (the
step's digit c is the row's Lehmer code); other rows descend a per-lane tree of
remaining class counts in a scratch buffer. A second pass per row turns Lehmer digits
into class indices. Statuses are those of :mod:`permcodec.kernels.contract`.

Importing this module needs triton. The kernel runs on CUDA tensors, or on CPU
tensors under ``TRITON_INTERPRET=1`` (how the tests check it without a GPU).
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from .contract import ENDS_EARLY, INCONSISTENT, OK, left_counts, levels

BLOCK = 64


@triton.jit
def _decode_rows_kernel(
    x_ptr,
    starts_ptr,
    words_ptr,
    bounds_ptr,
    distinct_ptr,
    counts_ptr,
    left_ptr,
    cnt_ptr,
    base_ptr,
    tree_ptr,
    out_ptr,
    status_ptr,
    lanes,
    m,
    n,
    levels_n: tl.constexpr,
    levels_m: tl.constexpr,
    BLOCK: tl.constexpr,
):
    top_n: tl.constexpr = 1 << levels_n
    top_m: tl.constexpr = 1 << levels_m
    lane = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_range = lane < lanes
    x = tl.load(x_ptr + lane, mask=in_range, other=2147483648)
    pos = tl.load(starts_ptr + lane, mask=in_range, other=0)
    end = tl.load(starts_ptr + lane + 1, mask=in_range, other=0)
    r0 = tl.load(bounds_ptr + lane, mask=in_range, other=0)
    r1 = tl.load(bounds_ptr + lane + 1, mask=in_range, other=0)
    status = tl.zeros([BLOCK], dtype=tl.int64)
    rounds = tl.max(r1 - r0, axis=0)
    for t in range(0, rounds):
        r = r0 + t
        live = in_range & (r < r1)
        plain = tl.load(distinct_ptr + r, mask=live, other=1) != 0
        tree_rows = live & (plain == 0)
        any_tree = tl.sum(tree_rows.to(tl.int32), axis=0) > 0
        if any_tree:
            # per-lane left-count tree of the row's class counts (node k: count of its
            # left subtree), built bottom-up; leaves are the counts themselves
            for c in range(0, top_n):
                cc = tl.load(counts_ptr + r * n + c, mask=tree_rows & ((lane * 0 + c) < n), other=0)
                tl.store(cnt_ptr + lane * top_n + c, cc, mask=tree_rows)
            for lv in range(0, levels_n):
                span = 1 << (lv + 1)
                for k in range(0, top_n >> (lv + 1)):
                    node = (top_n >> (lv + 1)) + k
                    acc = tl.zeros([BLOCK], dtype=tl.int64)
                    for i in range(0, span // 2):
                        acc += tl.load(
                            cnt_ptr + lane * top_n + k * span + i, mask=tree_rows, other=0
                        )
                    tl.store(left_ptr + lane * top_n + node, acc, mask=tree_rows)
        for j in range(0, m):
            go = live & (status == 0)
            total = m - j
            s = x & 2147483647
            c = ((s + 1) * total - 1) >> 31
            below = c
            f = tl.full([BLOCK], 1, dtype=tl.int64)
            sym = c
            walk = go & (plain == 0)
            if any_tree:
                rest = c
                node = tl.full([BLOCK], 1, dtype=tl.int64)
                below_t = tl.zeros([BLOCK], dtype=tl.int64)
                for _ in range(0, levels_n):
                    lc = tl.load(left_ptr + lane * top_n + node, mask=walk, other=0)
                    right = rest >= lc
                    tl.store(left_ptr + lane * top_n + node, tl.where(right, lc, lc - 1), mask=walk)
                    rest = tl.where(right, rest - lc, rest)
                    below_t = tl.where(right, below_t + lc, below_t)
                    node = 2 * node + tl.where(right, 1, 0)
                v = node - top_n
                fv = tl.load(cnt_ptr + lane * top_n + v, mask=walk, other=1)
                tl.store(cnt_ptr + lane * top_n + v, fv - 1, mask=walk)
                below = tl.where(walk, below_t, below)
                f = tl.where(walk, fv, f)
                sym = tl.where(walk, v, sym)
            lo = (below << 31) // total
            fr = ((below + f) << 31) // total - lo
            x = tl.where(go, fr * (x >> 31) + s - lo, x)
            need = go & (x < 2147483648)
            early = need & (pos >= end)
            status = tl.where(early, 2, status)
            take = need & (pos < end)
            w = tl.load(words_ptr + pos, mask=take, other=0).to(tl.int64)
            x = tl.where(take, (x << 32) | w, x)
            pos = tl.where(take, pos + 1, pos)
            tl.store(out_ptr + r * m + j, sym, mask=go)
        # Lehmer digits of distinct rows to classes: the c-th class not yet taken
        conv = live & plain & (status == 0)
        for i in range(0, top_m):  # masked off entirely when no lane converts
            b = tl.load(base_ptr + i + lane * 0, mask=conv, other=0)
            tl.store(tree_ptr + lane * top_m + i, b, mask=conv)
        for j in range(0, m):
            rest = tl.load(out_ptr + r * m + j, mask=conv, other=0)
            node = tl.full([BLOCK], 1, dtype=tl.int64)
            for _ in range(0, levels_m):
                lc = tl.load(tree_ptr + lane * top_m + node, mask=conv, other=0)
                right = rest >= lc
                tl.store(tree_ptr + lane * top_m + node, tl.where(right, lc, lc - 1), mask=conv)
                rest = tl.where(right, rest - lc, rest)
                node = 2 * node + tl.where(right, 1, 0)
            tl.store(out_ptr + r * m + j, node - top_m, mask=conv)
    bad = (status == 0) & ((pos != end) | (x != 2147483648))
    status = tl.where(bad, 1, status)
    tl.store(status_ptr + lane, status, mask=in_range)


def decode_rows(
    states: torch.Tensor,
    starts: torch.Tensor,
    words: torch.Tensor,
    bounds: torch.Tensor,
    distinct: torch.Tensor,
    counts: torch.Tensor,
    m: int,
) -> tuple[torch.Tensor, int]:
    """Classes (R, m) of a ``row-rans`` stream, all on the tensors' device, and the
    worst lane status (``OK``, ``ENDS_EARLY`` or ``INCONSISTENT``). ``states``,
    ``starts`` (lanes + 1), ``words``, ``bounds`` (lanes + 1) and ``counts`` (R, N) are
    int64; ``distinct`` (R,) int8."""
    device = states.device
    lanes = states.shape[0]
    rows, n = counts.shape
    levels_n, levels_m = levels(n), levels(m)
    top_n = 1 << levels_n
    scratch = lanes if bool((distinct == 0).any()) else 1
    left = torch.zeros((scratch, top_n), dtype=torch.int64, device=device)
    cnt = torch.zeros((scratch, top_n), dtype=torch.int64, device=device)
    base = torch.from_numpy(left_counts(m)[0].astype(np.int64)).to(device)
    tree = torch.zeros((lanes, 1 << levels_m), dtype=torch.int64, device=device)
    out = torch.zeros((rows, m), dtype=torch.int64, device=device)
    status = torch.zeros(lanes, dtype=torch.int64, device=device)
    grid = (triton.cdiv(lanes, BLOCK),)
    _decode_rows_kernel[grid](
        states, starts, words, bounds, distinct, counts, left, cnt, base, tree, out, status,
        lanes, m, n, levels_n=levels_n, levels_m=levels_m, BLOCK=BLOCK,
    )  # fmt: skip
    if bool((status == ENDS_EARLY).any()):
        return out, ENDS_EARLY
    return out, INCONSISTENT if bool((status == INCONSISTENT).any()) else OK
