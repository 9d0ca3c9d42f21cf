"""Research harness: which low-rate forms of a seeded layer train well (issue 14).

Each layer of a model gets a *form*: the multiset its rows hold (a seeded init spec) and
how it is trained. ``latent`` forms keep a continuous copy of the weights that Adam
trains; the network always shows the stored multiset placed by the latent's ranks (a
straight-through estimate). Every result is one line of JSON in
``benchmarks/results/forms_study.jsonl``: the form, the cost of the stored rows (their
multinomial bound, in bits per weight) and the test accuracy of the model as stored.

    python benchmarks/forms_study.py --model lenet300 --forms tern:0.1 tern:0.2 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import permcodec
from permcodec.coding.arrangement import bound_bits, row_classes
from permcodec.core.dtypes import order_keys
from permcodec.core.initializers import InitSpec, initial_rows, row_shape
from permcodec.experiments.data import batches, load_dataset
from permcodec.experiments.models import build_model
from permcodec.experiments.train import evaluate_model
from permcodec.laperm import rank_order

RESULTS = Path(__file__).parent / "results" / "forms_study.jsonl"


def form_spec(form: str, shape: tuple[int, ...]) -> InitSpec:
    """The init spec of the stored rows of a form name (all train through a latent)."""
    kind, _, arg = form.partition(":")
    fan_in = math.prod(shape[1:])
    if kind == "tern":  # {-a, 0, +a}, density p, He-scaled a, random signs
        p = float(arg)
        a = math.sqrt(2.0 / (fan_in * p))
        return InitSpec("constant", value=a, random_sign=True, density=p)
    if kind == "sparse":  # He values at density p (zeros one class)
        return InitSpec("he_uniform", density=float(arg))
    if kind in ("he", "lev"):  # dense He-uniform (lev: replaced by levels in setup)
        return InitSpec("he_uniform")
    raise ValueError(form)


def level_rows(form: str, rows: int, m: int, fan_in: int) -> np.ndarray | None:
    """Sorted rows of a ``lev:L:p`` form: exact counts of each level (None otherwise).
    Levels are the midpoints (in probability) of 2L equal slices of a He-normal's
    nonzero mass, scaled so the row's variance is He's 2 / fan_in."""
    kind, _, arg = form.partition(":")
    if kind != "lev":
        return None
    from statistics import NormalDist

    L_str, p_str = arg.split(":")
    L, p = int(L_str), float(p_str)
    nz = round(p * m)
    nz -= nz % (2 * L)
    per = nz // (2 * L)
    q = [NormalDist().inv_cdf(0.5 + 0.5 * (j + 0.5) / L) for j in range(L)]
    vals = np.array([-x for x in reversed(q)] + [x for x in q], dtype=np.float64)
    row = np.concatenate(
        [np.full(per, v) for v in vals[:L]]
        + [np.zeros(m - nz)]
        + [np.full(per, v) for v in vals[L:]]
    )
    scale = math.sqrt(2.0 / fan_in) / max(math.sqrt((row**2).mean()), 1e-12)
    row = np.sort((row * scale).astype(np.float32))
    return np.tile(row, (rows, 1))


class Projected(nn.Module):
    """weight = the stored multiset placed by the latent's ranks (straight through)."""

    def __init__(self, sorted_vals: torch.Tensor, shape: torch.Size) -> None:
        super().__init__()
        self.register_buffer("sorted_vals", sorted_vals)
        self.shape = shape

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        rows, m = self.sorted_vals.shape
        order = rank_order(latent.detach().reshape(rows, m))
        placed = torch.empty_like(self.sorted_vals).scatter_(1, order, self.sorted_vals)
        placed = placed.reshape(self.shape)
        return latent + (placed - latent).detach()


def setup(model: nn.Module, forms: dict[str, str], seed: int, latent_init: str) -> float:
    """Seed every weight with its form; returns the stored rows' bound (bits)."""
    specs: dict[str, Any] = {}
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            specs[name] = form_spec(forms[name], tuple(p.shape)) if name in forms else None
    plan = permcodec.init(model, seed, overrides=specs)
    total = 0.0
    mods = dict(model.named_modules())
    for name, tp in plan.tensors.items():
        mod_name, _, pname = name.rpartition(".")
        mod = mods[mod_name]
        shape = tuple(getattr(mod, pname).shape)
        init = initial_rows(tp.spec, tp.key, shape, "float32")
        rows, m = row_shape(shape, tp.spec["granularity"])
        lev = level_rows(forms.get(name, ""), rows, m, math.prod(shape[1:]))
        if lev is not None:  # the multiset is the levels, arranged as the init ranks
            order = np.argsort(init, axis=1, kind="stable")
            placed = np.empty_like(lev)
            np.put_along_axis(placed, order, lev, axis=1)
            init = placed
            with torch.no_grad():
                getattr(mod, pname).copy_(torch.from_numpy(init.reshape(shape)))
        rc = row_classes(init, order_keys(init, "float32"))
        total += bound_bits(rc.counts)
        sorted_vals = torch.from_numpy(np.sort(init, axis=1).copy())
        if latent_init == "he":  # a continuous latent with the init's ranks
            he = permcodec.Plan(seed + 99).add(name, InitSpec("he_uniform"), shape)
            ref = np.sort(initial_rows(he.spec, he.key, shape, "float32"), axis=1)
            order = rank_order(getattr(mod, pname).detach().reshape(rows, m))
            lat = torch.empty((rows, m)).scatter_(1, order, torch.from_numpy(ref.copy()))
            with torch.no_grad():
                getattr(mod, pname).copy_(lat.reshape(shape))
        torch.nn.utils.parametrize.register_parametrization(
            mod, pname, Projected(sorted_vals, torch.Size(shape))
        )
    return total


INITIAL: dict[str, torch.Tensor] = {}


def moved_fraction(model: nn.Module) -> float:
    """Fraction of projected weights that hold the value they were initialized with."""
    same = total = 0
    for name, mod in model.named_modules():
        if torch.nn.utils.parametrize.is_parametrized(mod):
            for pname in mod.parametrizations:
                w = getattr(mod, pname).detach()
                same += int((w == INITIAL[f"{name}.{pname}"]).sum())
                total += w.numel()
    return same / max(total, 1)


def run(args: argparse.Namespace, form: str) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    data = load_dataset("fashion-mnist")
    model = build_model(
        args.model,
        in_channels=data.in_channels,
        image_size=data.image_size,
        num_classes=data.num_classes,
    )
    weights = [n for n, p in model.named_parameters() if p.dim() >= 2]
    keep = set(args.exact or [])
    per_layer = dict(item.split("=", 1) for item in args.layer_forms or [])
    forms = {n: per_layer.get(n, form) for n in weights if n not in keep}
    numel = sum(dict(model.named_parameters())[n].numel() for n in weights)
    bound = setup(model, forms, args.seed, args.latent_init)
    for name, mod in model.named_modules():
        if torch.nn.utils.parametrize.is_parametrized(mod):
            for pname in mod.parametrizations:
                INITIAL[f"{name}.{pname}"] = getattr(mod, pname).detach().clone()
    exact_params = [n for n in weights if n in keep]
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    steps = 0
    for epoch in range(args.epochs):
        model.train()
        for xb, yb in batches(data.x_train, data.y_train, 128, shuffle=True, generator=gen):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            steps += 1
        _, acc = evaluate_model(model, data.x_test, data.y_test)
        print(f"{args.model} {form} epoch {epoch + 1}: {acc:.2f}%", flush=True)
    seconds = time.time() - t0
    _, acc = evaluate_model(model, data.x_test, data.y_test)
    stay = moved_fraction(model)
    exact_bits = 32 * sum(
        dict(model.named_parameters()).get(n, torch.zeros(0)).numel() for n in exact_params
    )
    rec = {
        "model": args.model,
        "form": form,
        "exact_layers": sorted(keep),
        "layer_forms": per_layer,
        "epochs": args.epochs,
        "lr": args.lr,
        "latent_init": args.latent_init,
        "seed": args.seed,
        "bound_bpw": bound / numel,
        "exact_float_bpw": exact_bits / numel,
        "test_acc": acc,
        "unmoved": stay,
        "seconds": seconds,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="lenet300")
    ap.add_argument("--forms", nargs="+", default=["tern:0.1"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact", nargs="*", help="weights left as trained floats")
    ap.add_argument("--layer-forms", nargs="*", help="NAME=FORM for single layers")
    ap.add_argument("--latent-init", default="same", choices=["same", "he"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for form in args.forms:
        run(args, form)


if __name__ == "__main__":
    main()
