"""The command line: the issue's round trip, one-line errors and exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import permcodec
from permcodec.cli.main import main


def _trained_checkpoint(path: Path, seed: int = 3) -> nn.Module:
    """A seeded MLP with BatchNorm whose seeded rows are rearranged, saved as a checkpoint."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    model(torch.randn(8, 20))  # updates running stats and num_batches_tracked
    permcodec.init(model, seed)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in model.permcodec_plan.tensors:
                order = torch.argsort(torch.rand(p.shape, generator=g), dim=1)
                p.copy_(torch.gather(p, 1, order))
    permcodec.save_checkpoint(model, path)
    return model


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_encode_decode_roundtrip_all_output_formats(tmp_path: Path) -> None:
    model = _trained_checkpoint(tmp_path / "m.pt")
    code, out, _ = run("encode", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.perm"))
    assert code == 0, out
    assert "bits/weight" in out
    original = model.state_dict()
    for suffix in (".pt", ".safetensors", ".npz"):
        target = tmp_path / f"d{suffix}"
        code, out, err = run("decode", str(tmp_path / "m.perm"), "-o", str(target))
        assert code == 0, err
        if suffix == ".pt":
            got = torch.load(target, weights_only=True)
        elif suffix == ".safetensors":
            from safetensors.torch import load_file

            got = load_file(target)
        else:
            with np.load(target) as z:
                got = {k: torch.from_numpy(z[k]) for k in z.files}
        assert got.keys() == original.keys()
        for k, v in original.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
            assert torch.equal(got[k], v), k


def test_encode_default_output_name(tmp_path: Path) -> None:
    _trained_checkpoint(tmp_path / "model.pt")
    assert run("encode", str(tmp_path / "model.pt"))[0] == 0
    assert (tmp_path / "model.perm").is_file()


def test_info_reports_bound_and_totals(tmp_path: Path) -> None:
    _trained_checkpoint(tmp_path / "m.pt")
    run("encode", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.perm"))
    code, out, _ = run("info", str(tmp_path / "m.perm"), "--json")
    assert code == 0
    data = json.loads(out)
    seeded = [t for t in data["tensors"] if t["coding"] == "row-rans"]
    assert {t["name"] for t in seeded} == {"0.weight", "3.weight"}
    for t in seeded:
        assert t["bound_bits_per_weight"] > 0
        assert t["bits_per_weight"] >= t["bound_bits_per_weight"]
    assert data["ratio_vs_float32"] == pytest.approx(2 * data["ratio_vs_float16"])
    code, out, _ = run("info", str(tmp_path / "m.perm"))
    assert code == 0 and "0.weight" in out and "smaller than float32" in out


def test_verify_ok_and_damaged(tmp_path: Path) -> None:
    _trained_checkpoint(tmp_path / "m.pt")
    run("encode", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.perm"))
    code, out, _ = run("verify", str(tmp_path / "m.perm"))
    assert code == 0 and out.startswith("ok:")
    data = bytearray((tmp_path / "m.perm").read_bytes())
    with permcodec.open(tmp_path / "m.perm") as f:
        entry = f.entry("0.weight")
        start = f.data_offset
    data[start + entry.offset + 10] ^= 0x04
    (tmp_path / "bad.perm").write_bytes(bytes(data))
    code, _, err = run("verify", str(tmp_path / "bad.perm"))
    assert code == 3
    assert "0.weight" in err


@pytest.mark.parametrize(
    "content, needle",
    [(b"", "too short"), (b"garbage" * 10, "bad magic"), (b"\x89PERM\r\n\x1a" + b"\xff" * 40, "")],
)
def test_bad_perm_files_one_line_exit_3(tmp_path: Path, content: bytes, needle: str) -> None:
    p = tmp_path / "x.perm"
    p.write_bytes(content)
    for cmd in ("info", "verify"):
        code, _, err = run(cmd, str(p))
        assert code == 3, (cmd, err)
        assert err.count("\n") == 1 and err.startswith("permcodec: error:")
        assert needle in err
        assert "Traceback" not in err


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    _trained_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "m.perm"
    out.write_bytes(b"keep me")
    code, _, err = run("encode", str(tmp_path / "m.pt"), "-o", str(out))
    assert code == 1 and "--force" in err
    assert out.read_bytes() == b"keep me"
    assert run("encode", str(tmp_path / "m.pt"), "-o", str(out), "--force")[0] == 0
    assert out.read_bytes()[:8] == b"\x89PERM\r\n\x1a"


def test_encode_refuses_non_arrangement_and_writes_nothing(tmp_path: Path) -> None:
    model = _trained_checkpoint(tmp_path / "m.pt")
    with torch.no_grad():
        model[3].weight[2, 5] += 0.5
    permcodec.save_checkpoint(model, tmp_path / "m.pt")
    code, _, err = run("encode", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.perm"))
    assert code == 1
    assert "'3.weight' row 2" in err
    assert list(tmp_path.glob("*.perm*")) == []


def test_encode_plain_state_dict_says_what_the_default_kept(tmp_path: Path) -> None:
    torch.save(nn.Linear(30, 20).state_dict(), tmp_path / "plain.pt")
    code, out, err = run("encode", str(tmp_path / "plain.pt"))
    assert code == 0, err
    assert "1 weight matrix on a grid" in out and "default --max-error 0.001" in out
    errors = [t["rel_error"] for t in permcodec.open(tmp_path / "plain.perm").info()["tensors"]
              if "rel_error" in t]  # fmt: skip
    assert len(errors) == 1 and 0 < errors[0] <= 1e-3


def test_decode_unknown_suffix_and_missing_input(tmp_path: Path) -> None:
    _trained_checkpoint(tmp_path / "m.pt")
    run("encode", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.perm"))
    code, _, err = run("decode", str(tmp_path / "m.perm"), "-o", str(tmp_path / "out.bin"))
    assert code == 2 and ".safetensors" in err and err.count("\n") == 1
    code, _, _ = run("decode", str(tmp_path / "missing.perm"), "-o", str(tmp_path / "o.pt"))
    assert code == 2


def test_help_everywhere() -> None:
    for cmd in ([], ["encode"], ["decode"], ["info"], ["verify"]):
        code, out, _ = run(*cmd, "--help")
        assert code == 0 and "Usage:" in out


def test_installed_entry_point_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "permcodec.cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and permcodec.__version__ in proc.stdout


def test_encode_with_bits_reports_what_it_approximated(tmp_path: Path) -> None:
    _trained_checkpoint(tmp_path / "m.pt")
    code, out, err = run("encode", str(tmp_path / "m.pt"), "--bits", "1")
    assert code == 0, err
    lossy = [line for line in out.splitlines() if line.startswith("lossy: ")]
    assert len(lossy) == 2 and all("relative L2 error" in line for line in lossy)
    code, out, _ = run("info", str(tmp_path / "m.perm"))
    assert code == 0 and "bucket-rans" in out and "lossy: 0.weight at 1 bits" in out
    assert run("verify", str(tmp_path / "m.perm"))[0] == 0
    assert run("encode", str(tmp_path / "m.pt"), "--bits", "0", "--force")[0] == 2


def test_evaluate_reads_the_checkpoint_a_baseline_run_writes(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "m.perm"
    code, stdout, err = run("train", "--model", "logreg", "--dataset", "digits", "--epochs", "1",
                            "--baseline", "--no-progress", "-o", str(out))  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "m.pt").exists() and not out.exists()
    code, stdout, err = run("evaluate", str(tmp_path / "m.pt"))
    assert code == 0, err
    numbers = [float(x) for x in re.findall(r"(\d+\.\d+)%", stdout)]
    assert len(numbers) == 2 and numbers[0] == pytest.approx(numbers[1])  # measured, recorded
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    code, _, err = run("evaluate", str(tmp_path / "other.pt"))
    assert code == 1 and "not one `permcodec train --baseline` wrote" in err


def test_decode_to_safetensors_converts_to_bfloat16_as_torch_does(tmp_path: Path) -> None:
    """Written a tensor at a time without torch, read back by safetensors' torch loader:
    every float tensor as torch's own float32 -> bfloat16 cast gives it."""
    from safetensors.torch import load_file

    _trained_checkpoint(tmp_path / "m.pt")
    assert run("encode", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.perm"))[0] == 0
    code, _, err = run("decode", str(tmp_path / "m.perm"), "--dtype", "bfloat16",
                       "-o", str(tmp_path / "m.safetensors"))  # fmt: skip
    assert code == 0, err
    got, want = load_file(str(tmp_path / "m.safetensors")), permcodec.load(tmp_path / "m.perm")
    assert list(got) == list(want)
    for name, t in want.items():
        expect = t.float().to(torch.bfloat16) if t.is_floating_point() else t
        assert got[name].dtype == expect.dtype and torch.equal(got[name], expect), name


def test_decode_to_npz_says_bfloat16_is_stored_as_its_bits(tmp_path: Path) -> None:
    _trained_checkpoint(tmp_path / "m.pt")
    assert run("encode", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.perm"))[0] == 0
    code, _, err = run("decode", str(tmp_path / "m.perm"), "--dtype", "bfloat16",
                       "-o", str(tmp_path / "m.npz"))  # fmt: skip
    assert code == 0
    assert "note: .npz has no bfloat16" in err and "uint16 bit patterns" in err
    code, _, err = run("decode", str(tmp_path / "m.perm"), "-o", str(tmp_path / "f.npz"))
    assert code == 0 and "note:" not in err


def test_decode_and_verify_take_threads(tmp_path: Path, monkeypatch) -> None:
    """--threads (or PERMCODEC_THREADS) decodes on several threads, to the same bytes;
    a count below 1 is a usage error."""
    monkeypatch.setenv("PERMCODEC_THREADS", "1")  # restored after: the option sets it
    _trained_checkpoint(tmp_path / "m.pt")
    assert run("encode", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.perm"))[0] == 0
    outs = []
    for threads in ("1", "3"):
        out = tmp_path / f"t{threads}.safetensors"
        code, _, err = run("decode", str(tmp_path / "m.perm"), "-o", str(out), "--threads", threads)
        assert code == 0, err
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert run("verify", str(tmp_path / "m.perm"), "--threads", "2")[0] == 0
    assert run("decode", str(tmp_path / "m.perm"), "--threads", "0")[0] == 2
