"""Rate control: init(model, seed, bpw=R) keeps the weight matrices within R bits per
weight, container included; the levels forms it uses are exact arrangements of their
seeded init, decode bit for bit and need format version 5."""

from __future__ import annotations

import copy
import io
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hostile_files import seal, split
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import permcodec
from permcodec import FormatError, InitSpec, PlanError
from permcodec.coding.rate import (
    CONTAINER_BYTES,
    SPARSE_NONZEROS,
    Form,
    allocate,
    cost_bits,
    ladder,
    row_bits,
)
from permcodec.core.initializers import generate, level_counts, level_values, resolve
from permcodec.format import container
from permcodec.torch import TorchOps, to_numpy
from permcodec.torch.calibrate import loss_increase


def _model() -> nn.Module:
    """100k weights: large enough that the container is a small part of 0.5 bit each."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def _conv() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),  # rows of 9 values: left unseeded
        nn.ReLU(),
        nn.Conv2d(8, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 16 * 16, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, shape=(32, 1, 16, 16)) -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(shape, generator=g)
        y = torch.randint(0, 10, (shape[0],), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


# ---------------------------------------------------------------- the levels kind


@settings(max_examples=60, deadline=None)
@given(
    levels=st.integers(1, 8),
    density=st.sampled_from([0.05, 0.3, 0.5, 1.0]),
    rows=st.integers(1, 6),
    m=st.integers(1, 120),
    seed=st.integers(0, 2**32 - 1),
)
def test_levels_rows_hold_exact_counts_and_match_on_torch(levels, density, rows, m, seed):
    spec = resolve(InitSpec("levels", levels=levels, scale=0.05, density=density), (rows, m))
    key = (seed, seed ^ 0x5A5A)
    got = generate(spec, key, (rows, m))
    assert got.dtype == np.float32
    assert np.array_equal(got, generate(spec, key, (rows, m), TorchOps()).numpy())
    values = np.float32(level_values(levels, 0.05))
    counts = level_counts(levels, density, m)
    for row in got:
        assert [int((row == v).sum()) for v in values[:-1]] == counts[:-1]
        assert int((row == 0).sum()) == (counts[-1] if density < 1 else 0)


def test_levels_values_are_symmetric_normal_midpoints():
    vals = level_values(2, 1.0)
    assert vals[:2] == (-vals[3], -vals[2]) and vals[-1] == 0.0
    assert vals[2] == pytest.approx(0.3186393639643752) and vals[3] == pytest.approx(
        1.1503493803760079
    )


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(levels=0.5, scale=1.0), "whole number"),
        (dict(levels=200.0, scale=1.0), "whole number"),
        (dict(levels=2.0, scale=0.0), "scale > 0"),
        (dict(levels=2.0, scale=float("nan")), "finite"),
    ],
)
def test_bad_levels_specs_are_refused(params, match):
    with pytest.raises(PlanError, match=match):
        resolve(InitSpec("levels", **params), (3, 10))


def test_files_with_levels_are_version_5_and_refused_as_version_4(tmp_path: Path):
    plan = permcodec.Plan(3)
    tp = plan.add("w", InitSpec("levels", levels=1, scale=0.1, density=0.2), (4, 40))
    w = generate(tp.spec, tp.key, (4, 40))[:, ::-1].copy()
    permcodec.numpy.save({"w": w, "b": np.zeros(4, np.float32)}, tmp_path / "l.perm", plan)
    with permcodec.open(tmp_path / "l.perm") as f:
        assert f.version == 5 and f.entry("w").coding in ("row-rans", "bucket-rans")
        assert np.array_equal(f.tensor("w"), w)
    header, payloads, _ = split((tmp_path / "l.perm").read_bytes())
    old = seal(header, payloads, version=4)
    with pytest.raises(FormatError, match="levels kind needs format version 5"):
        container.read_header(io.BytesIO(old), len(old))


# ---------------------------------------------------------------- allocation


SHAPES = {
    "a": {"1.weight": (300, 784), "3.weight": (100, 300), "5.weight": (10, 100)},
    "b": {"c1": (8, 1, 3, 3), "c2": (32, 8, 3, 3), "fc": (64, 8192)},
}


@pytest.mark.parametrize("case", list(SHAPES))
def test_allocation_meets_the_rate_and_spends_more_as_it_grows(case):
    shapes = SHAPES[case]
    spent = []
    for bpw in (0.5, 1, 2, 4):
        alloc = allocate(shapes, bpw)
        assert alloc.bits_per_weight <= bpw
        total = sum(cost_bits(n, s, alloc.forms[n]) for n, s in shapes.items())
        assert alloc.bits == pytest.approx(total + 8 * CONTAINER_BYTES)  # container included
        spent.append(alloc.bits_per_weight)
    assert spent == sorted(spent) and spent[-1] > 2 * spent[0]


def test_short_rows_stay_unseeded_and_too_small_a_rate_is_refused():
    assert ladder(9) == [Form("unseeded")]
    alloc = allocate(SHAPES["b"], 2.0)
    assert alloc.forms["c1"] == Form("unseeded")
    with pytest.raises(ValueError, match="too few"):
        allocate(SHAPES["b"], 0.03)
    with pytest.raises(ValueError, match="positive"):
        allocate(SHAPES["b"], 0.0)


@given(st.integers(min_value=32, max_value=20000))
def test_forms_below_one_percent_are_for_rows_long_enough_to_keep_8_nonzeros(m: int):
    forms = ladder(m)
    sparse = [f for f in forms if f.kind == "levels" and f.density < 0.01]
    assert all(m * f.density >= SPARSE_NONZEROS for f in sparse)
    if m * 0.001 >= SPARSE_NONZEROS:  # long enough for the sparsest form
        assert min(f.density for f in sparse) == 0.001
    elif m * 0.0025 >= SPARSE_NONZEROS:
        assert min(f.density for f in sparse) == 0.0025
    if m * 0.0075 < SPARSE_NONZEROS:  # too short for any
        assert not sparse
    costs = [row_bits(f, m) for f in forms]
    assert costs[0] == min(costs)  # the cheapest first


def test_a_wide_classifier_reaches_rates_below_the_one_percent_forms():
    shapes = {"dense": (256, 12544), "out": (10, 256)}
    alloc = allocate(shapes, 0.04)
    assert alloc.forms["dense"].density == 0.0025 and alloc.bits_per_weight <= 0.04
    alloc = allocate(shapes, 0.02)  # 12.5 nonzeros a row
    assert alloc.forms["dense"].density == 0.001 and alloc.bits_per_weight <= 0.02
    with pytest.raises(ValueError, match="too few"):
        allocate({"fc": (300, 784)}, 0.05)  # rows of 784 stop at 1% (0.09 bits)


def test_more_sensitive_matrices_get_more_bits():
    shapes = {"x": (64, 512), "y": (64, 512)}
    for x, y in ((50.0, 1.0), (1.0, 50.0)):
        tilted = allocate(shapes, 1.0, {"x": x, "y": y})
        more, less = ("x", "y") if x > y else ("y", "x")
        assert row_bits(tilted.forms[more], 512) > row_bits(tilted.forms[less], 512)


def _bits_per_weight(plan: permcodec.Plan, model: nn.Module, name: str) -> float:
    spec, m = plan.tensors[name].spec, model.get_parameter(name)[0].numel()
    form = Form("levels", int(spec["levels"]), spec["density"])
    return row_bits(form, m) / m


def test_allocation_by_weights_narrows_the_gap_between_long_and_short_rows():
    """sensitivity="rows" gives long rows fewer bits per weight than short ones;
    "weights" (the default) weighs every weight alike, so the gap narrows."""

    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(1024, 96), nn.ReLU(), nn.Linear(96, 96))

    ratios = {}
    for how in ("rows", "weights"):
        net = model()
        plan = permcodec.init(net, 0, bpw=1.0, sensitivity=how)
        long, short = (_bits_per_weight(plan, net, n) for n in ("0.weight", "2.weight"))
        assert long < short
        ratios[how] = long / short
    assert ratios["weights"] > ratios["rows"]
    net = model()
    default = permcodec.init(net, 0, bpw=1.0)
    assert _bits_per_weight(default, net, "0.weight") / _bits_per_weight(
        default, net, "2.weight"
    ) == pytest.approx(ratios["weights"])
    with pytest.raises(permcodec.PlanError, match="'rows', 'weights' or a mapping"):
        permcodec.init(model(), 0, bpw=1.0, sensitivity="size")


# ---------------------------------------------------------------- init, LaPerm, save


@pytest.mark.parametrize("bpw", [0.5, 1.0, 2.0, 4.0])
def test_init_at_a_rate_trains_saves_within_it_and_decodes_exactly(tmp_path: Path, bpw):
    model = _model()
    plan = permcodec.init(model, 7, bpw=bpw)
    assert plan.bpw == bpw and all(tp.latent for tp in plan.tensors.values())
    opt = permcodec.LaPerm(model, torch.optim.Adam(model.parameters(), 1e-2))
    _train(model, opt, 30)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", permcodec.LossyWarning)  # nothing is lost
        permcodec.save(model, tmp_path / "m.perm")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # saving does not touch training
    with permcodec.open(tmp_path / "m.perm") as f:
        split_ = f.size_split()
        assert split_["bits_per_weight"] <= bpw
        for name, tp in plan.tensors.items():
            got = f.tensor(name)
            init = generate(tp.spec, tp.key, got.shape).reshape(got.shape[0], -1)
            # an exact arrangement of the seeded init, row by row ...
            assert np.array_equal(np.sort(got.reshape(init.shape), 1), np.sort(init, 1))
            # ... that the training moved
            assert not np.array_equal(got.reshape(init.shape), init)
    state = permcodec.load(tmp_path / "m.perm")
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k


@pytest.mark.parametrize(
    "width, bpw, density, nonzeros", [(4096, 0.06, 0.0025, 10), (8192, 0.03, 0.001, 8)]
)
def test_a_sub_one_percent_form_trains_saves_within_the_rate_and_decodes_exactly(
    tmp_path: Path, width: int, bpw: float, density: float, nonzeros: int
):
    model = nn.Sequential(nn.Flatten(), nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, 10))
    plan = permcodec.init(model, 3, bpw=bpw)
    assert plan.tensors["1.weight"].spec["density"] == density
    opt = permcodec.LaPerm(model, torch.optim.Adam(model.parameters(), 1e-2))
    _train(model, opt, 10, shape=(16, 1, 64, width // 64))
    w = model.get_parameter("1.weight")
    assert ((w != 0).sum(1) == nonzeros).all() and (w > 0).sum() == (w < 0).sum()
    permcodec.save(model, tmp_path / "w.perm")
    with permcodec.open(tmp_path / "w.perm") as f:
        assert f.size_split()["bits_per_weight"] <= bpw
    state = permcodec.load(tmp_path / "w.perm")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_unseeded_short_rows_train_as_floats_and_count_in_the_rate(tmp_path: Path):
    model = _conv()
    plan = permcodec.init(model, 1, bpw=1.0)
    assert "0.weight" not in plan.tensors and "2.weight" in plan.tensors
    opt = permcodec.LaPerm(model, torch.optim.Adam(model.parameters(), 1e-2))
    _train(model, opt, 5)
    permcodec.save(model, tmp_path / "c.perm")
    with permcodec.open(tmp_path / "c.perm") as f:
        assert f.size_split()["bits_per_weight"] <= 1.0
        assert f.entry("0.weight").coding in ("raw", "raw-zstd")


def test_latent_training_resumes_identically_from_its_state_dict():
    def make():
        model = _model()
        permcodec.init(model, 4, bpw=0.8)
        return model, permcodec.LaPerm(model, torch.optim.Adam(model.parameters(), 1e-2))

    model, opt = make()
    _train(model, opt, 6)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = copy.deepcopy(opt.state_dict())  # torch hands out its live state tensors
    _train(model, opt, 6)
    again, opt2 = make()
    again.load_state_dict(state)
    opt2.load_state_dict(opt_state)
    _train(again, opt2, 6)
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_bpw_with_a_scheme_or_density_is_refused():
    with pytest.raises(PlanError, match="drop density"):
        permcodec.init(_model(), 0, bpw=1.0, density=0.5)
    with pytest.raises(PlanError, match="drop scheme"):
        permcodec.init(_model(), 0, "binary", bpw=1.0)
    with pytest.raises(PlanError, match="too few"):
        permcodec.init(_model(), 0, bpw=0.01)


def test_plan_with_latent_entries_survives_a_checkpoint(tmp_path: Path):
    model = _model()
    plan = permcodec.init(model, 2, bpw=1.5)
    permcodec.save_checkpoint(model, tmp_path / "m.pt")
    _, back = permcodec.load_checkpoint(tmp_path / "m.pt")
    assert back.bpw == 1.5 and back.tensors == plan.tensors
    assert math.isclose(sum(v.latent for v in back.tensors.values()), len(plan.tensors))


# ---------------------------------------------------------------- re-coding, calibrated


class _DeadBranch(nn.Module):
    """Two matrices alike, but the second one's output is multiplied by zero: its values
    never reach the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.live = nn.Linear(256, 64, bias=False)
        self.dead = nn.Linear(256, 64, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.live(x) + 0.0 * self.dead(x)


def _depth(path: Path, name: str) -> int | None:
    """A re-coded matrix's bucket depth (None: kept exact)."""
    fields = permcodec.open(path).entry(name).fields
    return None if fields.get("exact", True) else fields["bits"]


@pytest.mark.filterwarnings("ignore::permcodec.LossyWarning")
def test_calibrated_recoding_spends_the_bits_where_the_loss_is(tmp_path: Path):
    """save(bpw=R, calibration=...) measures what each depth costs the model: a matrix
    the loss never sees drops to one bit, while relative error treats both alike; either
    way the file is within R and decodes to exact arrangements of the init."""
    model = _DeadBranch()
    plan = permcodec.init(model, 3)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # an arrangement other than the init, as training leaves it
        g = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.copy_(torch.gather(p, 1, torch.argsort(torch.rand(p.shape, generator=g), 1)))
    x = torch.randn(512, 256, generator=g)
    y = model(x).argmax(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain, calibrated = tmp_path / "plain.perm", tmp_path / "calibrated.perm"
    permcodec.save(model, plain, bpw=2.5)
    permcodec.save(model, calibrated, bpw=2.5, calibration=[(x[:256], y[:256]), (x[256:], y[256:])])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # calibration puts every value back
    assert _depth(plain, "live.weight") == _depth(plain, "dead.weight") > 1
    assert _depth(calibrated, "dead.weight") == 1
    live = _depth(calibrated, "live.weight")
    assert live is None or live > _depth(plain, "live.weight")
    for path in (plain, calibrated):
        with permcodec.open(path) as f:
            assert f.size_split()["bits_per_weight"] <= 2.5
        for name, t in permcodec.load(path).items():
            assert torch.equal(t.sort(1).values, init[name].sort(1).values), name
    assert plan.tensors.keys() == {"live.weight", "dead.weight"}


def test_calibration_needs_a_model_a_rate_and_data(tmp_path: Path):
    model = _DeadBranch()
    permcodec.init(model, 3)
    batch = [(torch.randn(4, 256), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(PlanError, match="give bpw=R too"):
        permcodec.save(model, tmp_path / "a.perm", calibration=batch)
    with pytest.raises(PlanError, match="pass the model"):
        permcodec.save(model.state_dict(), tmp_path / "b.perm", bpw=2, calibration=batch,
                       plan=model.permcodec_plan)  # fmt: skip
    with pytest.raises(permcodec.PermcodecError, match="at least one batch"):
        permcodec.save(model, tmp_path / "c.perm", bpw=2, calibration=[])


def test_loss_increase_puts_values_back_even_when_the_loss_fails():
    model = _DeadBranch()
    permcodec.init(model, 3)
    before = copy.deepcopy(model.state_dict())
    calls = []

    def flaky(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return F.cross_entropy(out, y)

    loss = loss_increase(model, [(torch.randn(8, 256), torch.zeros(8, dtype=torch.long))], flaky)
    with pytest.raises(RuntimeError, match="boom"):
        loss("live.weight", np.zeros((64, 256), np.float32))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(permcodec.PermcodecError, match="no parameter 'nope'"):
        loss("nope", np.zeros(3, np.float32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_loss_increase_measures_every_float_dtype(dtype):
    """A matrix the loss never sees costs exactly nothing; zeroing the one it sees costs
    the loss of a blank output (measured in float32 even for half-precision models)."""
    model = _DeadBranch().to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 256, generator=g).to(dtype)
    y = model(x).float().argmax(1)
    loss = loss_increase(model, [(x, y)])
    zeros = to_numpy(torch.zeros_like(model.live.weight))[0]
    assert loss("dead.weight", zeros) == 0.0
    assert loss("live.weight", zeros) > 1.0
