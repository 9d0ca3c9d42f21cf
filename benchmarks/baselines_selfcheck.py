"""Self-check of benchmarks/baselines.py on a random LeNet-300-style state dict.

Run: ``python benchmarks/baselines_selfcheck.py``. Prints bits per weight and relative L2 error
of every baseline, NNCodec's status, and NNCodec's encode / decode times on the 235k tensor.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from baselines import BASELINES, NNCODEC_ERROR, NNCODEC_VERSION, nncodec_roundtrip


def make_state(seed: int = 0) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Random float32 state dict with normal(0, 0.05) values, and its weight tensor names."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"0.weight": (300, 784), "0.bias": (300,), "1.weight": (10, 300)}
    state = {name: torch.randn(shape, generator=gen) * 0.05 for name, shape in shapes.items()}
    return state, [name for name, t in state.items() if t.dim() >= 2]


def rel_l2(
    state: dict[str, torch.Tensor], decoded: dict[str, torch.Tensor], names: list[str]
) -> float:
    """||w - w_hat|| / ||w|| over all the named tensors together."""
    num = sum(float(((state[n] - decoded[n]).double() ** 2).sum()) for n in names)
    den = sum(float((state[n].double() ** 2).sum()) for n in names)
    return (num / den) ** 0.5


def check_contract(
    state: dict[str, torch.Tensor], decoded: dict[str, torch.Tensor], names: list[str]
) -> None:
    """Assert the decoded state has every key, right shapes and dtypes, non-weights untouched."""
    assert set(decoded) == set(state), "decoded state must have exactly the keys of state"
    for key, ref in state.items():
        got = decoded[key]
        assert got.shape == ref.shape and got.dtype == torch.float32, key
        if key not in names:
            assert torch.equal(got, ref), f"{key} must pass through unchanged"


def main() -> int:
    """Run every baseline, print the table; return 1 if an available baseline failed."""
    torch.set_num_threads(1)
    state, names = make_state()
    numel = sum(state[n].numel() for n in names)
    print(f"weights: {names}, {numel} values")
    if NNCODEC_ERROR is None:
        print(f"nncodec {NNCODEC_VERSION}: available")
    else:
        print(f"nncodec unavailable: {NNCODEC_ERROR}")
    print()
    print(f"{'name':<20} {'bits/weight':>11} {'rel L2 error':>13} {'seconds':>8}")
    failures = 0
    for name, codec in BASELINES.items():
        t0 = time.perf_counter()
        try:
            decoded, bits = codec(state, names)
        except RuntimeError as exc:
            if name.startswith("nncodec") and NNCODEC_ERROR is not None:
                print(f"{name:<20} skipped: {exc}")
                continue
            raise
        seconds = time.perf_counter() - t0
        try:
            check_contract(state, decoded, names)
        except AssertionError as exc:
            print(f"{name:<20} CONTRACT VIOLATION: {exc}")
            failures += 1
            continue
        err = rel_l2(state, decoded, names)
        print(f"{name:<20} {bits / numel:>11.4f} {err:>13.3e} {seconds:>8.3f}")

    if NNCODEC_ERROR is None:
        arrays = {"0.weight": state["0.weight"].numpy()}
        print()
        print("nncodec on 0.weight (300x784 = 235,200 weights), median of 5 runs:")
        print(f"{'qp':>5} {'bits/weight':>11} {'encode s':>9} {'decode s':>9}")
        for qp in (-44, -38, -32, -26, -20):
            runs = [nncodec_roundtrip(arrays, qp) for _ in range(5)]
            nbytes = runs[0][1]
            enc = statistics.median(r[2] for r in runs)
            dec = statistics.median(r[3] for r in runs)
            print(f"{qp:>5} {8 * nbytes / arrays['0.weight'].size:>11.4f} {enc:>9.4f} {dec:>9.4f}")
    if failures:
        print(f"{failures} baseline(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
