"""Re-coding a lossless model at a target rate, after training (``encode --bpw R``).

A lossless LaPerm model can only be made smaller by storing less of each row's
arrangement: its rank buckets (``bucket-rans`` without the refinement stream; the
decoder puts each bucket's values in the order of their initial ranks, so every row is
still an exact arrangement of its init). Each weight matrix may keep all of its
arrangement or only 1..8 bits of buckets; every choice is coded for real, so its cost
(payload and header entry) is measured, not estimated, and its loss is what ``loss``
measures (the increase of the model's loss on calibration data when that matrix alone
is re-coded) or, without it, the matrix's sensitivity (default: its rows) times its
squared relative L2 error.
:func:`permcodec.coding.rate.choose` then picks, per matrix, the depths that lose least
within the target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import msgpack
import numpy as np

from ..coding.encoder import encode_tensor
from ..coding.rate import CONTAINER_BYTES, Option, TooFewBits, choose
from ..core.dtypes import FLOAT_DTYPES, TensorItem
from ..core.plan import MAX_BITS, Plan
from ..errors import PlanError
from .writer import encode_entry, entry_of

#: Bucket depths a matrix may keep.
DEPTHS = tuple(range(1, MAX_BITS + 1))


@dataclass(frozen=True)
class Recoding:
    """The depth chosen for each seeded matrix (None: exact) and its estimated cost."""

    bits: dict[str, int | None]
    weight_bits: float
    weights: int

    @property
    def bits_per_weight(self) -> float:
        return self.weight_bits / self.weights if self.weights else 0.0


def _entry_bits(fields: Mapping[str, object], payload: bytes) -> float:
    wide = 2**32 - 1  # offset and length at their widest
    entry = {**fields, "offset": wide, "length": wide}
    return 8.0 * (len(payload) + len(msgpack.packb(entry, use_bin_type=True)))


def plan_depths(
    items: Iterable[TensorItem],
    plan: Plan,
    bpw: float,
    sensitivity: Mapping[str, float] | None = None,
    loss: Callable[[str, np.ndarray], float] | None = None,
) -> Recoding:
    """The rank-bucket depth of each seeded weight matrix of ``items`` (arrays that are
    exact arrangements of ``plan``'s inits) that keeps the weight matrices within
    ``bpw`` bits per weight, container included, losing the least: what ``loss(name,
    decoded)`` measures for each matrix at each depth, or the weighted error."""
    if not bpw > 0:
        raise PlanError(f"bpw must be a positive number of bits per weight, got {bpw!r}")
    options: dict[str, list[Option]] = {}
    weights = 0
    for name, array, dtype in items:
        if dtype not in FLOAT_DTYPES or array.ndim < 2:
            continue  # biases, norm layers, buffers: outside the rate
        weights += array.size
        tp = plan.tensors.get(name)
        fields, payload = encode_entry(name, array, dtype, tp)
        exact = Option(_entry_bits(fields, payload), 0.0, None)
        if tp is None:
            options[name] = [exact]
            continue
        rows = array.shape[0]
        sens = float((sensitivity or {}).get(name, rows))
        options[name] = [exact]
        for bits in DEPTHS:
            enc = encode_tensor(name, array, dtype, tp, bits)
            lost = (
                max(0.0, float(loss(name, enc.decoded)))
                if loss is not None
                else sens * float(enc.rel_error or 0.0) ** 2
            )
            options[name].append(Option(_entry_bits(entry_of(enc), enc.payload), lost, bits))
    try:
        chosen, spent = choose(options, bpw * weights - 8.0 * CONTAINER_BYTES)
    except TooFewBits as e:
        need = (e.need + 8.0 * CONTAINER_BYTES) / max(weights, 1)
        raise PlanError(
            f"{bpw} bits per weight is too few to re-code this model: at 1-bit buckets its "
            f"weight matrices need {need:.3f}; a model trained at the rate (init(..., "
            "bpw=R)) can be smaller"
        ) from None
    depth = {n: b for n, b in chosen.items() if n in plan.tensors}
    return Recoding(depth, spent + 8.0 * CONTAINER_BYTES, weights)


def bucket_depths(recoding: Recoding) -> dict[str, int]:
    """The ``tensor_bits`` of :func:`permcodec.format.writer.write_file` for a recoding."""
    return {n: b for n, b in recoding.bits.items() if b is not None}
