"""Rate control: the forms a weight matrix can take, what each costs, and how a target
rate in bits per weight is split across the matrices of a model.

A *form* says what multiset each row of a tensor holds and so what its arrangement
costs: ``levels`` forms hold a few shared values (zero and ``2 L`` nonzero levels at a
density ``p``, exact counts per row), whose arrangement costs their multinomial entropy
(ternary rows at 10% nonzeros: 0.57 bits per weight); ``exact`` holds a continuous
He-uniform init (log2(m) - 1.44 bits per weight, lossless LaPerm); ``unseeded`` is not
seeded at all (a float32 matrix stored as is, for tiny layers whose short rows have
too few arrangements to learn by permutation).

:func:`allocate` picks a form per matrix, the way mixed-precision quantizers do: it
minimizes the sum of each matrix's distortion (the relative error of the form's values
against a Gaussian row, times the matrix's weight: 1 by default, or its measured
sensitivity) subject to the total cost, container included, staying within the target.
Costs are exact (computed from the counts each row will hold), so the file meets the
target whatever training does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ..core.initializers import InitSpec, level_counts, level_values, resolve
from .arrangement import log2_factorials
from .rans import LANE_BUDGET, SEGMENT_LANE_BITS

#: Rows shorter than this are left unseeded: a 1x3x3 or 1x5x5 first conv has too few
#: arrangements to learn by permutation (the LeNet-5 and Conv-2 runs of docs/experiments.md).
MIN_ROW = 32
#: The levels forms, cheapest first: ternary rows {-a, 0, +a} at a growing density,
#: then four levels with fewer zeros, then dense rows of 4 to 64 levels.
LADDER = (
    *((1, p) for p in (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05,
                       0.06, 0.07, 0.08, 0.09, 0.1, 0.12, 0.14, 0.17, 0.2, 0.25, 0.3, 0.35,
                       0.4, 0.5)),
    *((2, p) for p in (0.6, 0.7, 0.8, 1.0)),
    *((n, 1.0) for n in (4, 8, 16, 32)),
)  # fmt: skip
#: Forms below 1% nonzeros are offered only to rows long enough to keep this many (a
#: 12544-wide classifier row at 0.1%): shorter rows would be left with a few weights.
SPARSE_NONZEROS = 8
#: Bytes of the container besides the entries: preamble, header digest, trailer,
#: the header's own keys, and up to 63 bytes of padding.
CONTAINER_BYTES = 24 + 16 + 32 + 64 + 63


@dataclass(frozen=True)
class Form:
    """How one weight matrix is stored (and so how LaPerm trains it)."""

    kind: str  # "levels", "exact" or "unseeded"
    levels: int = 0  # nonzero levels per sign ("levels")
    density: float = 1.0  # fraction of nonzeros ("levels")

    @property
    def label(self) -> str:
        if self.kind == "levels":
            return f"levels {2 * self.levels}x{100 * self.density:g}%"
        return self.kind

    def spec(self, shape: tuple[int, ...]) -> InitSpec | None:
        """The init spec of the stored rows (None: not seeded); levels are scaled to He's
        variance for the tensor's fan-in."""
        if self.kind == "unseeded":
            return None
        if self.kind == "exact":
            return InitSpec("he_uniform")
        scale = level_scale(self.levels, self.density, math.prod(shape[1:]))
        return InitSpec("levels", levels=self.levels, scale=scale, density=self.density)


def level_scale(levels: int, density: float, fan_in: int) -> float:
    """The ``scale`` that gives a levels row He's variance, 2 / fan_in."""
    unit = level_values(levels, 1.0)[levels:-1]  # the magnitudes at scale 1
    return math.sqrt(2.0 / max(fan_in, 1) / (density * sum(x * x for x in unit) / levels))


def ladder(m: int) -> list[Form]:
    """The forms a matrix with rows of ``m`` values may take, cheapest first."""
    if m < MIN_ROW:
        return [Form("unseeded")]
    forms = [
        Form("levels", n, p)
        for n, p in LADDER
        if 2 * n <= m * p and (p >= 0.01 or m * p >= SPARSE_NONZEROS)
    ]
    return [*forms, Form("exact")]


# ---------------------------------------------------------------- cost


def row_bits(form: Form, m: int) -> float:
    """Bits of one row's arrangement: the multinomial bound of its counts (an upper
    bound: distinct continuous values are assumed distinct)."""
    if form.kind == "unseeded":
        return 32.0 * m
    lf = log2_factorials(m)
    if form.kind == "exact":
        return float(lf[m])
    return float(lf[m] - sum(lf[c] for c in level_counts(form.levels, form.density, m)))


#: Header bytes a context-coded (``bucket-rans`` exact) entry may add beyond its table of
#: weights, which the writer pays for out of the at least 1% of the bound it saves.
CONTEXT_FIELDS_BYTES = 48


def entry_bytes(name: str, shape: tuple[int, ...], form: Form) -> int:
    """Header bytes of a tensor's entry, at most (offsets and lengths below 2**32)."""
    wide = 2**32 - 1
    entry: dict[str, object] = {"name": name, "shape": list(shape), "dtype": "float32"}
    spec = form.spec(shape)
    extra = 0
    if spec is None:
        entry["coding"] = "raw-zstd"
    else:
        entry.update(spec=resolve(spec, shape), key=[wide, wide], coding="row-rans")
        entry.update(lanes=shape[0], bound_bits=1.5)
        extra = CONTEXT_FIELDS_BYTES
    entry.update(digest=b"\0" * 16, payload_digest=b"\0" * 16, offset=wide, length=wide)
    return len(msgpack.packb(entry, use_bin_type=True)) + extra


def cost_bits(name: str, shape: tuple[int, ...], form: Form) -> float:
    """What a tensor in ``form`` adds to a file, at most: payload (bound, plus the
    coder's lane states and its sub-0.1% loss) and header entry."""
    rows, m = shape[0], math.prod(shape[1:])
    payload = rows * row_bits(form, m)
    if form.kind != "unseeded":
        payload = payload_allowance(payload)
    return payload + 8.0 * entry_bytes(name, shape, form)


def payload_allowance(bound: float) -> float:
    """Most bits a seeded payload of bound ``bound`` takes, as rate control counts it:
    the bound, plus the coder's lane states and its sub-0.1% loss. A writer never
    chooses a coding larger than this for a tensor (row-rans stays within it)."""
    return bound * (1.0 + LANE_BUDGET + 0.002) + SEGMENT_LANE_BITS + 64


# ---------------------------------------------------------------- distortion


def distortion(form: Form, m: int) -> float:
    """The distortion a form leaves in a row of ``m`` values, as a Gaussian source coded
    at the form's rate r would have it: 2^(-2 r). Forms trained through latent weights
    adapt to their values, so what limits them is how many arrangements they have, not
    how well their values fit a normal row (ternary rows at 10% nonzeros fit a normal
    row poorly, yet train within a point of float weights on LeNet-300)."""
    if form.kind == "unseeded":
        return 0.0
    return 2.0 ** (-2.0 * row_bits(form, m) / m)


# ---------------------------------------------------------------- allocation


@dataclass(frozen=True)
class Allocation:
    """The form chosen for each matrix, and what the choice costs."""

    forms: dict[str, Form]
    bits: float  # total, container included
    weights: int  # values in the matrices

    @property
    def bits_per_weight(self) -> float:
        return self.bits / self.weights if self.weights else 0.0


def allocate(
    shapes: Mapping[str, Sequence[int]],
    bpw: float,
    sensitivity: Mapping[str, float] | None = None,
) -> Allocation:
    """A form per matrix (``shapes``: name -> shape of each weight matrix) whose total
    cost, container included, is at most ``bpw`` bits per weight, minimizing the sum of
    sensitivity x distortion. Raises ValueError when even the cheapest forms cost more
    (or ``bpw`` is not positive)."""
    shp = {n: tuple(int(d) for d in s) for n, s in shapes.items()}
    sens = {n: float((sensitivity or {}).get(n, 1.0)) for n in shp}
    options = {}
    for n, shape in shp.items():
        m = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
        options[n] = [
            Option(cost_bits(n, shape, f), sens[n] * distortion(f, m), f) for f in ladder(m)
        ]
    numel = sum(math.prod(s) for s in shp.values())
    if not bpw > 0:
        raise ValueError(f"bpw must be a positive number of bits per weight, got {bpw!r}")
    try:
        chosen, bits = choose(options, bpw * numel - 8.0 * CONTAINER_BYTES)
    except TooFewBits as e:
        need = (e.need + 8.0 * CONTAINER_BYTES) / numel
        raise ValueError(
            f"{bpw} bits per weight is too few for these matrices: their cheapest forms "
            f"need {need:.3f}"
        ) from None
    return Allocation(chosen, bits + 8.0 * CONTAINER_BYTES, numel)


class TooFewBits(ValueError):
    """Even the cheapest options cost more than the budget."""

    def __init__(self, need: float, budget: float) -> None:
        super().__init__(f"the cheapest options need {need:.0f} bits, over the {budget:.0f}")
        self.need = need


@dataclass(frozen=True)
class Option:
    """One way to store a matrix: what it costs (bits) and what it loses."""

    cost: float
    loss: float
    choice: Any


def choose(options: Mapping[str, Sequence[Option]], budget: float) -> tuple[dict[str, Any], float]:
    """One option per matrix, minimizing the summed loss with the summed cost within
    ``budget`` bits: start from each matrix's cheapest option and upgrade, along the
    lower convex hull of its options, where a bit buys the most loss, while the budget
    lasts. Returns (choice per matrix, bits spent); :class:`TooFewBits` if the cheapest
    options already cost more than the budget."""
    hulls = {n: _hull(list(opts)) for n, opts in options.items()}
    spent = sum(h[0].cost for h in hulls.values())
    if spent > budget:
        raise TooFewBits(spent, budget)
    at = {n: 0 for n in hulls}
    while True:  # upgrade where a bit buys the most loss, while the budget lasts
        best, best_gain = None, 0.0
        for n, h in hulls.items():
            i = at[n]
            if i + 1 < len(h):
                extra = h[i + 1].cost - h[i].cost
                gain = (h[i].loss - h[i + 1].loss) / extra
                if spent + extra <= budget and gain > best_gain:
                    best, best_gain = n, gain
        if best is None:
            break
        spent += hulls[best][at[best] + 1].cost - hulls[best][at[best]].cost
        at[best] += 1
    return {n: hulls[n][at[n]].choice for n in hulls}, spent


def _hull(options: list[Option]) -> list[Option]:
    """The lower convex hull of (cost, loss): the options worth upgrading through,
    cheapest first, each buying less loss per bit than the one before."""
    front: list[Option] = []
    for p in sorted(options, key=lambda o: (o.cost, o.loss)):
        if not front or p.loss < front[-1].loss:  # keep only options that lose less
            front.append(p)
    hull: list[Option] = []
    for p in front:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b if it lies on or above the line from a to p
            if (b.loss - a.loss) * (p.cost - a.cost) >= (p.loss - a.loss) * (b.cost - a.cost):
                hull.pop()
            else:
                break
        hull.append(p)
    return hull
