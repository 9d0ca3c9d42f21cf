"""Weight profiles and rank movement of a `.perm` model against its seeded init.

The weight profile (Qiu & Suda, Fig. 1-2) is each layer's sorted values. For a
LaPerm-trained layer it equals the initial profile by construction; what training
changed is where each value sits, summarized here as how far each weight's rank within
its row moved from the rank its value had at initialization. For unrelated
arrangements the standard deviation of the move is sqrt(1/6) ~ 0.41 of the row length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..core.dtypes import as_float64, order_keys
from ..core.initializers import initial_rows
from ..errors import require
from ..format.atomic import atomic_path
from ..format.reader import PermFile

RANDOM_SHIFT_STD = float(np.sqrt(1.0 / 6.0))


@dataclass
class LayerProfile:
    name: str
    shape: list[int]
    m: int
    sorted_values: np.ndarray  # float64, the layer's values in ascending order
    shift: np.ndarray  # per weight: (trained rank - initial rank) / m, within its row

    @property
    def shift_std(self) -> float:
        return float(self.shift.std()) if self.shift.size else 0.0

    @property
    def mean_abs_shift(self) -> float:
        return float(np.abs(self.shift).mean()) if self.shift.size else 0.0

    @property
    def unmoved(self) -> float:
        """Fraction of weights still holding their own initial value's rank."""
        return float((self.shift == 0).mean()) if self.shift.size else 0.0


def _row_ranks(keys: np.ndarray) -> np.ndarray:
    order = np.argsort(keys, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(keys.shape[1])[None, :].repeat(len(keys), 0), 1)
    return ranks


def weight_profiles(
    path: str | os.PathLike[str], max_bytes: int | None = None
) -> list[LayerProfile]:
    """Profiles of every seeded tensor of a `.perm` file."""
    out = []
    with PermFile(path, max_bytes=max_bytes) as pf:
        for name in pf:
            e = pf.entry(name)
            if e.seeded is None:
                continue
            seed = e.seeded.seed
            rows, m = seed.rows, seed.m
            trained = pf.tensor(name).reshape(rows, m)
            init = initial_rows(seed.spec, seed.key, e.shape, e.dtype)
            shift = (
                _row_ranks(order_keys(trained, e.dtype)) - _row_ranks(order_keys(init, e.dtype))
            ) / max(m, 1)
            values = as_float64(trained, e.dtype)
            out.append(
                LayerProfile(name, list(e.shape), m, np.sort(values.reshape(-1)), shift.reshape(-1))
            )
    return out


def plot_profiles(
    profiles: list[LayerProfile], path: str | os.PathLike[str], title: str = ""
) -> None:
    """Left: each layer's weight profile; right: histograms of rank shifts."""
    matplotlib = require("matplotlib", "the profile plot", extra="train")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    bins = np.linspace(-1, 1, 81)
    for p in profiles:
        x = np.linspace(0, 1, p.sorted_values.size)
        a1.plot(x, p.sorted_values, label=p.name)
        a2.hist(
            p.shift,
            bins=bins,
            histtype="step",
            density=True,
            label=f"{p.name} (std {p.shift_std:.3f})",
        )
    a1.set(
        xlabel="position in sorted order (fraction)",
        ylabel="value",
        title="weight profile (sorted values)",
    )
    a2.set(
        xlabel="rank shift / row length",
        ylabel="density",
        title=f"rank shift from init (random: std {RANDOM_SHIFT_STD:.3f})",
    )
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
