"""Approximating models trained without LaPerm: the quantile spec, rank-matched
arrangements, what stays exact, and the CLI's report."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import permcodec
from permcodec.cli.main import main
from permcodec.core.approximate import approximate_items, fit_knots
from permcodec.core.initializers import InitSpec, generate, resolve
from permcodec.core.plan import Plan
from permcodec.errors import PlanError
from permcodec.torch import TorchOps


@settings(max_examples=30, deadline=None)
@given(
    knots=st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=300),
    seed=st.integers(0, 2**32 - 1),
)
def test_quantile_values_identical_on_numpy_and_torch(knots, seed):
    spec = resolve(InitSpec("quantile", knots=sorted(knots)), (7, 50))
    a = generate(spec, (seed, 1), (7, 50))
    b = generate(spec, (seed, 1), (7, 50), TorchOps("cpu")).numpy().reshape(a.shape)
    assert a.tobytes() == b.tobytes()
    assert a.min() >= np.float32(min(knots)) and a.max() <= np.float32(max(knots))


def test_quantile_values_follow_the_knots():
    rng = np.random.default_rng(0)
    target = rng.laplace(0, 0.03, 100_000)
    spec = resolve(InitSpec("quantile", knots=fit_knots(target, 257)), (100_000,))
    v = generate(spec, (3, 4), (100_000,)).astype(np.float64)
    for q in (0.01, 0.1, 0.5, 0.9, 0.99):
        assert np.quantile(v, q) == pytest.approx(np.quantile(target, q), abs=2e-3)


@pytest.mark.parametrize(
    "knots", [[1.0], [2.0, 1.0], [0.0, float("nan")], "0,1", [True, False], [0.0] * 5000]
)
def test_bad_knots_are_refused(knots):
    with pytest.raises(PlanError, match="knot"):
        resolve(InitSpec("quantile", knots=knots), (3, 3))


def _adam_like() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10), nn.Linear(10, 3))
    with torch.no_grad():  # heavier-tailed than any init, as trained weights are
        for layer in (model[0], model[2]):
            layer.weight.copy_(torch.distributions.Laplace(0, 0.05).sample(layer.weight.shape))
    return model


@pytest.mark.parametrize("bits", [None, 8, 3])
def test_approximate_stores_arrangements_with_reported_error(tmp_path, bits):
    model = _adam_like()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(permcodec.LossyWarning):
        report = permcodec.save(model, tmp_path / "a.perm", approximate=True, bits=bits, seed=5)
    by_name = {r.name: r for r in report}
    assert by_name["0.weight"].seeded and by_name["2.weight"].seeded
    assert not by_name["3.weight"].seeded  # 30 values: too small to pay
    assert not by_name["0.bias"].seeded
    got = permcodec.load(tmp_path / "a.perm")
    for name in ("0.bias", "2.bias", "3.weight", "3.bias"):
        assert torch.equal(got[name], sd[name]), name
    with permcodec.open(tmp_path / "a.perm") as pf:
        for name in ("0.weight", "2.weight"):
            e = pf.entry(name)
            w, g = sd[name].double(), got[name].double()
            err = float((w - g).norm() / w.norm())
            assert e.rel_error == pytest.approx(err, rel=1e-9)
            assert by_name[name].rel_error == pytest.approx(err, rel=1e-9)
            assert 0 < err < (0.8 if bits == 3 else 0.5)
            # an exact arrangement of the seeded values, in the trained weights' order
            init = generate(e.fields["spec"], tuple(e.fields["key"]), e.shape)
            assert np.array_equal(np.sort(got[name].numpy().ravel()), np.sort(init.ravel()))
            assert e.fields["bits"] == (bits or 8) and e.fields["spec"]["granularity"] == "tensor"
    assert not hasattr(model, "permcodec_plan")


def test_approximate_leaves_planned_tensors_and_the_plan_alone(tmp_path):
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    permcodec.init(model, 1)
    plan_before = model.permcodec_plan.to_dict()
    with torch.no_grad():
        model[2].weight.mul_(1.5)  # no longer an arrangement of its init
    with pytest.raises(permcodec.NotAnArrangementError):
        permcodec.save(model, tmp_path / "x.perm")
    del model.permcodec_plan.tensors["2.weight"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", permcodec.LossyWarning)
        report = permcodec.save(model, tmp_path / "a.perm", approximate=True)
    assert [r.name for r in report if r.seeded] == ["2.weight"]
    got = permcodec.load(tmp_path / "a.perm")
    assert torch.equal(got["0.weight"], model[0].weight)
    assert set(model.permcodec_plan.tensors) == {"0.weight"}
    assert model.permcodec_plan.to_dict()["seed"] == plan_before["seed"]


def test_approximate_items_core_without_torch():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 40)).astype(np.float32)
    items, plan, originals, depths, report = approximate_items([("w", w, "float32")], Plan(0), 4)
    assert depths == {"w": 4}
    assert set(plan.tensors) == {"w"} and plan.tensors["w"].spec["granularity"] == "tensor"
    assert originals["w"] is w and report[0].seeded
    assert items[0][1].shape == w.shape


def test_cli_encode_approximate_plain_state_dict(tmp_path: Path):
    model = _adam_like()
    torch.save(model.state_dict(), tmp_path / "adam.pt")
    r = CliRunner().invoke(main, ["encode", str(tmp_path / "adam.pt")])
    assert r.exit_code == 1 and "--approximate" in r.stderr
    r = CliRunner().invoke(main, ["encode", str(tmp_path / "adam.pt"), "--approximate"])
    assert r.exit_code == 0, r.stderr
    assert "lossy: 0.weight at 8 bits: relative L2 error" in r.stdout
    assert "kept exact: 3.weight (fewer than 256 values)" in r.stdout
    r = CliRunner().invoke(
        main, ["encode", str(tmp_path / "adam.pt"), "--approximate", "--bits", "2", "--force"]
    )
    assert r.exit_code == 0, r.stderr
    assert "lossy: 2.weight at 2 bits: relative L2 error" in r.stdout


def test_quantile_spec_files_round_trip_as_row_rans(tmp_path):
    model = nn.Sequential(nn.Linear(40, 30))
    permcodec.init(model, 0, InitSpec("quantile", knots=[-0.1, 0.0, 0.3]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w = model[0].weight
        w.copy_(torch.gather(w, 1, torch.argsort(torch.rand(w.shape, generator=g), 1)))
    permcodec.save(model, tmp_path / "q.perm")
    with permcodec.open(tmp_path / "q.perm") as pf:
        assert pf.entry("0.weight").coding == "row-rans"
    assert torch.equal(permcodec.load(tmp_path / "q.perm")["0.weight"], model[0].weight)
