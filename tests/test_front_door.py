"""What a newcomer hits first (issue 13): set-up, the verbs' errors and outputs, and the
API shapes a torch or safetensors user expects."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from idx_files import learnable_mnist
from torch import nn

import permcodec
from permcodec import InitSpec, PlanError
from permcodec.cli.main import main
from permcodec.errors import DeviceError, MissingDependencyError
from permcodec.format.atomic import atomic_path

CUDA = torch.cuda.is_available()


def cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


@pytest.fixture
def perm_file(tmp_path: Path) -> Path:
    model = _mlp()
    permcodec.init(model, 3)
    path = tmp_path / "m.perm"
    permcodec.save(model, path, metadata={"run": "x"})
    return path


# ---------------------------------------------------------------- set-up


def test_verbs_that_need_no_torch_do_not_import_it(perm_file: Path, tmp_path: Path):
    script = f"""
import sys
from permcodec.cli.main import main
for args in (["info", {str(perm_file)!r}], ["verify", {str(perm_file)!r}],
             ["decode", {str(perm_file)!r}, "-o", {str(tmp_path / "d.npz")!r}],
             ["decode", {str(perm_file)!r}, "-o", {str(tmp_path / "d.safetensors")!r}]):
    try:
        main(args)
    except SystemExit as e:
        assert e.code == 0, (args, e.code)
print("torch" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "False"


BLOCK = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
from permcodec.cli.main import main
main({args!r})
"""


@pytest.mark.parametrize(
    "blocked, args, says",
    [
        (("torch",), ["evaluate", "{perm}"], "pip install torch"),
        (("torch",), ["decode", "{perm}", "-o", "{tmp}/x.pt"], "pip install torch"),
        (("sklearn",), ["train", "--epochs", "1", "-o", "{tmp}/t.perm"], "scikit-learn"),
    ],
)
def test_a_verb_missing_a_package_says_in_one_line_what_to_install(
    perm_file: Path, tmp_path: Path, blocked, args, says
):
    args = [a.format(perm=perm_file, tmp=tmp_path) for a in args]
    script = BLOCK.format(blocked=set(blocked), args=args)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    assert run.stderr.count("\n") == 1 and says in run.stderr and "pip install" in run.stderr


def test_decode_writes_safetensors_without_torch_or_the_safetensors_package(
    perm_file: Path, tmp_path: Path
):
    """A decode-only install writes .safetensors (bfloat16 included) a tensor at a time,
    and the safetensors package reads what it wrote."""
    out = tmp_path / "x.safetensors"
    script = BLOCK.format(
        blocked={"torch", "safetensors"}, args=["decode", str(perm_file), "-o", str(out)]
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "SystemExit" not in run.stderr and out.exists(), run.stderr
    from safetensors.numpy import load_file

    got, want = load_file(str(out)), permcodec.load_numpy(perm_file)
    assert list(got) == list(want)
    for name, a in want.items():
        assert got[name].dtype == a.dtype and got[name].tobytes() == a.tobytes(), name


def test_train_without_matplotlib_writes_the_model_and_says_so(tmp_path: Path):
    data = tmp_path / "idx"
    learnable_mnist(data)
    script = BLOCK.format(
        blocked={"matplotlib"},
        args=["train", "--dataset", "idx", "--data-dir", str(data), "--epochs", "1",
              "--no-progress", "-o", str(tmp_path / "m.perm")],
    )  # fmt: skip
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "no plot" in run.stderr and "matplotlib" in run.stderr
    assert (tmp_path / "m.perm").exists() and (tmp_path / "m.jsonl").stat().st_size > 0
    assert not (tmp_path / "m.png").exists()


def test_an_interrupted_run_leaves_no_empty_log(tmp_path: Path, monkeypatch):
    from permcodec.experiments import train as train_mod

    data = tmp_path / "idx"
    learnable_mnist(data)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
        yield  # a generator, like the real one

    monkeypatch.setattr(train_mod, "batches", interrupted)
    cfg = train_mod.TrainConfig(dataset="idx", data_dir=str(data), epochs=1)
    with pytest.raises(KeyboardInterrupt):
        train_mod.run(cfg, tmp_path / "m.perm", progress=False)
    assert not (tmp_path / "m.jsonl").exists() and not (tmp_path / "m.perm").exists()


# ---------------------------------------------------------------- bugs


def test_a_seeded_model_trained_by_plain_adam_is_stored_on_grids_when_asked(tmp_path: Path):
    model = _mlp()
    permcodec.init(model, 0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(8, 16)), torch.randint(0, 4, (8,))).backward()
        opt.step()
    permcodec.save_checkpoint(model, tmp_path / "adam.pt")
    code, _, err = cli("encode", str(tmp_path / "adam.pt"), "-o", str(tmp_path / "a.perm"))
    assert code == 1 and "--max-error E" in err and not (tmp_path / "a.perm").exists()
    code, out, err = cli(
        "encode", str(tmp_path / "adam.pt"), "--max-error", "0.01", "-o", str(tmp_path / "a.perm")
    )
    assert code == 0, err
    assert "1 weight matrix on a grid" in out  # the 32 x 4 layer is too small to pay
    errors = permcodec.save(model, tmp_path / "b.perm", max_error=0.01)
    assert set(errors) == {"0.weight"} and 0 < errors["0.weight"] <= 0.01
    code, _, err = cli("encode", str(tmp_path / "adam.pt"), "--approximate")
    assert code == 2 and "--bpw R" in err and "retired" in err


@pytest.mark.skipif(CUDA, reason="checks the errors of a machine without CUDA")
def test_a_device_that_is_not_there_is_one_clear_error(perm_file: Path, tmp_path: Path):
    for device in ("cuda", "cuda:7", "tpu"):
        code, _, err = cli(
            "decode", str(perm_file), "-o", str(tmp_path / "x.npz"), "--device", device
        )
        assert code == 1 and err.count("\n") == 1 and "internal error" not in err, err
        assert not (tmp_path / "x.npz").exists()
        with pytest.raises(DeviceError):
            permcodec.load(perm_file, device=device)
    code, _, err = cli("evaluate", str(perm_file), "--device", "cuda")
    assert code == 1 and "CUDA" in err and "internal error" not in err
    code, _, err = cli("train", "--device", "cuda", "--epochs", "1", "-o", str(tmp_path / "t.perm"))
    assert code == 1 and "CUDA" in err and "internal error" not in err


def test_info_piped_into_head_stops_quietly(perm_file: Path):
    cmd = f"{sys.executable} -m permcodec.cli info {perm_file} | head -1"
    run = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert run.stderr == "" and run.stdout.count("\n") == 1


def test_density_zero_is_refused():
    assert cli("train", "--density", "0", "-o", "x.perm")[0] == 2
    with pytest.raises(PlanError, match="zero"):
        permcodec.init(_mlp(), 0, density=0.0)


def test_outputs_follow_the_umask_like_any_new_file(perm_file: Path, tmp_path: Path):
    old = os.umask(0o022)
    try:
        model = _mlp()
        permcodec.init(model, 1)
        permcodec.save(model, tmp_path / "a.perm")
        permcodec.save_checkpoint(model, tmp_path / "a.pt")
        assert cli("decode", str(perm_file), "-o", str(tmp_path / "d.npz"))[0] == 0
        for name in ("a.perm", "a.pt", "d.npz"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
        os.chmod(tmp_path / "a.perm", 0o640)  # a replaced file keeps its own mode
        permcodec.save(model, tmp_path / "a.perm")
        assert stat.S_IMODE((tmp_path / "a.perm").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_a_failed_write_names_the_target_not_its_temporary(tmp_path: Path):
    target = tmp_path / "out.perm"
    with pytest.raises(OSError) as err, atomic_path(target) as tmp:
        raise OSError(28, "No space left on device", str(tmp))
    assert err.value.filename == str(target) and ".tmp" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_the_plan_travels_with_the_state_dict_and_through_wrappers(tmp_path: Path):
    model = _mlp()
    permcodec.init(model, 5)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    sd = torch.load(tmp_path / "sd.pt", weights_only=True)
    permcodec.save(sd, tmp_path / "a.perm")  # no plan= needed: the state dict holds it
    fresh = _mlp()
    fresh.load_state_dict(sd)  # a fresh model takes it like any state dict
    for wrapped in (nn.DataParallel(model), torch.compile(model)):
        permcodec.save(wrapped, tmp_path / "b.perm")
        permcodec.save(wrapped.state_dict(), tmp_path / "c.perm")
        for p in ("b.perm", "c.perm"):
            got = permcodec.load(tmp_path / p)
            assert list(got) == list(model.state_dict())
            assert all(torch.equal(got[k], v) for k, v in model.state_dict().items())
    with pytest.raises(PlanError, match="same seed"):
        permcodec.save(fresh, tmp_path / "d.perm")


# ---------------------------------------------------------------- API and CLI shape


def test_open_gives_tensors_of_either_framework_like_safe_open(tmp_path: Path):
    pytest.importorskip("ml_dtypes")
    model = _mlp().to(torch.bfloat16)
    permcodec.init(model, 2)
    permcodec.save(model, tmp_path / "b.perm", metadata={"k": "v"})
    with permcodec.open(tmp_path / "b.perm", framework="pt", device="cpu") as f:
        assert f.keys() == list(model.state_dict()) and f.metadata()["k"] == "v"
        t = f.get_tensor("0.weight")
        assert t.dtype == torch.bfloat16 and torch.equal(t, model.state_dict()["0.weight"])
    np_arrays = permcodec.load_numpy(tmp_path / "b.perm")
    with permcodec.open(tmp_path / "b.perm") as f:
        assert f.get_tensor("0.weight").dtype == np_arrays["0.weight"].dtype
        assert f.get_tensor("0.weight").dtype.name == "bfloat16" and f.metadata["k"] == "v"
    with pytest.raises(ValueError, match="framework"):
        permcodec.open(tmp_path / "b.perm", framework="jax")


def test_save_and_load_take_file_objects_and_bytes(tmp_path: Path):
    model = _mlp()
    permcodec.init(model, 4)
    buf = io.BytesIO()
    permcodec.save(model, buf)
    data = buf.getvalue()
    for source in (data, io.BytesIO(data)):
        got = permcodec.load(source)
        assert all(torch.equal(got[k], v) for k, v in model.state_dict().items())
    assert set(permcodec.load_numpy(data)) == set(model.state_dict())
    (tmp_path / "f.perm").write_bytes(data)
    with open(tmp_path / "f.perm", "rb") as f, permcodec.open(f) as pf:
        assert pf.keys() == list(model.state_dict())
    numpy_buf = io.BytesIO()
    permcodec.numpy.save({"a": np.arange(3.0)}, numpy_buf, None)
    assert np.array_equal(permcodec.load_numpy(numpy_buf.getvalue())["a"], np.arange(3.0))


def test_load_returns_a_state_dict_and_load_model_the_keys(perm_file: Path):
    assert isinstance(permcodec.load(perm_file), dict)
    bigger = nn.Sequential(*_mlp(), nn.Linear(4, 2))
    result = permcodec.load_model(bigger, perm_file, strict=False)
    assert result.missing_keys == ["3.weight", "3.bias"] and result.unexpected_keys == []
    assert bigger.permcodec_plan is not None
    with pytest.raises(permcodec.PermcodecError, match=r"2 in the model only \(3.bias, 3.weight\)"):
        permcodec.load_model(nn.Sequential(*_mlp(), nn.Linear(4, 2)), perm_file)


def test_cli_shapes(perm_file: Path, tmp_path: Path):
    # --max-bytes after the verb too
    assert cli("info", str(perm_file), "--max-bytes", "10")[0] == 4
    assert cli("--max-bytes", "10", "info", str(perm_file))[0] == 4
    # decode names its output like encode does, and converts on the way out
    code, _, err = cli("decode", str(perm_file))
    assert code == 0 and perm_file.with_suffix(".safetensors").exists(), err
    st = pytest.importorskip("safetensors.torch")
    for dtype, torch_dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        out_path = tmp_path / f"{dtype}.safetensors"
        assert cli("decode", str(perm_file), "--dtype", dtype, "-o", str(out_path))[0] == 0
        got, want = st.load_file(str(out_path)), permcodec.load(perm_file)
        for k, v in want.items():
            assert torch.equal(got[k], v.to(torch_dtype)), (dtype, k)
    # unknown names are usage errors; a .perm input is named as such
    assert cli("train", "--model", "nope", "-o", str(tmp_path / "x.perm"))[0] == 2
    assert cli("train", "--dataset", "nope", "-o", str(tmp_path / "x.perm"))[0] == 2
    code, _, err = cli("encode", str(perm_file), "-o", str(tmp_path / "y.perm"))
    assert code == 1 and "already a .perm" in err
    assert "--threads" in cli("train", "--help")[1] and "--threads" in cli("evaluate", "--help")[1]
    code, _, err = cli("encode", str(perm_file.with_suffix(".safetensors")))
    assert code != 0 and "internal error" not in err


def test_a_whole_pickled_model_is_told_to_save_its_state_dict(tmp_path: Path):
    torch.save(_mlp(), tmp_path / "whole.pt")
    code, _, err = cli("encode", str(tmp_path / "whole.pt"), "--bpw", "4")
    assert code == 3 and "state_dict()" in err


def test_a_wrong_initializer_parameter_lists_the_valid_ones():
    with pytest.raises(PlanError, match="its parameters: a, b"):
        InitSpec("uniform", a=0.0, b=1.0, c=2.0)
    code, _, err = cli("train", "--init", "normal:sd=0.1", "-o", "x.perm")
    assert code == 1 and "mean, std" in err


def test_missing_dependency_errors_are_import_errors():
    assert issubclass(MissingDependencyError, ImportError)
