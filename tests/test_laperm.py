"""LaPerm behaves like a torch optimizer and keeps every row an exact arrangement."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import permcodec
from permcodec.core.dtypes import order_keys
from permcodec.core.initializers import initial_rows as init_rows
from permcodec.core.initializers import row_shape
from permcodec.errors import PlanError
from permcodec.laperm import rank_order
from permcodec.torch import to_numpy

ROOT = Path(__file__).resolve().parents[1]


def small_model(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).to(
        dtype
    )


def task(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g)
    return x, (x[:, :3] * torch.tensor([1.0, -2.0, 0.5])).argmax(1)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 0) -> list[float]:
    losses = []
    for i in range(steps):
        x, y = task(seed=seed + i)
        opt.zero_grad()
        loss = F.cross_entropy(model(x.to(next(model.parameters()).dtype)), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def assert_rows_are_arrangements(model: nn.Module) -> None:
    """Every seeded row holds exactly the bit patterns of its initial multiset."""
    plan = model.permcodec_plan
    params = dict(model.named_parameters())
    for name, tp in plan.tensors.items():
        a, dt = to_numpy(params[name])
        rows, m = row_shape(tuple(a.shape), tp.spec["granularity"])
        init = init_rows(tp.spec, tp.key, tuple(a.shape), dt)
        got = np.sort(order_keys(a.reshape(rows, m), dt), axis=1)
        want = np.sort(order_keys(init, dt), axis=1)
        assert np.array_equal(got, want), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("granularity", ["row", "tensor"])
@pytest.mark.parametrize("density", [None, 0.3])
def test_every_sync_restores_the_initial_multiset(dtype, granularity, density) -> None:
    model = small_model(dtype)
    permcodec.init(model, 5, granularity=granularity, density=density)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = permcodec.LaPerm(model, torch.optim.Adam(model.parameters(), 1e-2), sync_period=3)
    for _ in range(4):
        train(model, opt, 3)
        assert opt.in_sync
        assert_rows_are_arrangements(model)
    changed = [
        k for k in ("0.weight", "3.weight") if not torch.equal(before[k], model.state_dict()[k])
    ]
    assert changed, "training moved no weight"


@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.Adam(p, lr=1e-2),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    ],
)
def test_inner_optimizers_learn_and_save_losslessly(tmp_path: Path, make) -> None:
    model = small_model()
    permcodec.init(model, 1)
    opt = permcodec.LaPerm(model, make(model.parameters()), sync_period=5)
    losses = train(model, opt, 60)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    train(model, opt, 2)  # leave the model out of sync: save stores the synced form
    assert not opt.in_sync
    before = {k: v.clone() for k, v in model.state_dict().items()}
    permcodec.save(model, tmp_path / "m.perm")
    assert not opt.in_sync  # saving never changes training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    opt.sync()
    loaded = permcodec.load(tmp_path / "m.perm")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded[k], v), k


def test_sync_period_int_and_schedules() -> None:
    model = small_model()
    permcodec.init(model, 2)
    opt = permcodec.LaPerm(model, torch.optim.Adam(model.parameters()), sync_period=4)
    train(model, opt, 10)
    assert opt.syncs == 2 and opt.steps_since_sync == 2
    by_epoch = permcodec.LaPerm(
        model,
        torch.optim.Adam(model.parameters()),
        sync_period=lambda epoch: 2 if epoch == 0 else 5,
    )
    train(model, by_epoch, 4)
    assert by_epoch.syncs == 2
    by_epoch.set_epoch(1)
    train(model, by_epoch, 5)
    assert by_epoch.syncs == 3
    by_step = permcodec.LaPerm(
        model,
        torch.optim.Adam(model.parameters()),
        sync_period=lambda step: 1 if step < 3 else 100,
        schedule_by="step",
    )
    train(model, by_step, 6)
    assert by_step.syncs == 2  # steps 1 and 2 sync; from step 3 on k = 100


def test_bad_sync_period_and_schedule_values() -> None:
    model = small_model()
    permcodec.init(model, 2)
    with pytest.raises(ValueError):
        permcodec.LaPerm(model, torch.optim.Adam(model.parameters()), sync_period=0)
    opt = permcodec.LaPerm(model, torch.optim.Adam(model.parameters()), sync_period=lambda e: 0)
    with pytest.raises(ValueError, match="positive int"):
        train(model, opt, 1)


def test_lr_scheduler_drives_the_inner_optimizer() -> None:
    model = small_model()
    permcodec.init(model, 3)
    inner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = permcodec.LaPerm(model, inner, sync_period=2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        for _ in range(4):
            train(model, opt, 1)
            sched.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.025)
    assert opt.param_groups is inner.param_groups


def test_resuming_from_state_dicts_is_bit_identical() -> None:
    def fresh():
        model = small_model()
        permcodec.init(model, 4)
        return model, permcodec.LaPerm(
            model, torch.optim.Adam(model.parameters(), 1e-2), sync_period=3
        )

    model_a, opt_a = fresh()
    train(model_a, opt_a, 14)

    model_b, opt_b = fresh()
    train(model_b, opt_b, 8)
    ckpt = {
        "model": {k: v.clone() for k, v in model_b.state_dict().items()},
        "opt": opt_b.state_dict(),
    }
    model_c, opt_c = fresh()
    model_c.load_state_dict(ckpt["model"])
    opt_c.load_state_dict(ckpt["opt"])
    assert opt_c.steps == 8 and opt_c.steps_since_sync == 2
    train(model_c, opt_c, 6, seed=8)
    for k, v in model_a.state_dict().items():
        assert torch.equal(model_c.state_dict()[k], v), k


def test_inner_state_kept_by_default_and_reset_on_request() -> None:
    for reset, expect_state in ((False, True), (True, False)):
        model = small_model()
        permcodec.init(model, 6)
        inner = torch.optim.Adam(model.parameters(), 1e-2)
        opt = permcodec.LaPerm(model, inner, sync_period=2, reset_state=reset)
        train(model, opt, 2)
        w = dict(model.named_parameters())["0.weight"]
        b = dict(model.named_parameters())["0.bias"]
        assert (w in inner.state) is expect_state
        assert b in inner.state  # parameters outside the plan are never touched


def test_parameters_outside_the_plan_train_freely() -> None:
    model = small_model()
    permcodec.init(model, 7)
    bn_before = model[1].weight.detach().clone()
    bias_before = model[0].bias.detach().clone()
    opt = permcodec.LaPerm(model, torch.optim.Adam(model.parameters(), 1e-2), sync_period=1)
    train(model, opt, 5)
    assert not torch.equal(bn_before, model[1].weight)
    assert not torch.equal(bias_before, model[0].bias)
    assert set(model.permcodec_plan.tensors) == {"0.weight", "3.weight"}


def test_errors_without_plan_or_with_parameters_missing() -> None:
    model = small_model()
    with pytest.raises(PlanError, match=r"permcodec\.init"):
        permcodec.LaPerm(model, torch.optim.Adam(model.parameters()))
    permcodec.init(model, 8)
    with pytest.raises(PlanError, match="not in the inner optimizer"):
        permcodec.LaPerm(model, torch.optim.Adam(model[3].parameters()))
    with pytest.raises(TypeError):
        permcodec.LaPerm(model, "adam")  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_ddp_two_processes_identical_weights_and_bytes(tmp_path: Path, model: str) -> None:
    """torchrun, gloo, 2 CPU processes: every rank writes the same .perm bytes (the
    transformer with AdamW, warmup and cosine, clipping and gradient accumulation)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "examples" / "ddp_laperm.py"),
            "--out-dir",
            str(tmp_path),
            "--steps",
            "20",
            "--model",
            model,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (tmp_path / "rank0.perm").read_bytes(), (tmp_path / "rank1.perm").read_bytes()
    assert a == b
    with permcodec.open(tmp_path / "rank0.perm") as f:
        seeded = {n for n in f if f.entry(n).seeded}
    if model == "mlp":
        assert seeded == {"0.weight", "2.weight"}
    else:  # every matrix: embedding, packed Q/K/V, attention out, MLP, head
        assert seeded == {
            "emb.weight",
            "block.self_attn.in_proj_weight",
            "block.self_attn.out_proj.weight",
            "block.linear1.weight",
            "block.linear2.weight",
            "head.weight",
        }


def test_synced_view_shows_the_stored_model_and_restores_training_weights() -> None:
    model = small_model()
    permcodec.init(model, 9)
    opt = permcodec.LaPerm(model, torch.optim.Adam(model.parameters(), 1e-2), sync_period=50)
    train(model, opt, 7)
    fast = {k: v.clone() for k, v in model.state_dict().items()}
    with opt.synced():
        assert_rows_are_arrangements(model)
        viewed = {k: v.clone() for k, v in model.state_dict().items()}
    for k, v in model.state_dict().items():
        assert torch.equal(v, fast[k]), k
    assert opt.steps_since_sync == 7 and opt.syncs == 0
    opt.sync()
    for k, v in model.state_dict().items():
        assert torch.equal(v, viewed[k]), k


@settings(max_examples=100, deadline=None)
@given(
    rows=st.integers(1, 6),
    m=st.integers(1, 40),
    pool=st.lists(
        st.sampled_from([0.0, -0.0, 1.5, -1.5, 2.0**-149, float("inf"), float("-inf"), 3.0]),
        min_size=1,
        max_size=8,
    ),
    seed=st.integers(0, 2**16),
)
def test_rank_order_is_torchs_stable_argsort(rows, m, pool, seed):
    """The fast CPU ranking of a sync orders rows exactly as torch's stable argsort,
    ties (also -0.0 against +0.0) by position."""
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor(pool, dtype=torch.float32)
    w = values[torch.randint(len(pool), (rows, m), generator=g)]
    w = torch.where(torch.rand(rows, m, generator=g) < 0.5, torch.randn(rows, m, generator=g), w)
    assert torch.equal(rank_order(w), torch.argsort(w, dim=1, stable=True))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 5),
    m=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    nan=st.booleans(),
)
def test_cpu_sync_kernels_place_values_as_torch_does(rows, m, seed, nan):
    """The C sync (rank, then place the sorted init by rank) equals torch's stable
    argsort and scatter, ties and -0.0 included; NaN is refused (torch's path runs)."""
    fast = pytest.importorskip("permcodec.kernels.sync_c")
    g = torch.Generator().manual_seed(seed)
    pool = torch.tensor([0.0, -0.0, 1.0, -2.5, 3.0, 1.0000001, 1.0000002, -2.5000002])
    w = pool[torch.randint(len(pool), (rows, m), generator=g)]
    w = torch.where(torch.rand(rows, m, generator=g) < 0.5, torch.randn(rows, m, generator=g), w)
    if nan:
        w[0, 0] = float("nan")
    sorted_init = torch.sort(torch.randn(rows, m, generator=g), dim=1).values
    want = torch.empty_like(w).scatter_(1, torch.argsort(w, dim=1, stable=True), sorted_init)
    b = fast.index_bits(m)
    packed, ok = fast.pack(w.numpy(), b)
    assert ok is not nan
    if ok:
        packed.sort(axis=1)
        got = w.clone()
        fast.place(packed, b, sorted_init.numpy(), got.numpy())
        assert torch.equal(got, want)
