"""Training from the command line: outputs, evaluate == end of training, profile, specs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from idx_files import learnable_mnist

import permcodec
from permcodec.cli.main import main
from permcodec.core.initializers import InitSpec, parse_spec
from permcodec.errors import PlanError
from permcodec.experiments import train as train_mod
from permcodec.experiments.profile import RANDOM_SHIFT_STD, weight_profiles
from permcodec.experiments.train import SCHEDULES, TrainConfig, evaluate, run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("idx")
    learnable_mnist(folder)
    return folder


def cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_train_writes_perm_log_and_plot_and_evaluate_matches(data_dir: Path, tmp_path: Path):
    out = tmp_path / "m.perm"
    code, stdout, err = cli(
        "train",
        "--model",
        "lenet300",
        "--dataset",
        "idx",
        "--data-dir",
        str(data_dir),
        "--epochs",
        "4",
        "--lr",
        "0.005",
        "--sync-period",
        "5",
        "--seed",
        "3",
        "--no-progress",
        "-o",
        str(out),
    )
    assert code == 0, err
    assert "final test accuracy" in stdout
    log = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3, 4]
    assert log[-1]["syncs"] >= 3
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with permcodec.open(out) as f:
        meta = f.metadata
    assert meta["model"] == "lenet300" and meta["dataset"] == "idx"
    acc, _ = evaluate(out, "idx", str(data_dir))
    assert f"{acc:.4f}" == meta["test_acc"]
    assert acc > 50.0, "the learnable toy task was not learned"
    code, stdout, _ = cli("evaluate", str(out), "--dataset", "idx", "--data-dir", str(data_dir))
    assert code == 0 and f"test accuracy {acc:.4f}%" in stdout


def test_final_accuracy_is_measured_after_the_final_sync(data_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        model="lenet300", dataset="idx", data_dir=str(data_dir), epochs=2, sync_period=7, seed=1
    )
    res = run(cfg, tmp_path / "m.perm", progress=False)
    # 600 samples / 128 = 5 steps per epoch; k = 7 leaves 3 steps unsynced at the end
    assert len(res.epochs) == 2 and res.epochs[-1].syncs == 1
    # the last epoch was measured on the synced view, which the final sync makes real
    assert res.final_test_acc == res.epochs[-1].test_acc
    # ... and it is what the stored file gives
    acc, _ = evaluate(tmp_path / "m.perm", data_dir=str(data_dir))
    assert acc == res.final_test_acc


def test_baseline_writes_a_weights_only_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.perm"
    code, _, err = cli(
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        str(data_dir),
        "--epochs",
        "1",
        "--baseline",
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--no-progress",
        "-o",
        str(out),
    )
    assert code == 0, err
    ckpt = torch.load(tmp_path / "b.pt", weights_only=True)
    assert "state_dict" in ckpt and ckpt["metadata"]["model"] == "lenet300"
    assert not out.exists()


def test_same_seed_same_result(data_dir: Path) -> None:
    cfg = TrainConfig(model="lenet300", dataset="idx", data_dir=str(data_dir), epochs=1, seed=9)
    a, b = run(cfg, progress=False), run(cfg, progress=False)
    assert a.final_test_acc == b.final_test_acc
    assert a.epochs[0].train_loss == b.epochs[0].train_loss


def test_sparse_training_keeps_exact_counts(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.perm"
    code, _, err = cli(
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        str(data_dir),
        "--epochs",
        "1",
        "--density",
        "0.3",
        "--no-progress",
        "-o",
        str(out),
    )
    assert code == 0, err
    sd = permcodec.load(out)
    w = sd["1.weight"]
    assert (w != 0).sum(1).tolist() == [round(0.3 * w.shape[1])] * w.shape[0]


def test_train_refuses_to_overwrite_and_bad_options(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.perm"
    out.write_bytes(b"keep")
    code, _, err = cli("train", "--dataset", "idx", "--data-dir", str(data_dir), "-o", str(out))
    assert code == 1 and "--force" in err and out.read_bytes() == b"keep"
    code, _, err = cli(
        "train",
        "--model",
        "vgg99",
        "--dataset",
        "idx",
        "--data-dir",
        str(data_dir),
        "--no-progress",
        "-o",
        str(tmp_path / "x.perm"),
    )
    assert code == 2 and "vgg99" in err and "lenet300" in err  # a usage error
    code, _, err = cli(
        "train",
        "--init",
        "normal:std",
        "--dataset",
        "idx",
        "--data-dir",
        str(data_dir),
        "--no-progress",
        "-o",
        str(tmp_path / "y.perm"),
    )
    assert code == 1 and "key=value" in err
    code, _, err = cli(
        "train", "--dataset", "nope", "--no-progress", "-o", str(tmp_path / "z.perm")
    )
    assert code == 2 and err.startswith("permcodec: error:") and "fashion-mnist" in err


def test_evaluate_refuses_files_without_a_model_record(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 2)
    permcodec.init(model, 0)
    permcodec.save(model, tmp_path / "bare.perm")
    code, _, err = cli("evaluate", str(tmp_path / "bare.perm"), "--dataset", "digits")
    assert code == 1 and "permcodec train" in err


def test_profile_of_random_arrangements_matches_theory(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(400, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    permcodec.init(model, 2)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (model[0].weight, model[2].weight):
            p.copy_(torch.gather(p, 1, torch.argsort(torch.rand(p.shape, generator=g), 1)))
    permcodec.save(model, tmp_path / "r.perm")
    prof = {p.name: p for p in weight_profiles(tmp_path / "r.perm")}
    assert prof["0.weight"].shift_std == pytest.approx(RANDOM_SHIFT_STD, abs=0.01)
    permcodec.init(model, 2)  # untouched init: nothing moved
    permcodec.save(model, tmp_path / "i.perm")
    assert all(
        p.shift_std == 0.0 and p.unmoved == 1.0 for p in weight_profiles(tmp_path / "i.perm")
    )
    code, stdout, _ = cli(
        "profile", str(tmp_path / "r.perm"), "-o", str(tmp_path / "p.png"), "--json"
    )
    assert code == 0
    rows = json.loads(stdout)["layers"]
    assert [r["name"] for r in rows] == ["0.weight", "2.weight"]
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    np.testing.assert_allclose(rows[0]["rank_shift_std"], prof["0.weight"].shift_std)


@pytest.mark.parametrize(
    "text, kind, params",
    [
        ("he_uniform", "kaiming_uniform", {}),
        ("normal:std=0.02", "normal", {"std": 0.02}),
        ("constant:value=0.08,random_sign=true", "constant", {"value": 0.08, "random_sign": True}),
        ("kaiming_normal:mode=fan_out", "kaiming_normal", {"mode": "fan_out"}),
    ],
)
def test_parse_spec(text: str, kind: str, params: dict) -> None:
    spec = parse_spec(text)
    assert isinstance(spec, InitSpec) and spec.kind == kind
    for k, v in params.items():
        assert spec.params[k] == v


@pytest.mark.parametrize("bad", ["normal:std", "nosuch", "normal:stdd=1", "constant"])
def test_parse_spec_errors(bad: str) -> None:
    with pytest.raises(PlanError):
        parse_spec(bad)


def test_train_with_bits_writes_bucketed_file_that_evaluates_the_same(
    data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b.perm"
    code, stdout, err = cli(
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        str(data_dir),
        "--epochs",
        "2",
        "--bits",
        "2",
        "--lr",
        "0.005",
        "--no-progress",
        "-o",
        str(out),
    )
    assert code == 0, err
    trained_acc = float(stdout.split("final test accuracy ")[1].split("%")[0])
    with permcodec.open(out) as pf:
        for name in ("1.weight", "3.weight", "5.weight"):
            e = pf.entry(name)
            assert e.coding == "bucket-rans" and e.fields["bits"] == 2 and e.rel_error == 0.0
        assert pf.info()["bits_per_weight"] < 3
    code, stdout, err = cli("evaluate", str(out), "--data-dir", str(data_dir))
    assert code == 0, err
    assert f"{trained_acc:.2f}" in stdout
    assert cli("train", "--bits", "9", "-o", str(tmp_path / "x.perm"))[0] == 2


@pytest.mark.parametrize("how", ["weights", "rows"])
def test_allocation_without_a_rate_is_a_usage_error(tmp_path: Path, how: str):
    code, _, err = cli("train", "--allocation", how, "-o", str(tmp_path / "x.perm"))
    assert code == 2 and "give --bpw R too" in err


def _spy_on_calibration(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names ``encode --calibrate`` measures, one per measurement."""
    from permcodec.experiments import train as train_module

    measured: list[str] = []
    real = train_module.calibration_loss

    def spy(*args, **kwargs):
        loss = real(*args, **kwargs)
        return lambda name, values: measured.append(name) or loss(name, values)

    monkeypatch.setattr(train_module, "calibration_loss", spy)
    return measured


def test_train_at_a_rate_then_recode_a_lossless_model(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`train --bpw R` writes weight matrices within R, `evaluate` reproduces the final
    accuracy, and `encode lossless.perm --bpw R` re-codes a lossless file within R."""
    common = ["--model", "lenet300", "--dataset", "idx", "--data-dir", str(data_dir)]
    common += ["--epochs", "2", "--lr", "0.005", "--no-progress"]
    out = tmp_path / "r.perm"
    code, stdout, err = cli("train", *common, "--bpw", "0.6", "-o", str(out))
    assert code == 0, err
    assert "(target 0.6)" in stdout
    with permcodec.open(out) as f:
        assert f.size_split()["bits_per_weight"] <= 0.6
        config = json.loads(f.metadata["train_config"])
        assert config["bpw"] == 0.6 and config["allocation"] == "weights"
    trained = float(stdout.split("final test accuracy ")[1].split("%")[0])
    code, stdout, _ = cli("evaluate", str(out), "--data-dir", str(data_dir))
    assert code == 0 and f"{trained:.2f}" in stdout

    lossless = tmp_path / "l.perm"
    assert cli("train", *common, "-o", str(lossless))[0] == 0
    code, stdout, err = cli("encode", str(lossless), "--bpw", "2", "-o", str(tmp_path / "s.perm"))
    assert code == 0, err
    with permcodec.open(tmp_path / "s.perm") as f:
        assert f.size_split()["bits_per_weight"] <= 2.0
        assert f.metadata == permcodec.open(lossless).metadata
    measured = _spy_on_calibration(monkeypatch)
    code, _, err = cli(
        "encode", str(lossless), "--bpw", "2", "--calibrate", "200", "--data-dir",
        str(data_dir), "-o", str(tmp_path / "c.perm"),
    )  # fmt: skip
    assert code == 0, err
    assert sorted(set(measured)) == ["1.weight", "3.weight", "5.weight"]
    assert len(measured) == 3 * 8  # every matrix at every bucket depth
    with permcodec.open(tmp_path / "c.perm") as f:
        assert f.size_split()["bits_per_weight"] <= 2.0
    for args, message in (
        (["--calibrate", "200"], "give --bpw too"),
        (["--data-dir", str(data_dir)], "give --calibrate N"),
    ):
        code, _, err = cli("encode", str(lossless), *args, "-o", str(tmp_path / "d.perm"))
        assert code == 2 and message in err
    code, _, err = cli("encode", str(lossless), "--bpw", "0.1", "-o", str(tmp_path / "t.perm"))
    assert code == 1 and "too few" in err and "permcodec train --bpw R" in err
    code, _, err = cli("encode", str(lossless), "-o", str(tmp_path / "u.perm"))
    assert code == 1 and "already a .perm" in err


@pytest.mark.parametrize("baseline", [False, True])
def test_a_cosine_schedule_takes_the_learning_rate_to_zero_for_laperm_and_baseline(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, baseline: bool
) -> None:
    made: list[torch.optim.Optimizer] = []
    real = train_mod.make_optimizer
    monkeypatch.setattr(
        train_mod, "make_optimizer", lambda m, c: made.append(real(m, c)) or made[-1]
    )
    cfg = TrainConfig(
        model="lenet300",
        dataset="idx",
        data_dir=str(data_dir),
        epochs=2,
        lr=0.004,
        schedule="cosine",
        baseline=baseline,
        bpw=None if baseline else 1.0,
    )
    res = run(cfg, tmp_path / "m.perm", progress=False)
    assert res.config.schedule == "cosine" and len(made) == 1
    assert made[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    constant = TrainConfig(model="lenet300", dataset="idx", data_dir=str(data_dir), epochs=1)
    assert constant.resolved().schedule == "constant"
    assert TrainConfig(model="lm-tiny").resolved().schedule == "warmup-cosine"
    f = SCHEDULES["cosine"](100)
    assert (f(0), f(50), f(100)) == (1.0, pytest.approx(0.5), pytest.approx(0.0))


def test_train_refuses_an_unknown_schedule(data_dir: Path, tmp_path: Path) -> None:
    code, _, err = cli("train", "--schedule", "linear", "-o", str(tmp_path / "m.perm"))
    assert code == 2 and "linear" in err
    option = next(p for p in main.commands["train"].params if p.name == "schedule")
    assert list(option.type.choices) == list(SCHEDULES)  # the CLI offers every schedule
