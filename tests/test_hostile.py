"""Hostile and broken `.perm` files: only permcodec's own errors, bounded time and
memory, damage located, nothing lost on a failed write, nothing executed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import hostile_files as hf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import permcodec
from permcodec.errors import FormatError, IntegrityError, LimitError, UnsupportedVersionError
from permcodec.format import container, limits
from permcodec.format.entry import decode_bytes, parse_entry
from permcodec.numpy import load as load_numpy

HOSTILE = Path(__file__).parent / "data" / "hostile"


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile")
    hf.warm_up(path)
    return path


def check(raw: bytes, reader: str, tmp: Path) -> str:
    """Run a reader: only a permcodec error or original tensors, in bounded time and
    memory. Returns what it did."""
    outcome = hf.run_reader(raw, reader, tmp)
    assert not outcome.problems(), (reader, outcome)
    return outcome.result


FUZZ = settings(
    max_examples=int(os.environ.get("PERMCODEC_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize=not os.environ.get("PERMCODEC_FUZZ_EXAMPLES"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
files = st.sampled_from(["exact", "lossy"]).map(lambda k: hf.valid_files()[k])
readers = st.sampled_from(sorted(hf.READERS))
rngs = st.randoms(use_true_random=False)


@FUZZ
@given(raw=files, reader=readers, rng=rngs)
def test_any_byte_damage_is_refused(tmp, raw, reader, rng):
    """Bit flips, truncations, insertions and overwrites with the checksums left as
    they are: every byte is covered, so every strict reader refuses the file (and
    salvage returns only intact tensors)."""
    result = check(hf.mutate(raw, rng, "bytes"), reader, tmp)
    assert result != "ok" or reader not in hf.STRICT_READERS


@FUZZ
@given(raw=files, reader=readers, rng=rngs)
def test_resealed_header_edits_are_refused_or_harmless(tmp, raw, reader, rng):
    """Header fields set to extreme values, with every checksum recomputed: a permcodec
    error, or (for edits no digest covers) exactly the original tensors."""
    bad = hf.mutate(raw, rng, "header")
    if bad is not None:
        check(bad, reader, tmp)


@FUZZ
@given(raw=files, reader=readers, rng=rngs)
def test_resealed_payload_edits_are_refused_or_harmless(tmp, raw, reader, rng):
    """Payload bytes changed, their payload digests recomputed: the digest of the
    decoded values (or the decoder's own checks) must catch it."""
    check(hf.mutate(raw, rng, "payload"), reader, tmp)


def test_fuzzer_findings_stay_fixed(tmp):
    """Inputs that once broke a reader (fuzz/fuzz_perm.py, tests/data/hostile)."""
    cases = sorted(HOSTILE.glob("*.perm"))
    assert len(cases) >= 14
    for path in cases:
        for reader in hf.READERS:
            outcome = hf.run_reader(path.read_bytes(), reader, tmp)
            assert not [p for p in outcome.problems() if "wrong" not in p], (path.name, outcome)


# ---------------------------------------------------------------- specific rules


def _write(tmp_path: Path, raw: bytes, name: str = "f.perm") -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def test_messages_say_what_is_wrong(tmp_path):
    raw = hf.valid_files()["exact"]
    start = container.data_start(container.PREAMBLE.unpack(raw[:24])[3])
    cases = [
        (b"", FormatError, "too short"),
        (b"PK\x03\x04" + raw[4:], FormatError, "bad magic"),
        (raw[:8] + (9).to_bytes(4, "little") + raw[12:], UnsupportedVersionError, "newer"),
        (raw[:12] + (1).to_bytes(4, "little") + raw[16:], FormatError, "flags 1"),
        (raw[:16] + (2**40).to_bytes(8, "little") + raw[24:], FormatError, "exceeds the limit"),
        (raw[: start - 8], FormatError, "truncated at byte"),
        (raw[:-100], FormatError, "truncated"),
        (raw[:30] + bytes([raw[30] ^ 1]) + raw[31:], IntegrityError, "header checksum"),
        (raw[:-1] + bytes([raw[-1] ^ 1]), IntegrityError, "whole-file checksum"),
    ]
    for bad, error, needle in cases:
        with pytest.raises(error, match=needle):
            load_numpy(_write(tmp_path, bad))


def test_payload_damage_names_the_tensor_and_leaves_the_rest_readable(tmp_path):
    raw = hf.valid_files()["exact"]
    header = hf.split(raw)[0]
    names = [t["name"] for t in header["tensors"]]
    d = names.index("fc.weight")
    start = container.data_start(container.PREAMBLE.unpack(raw[:24])[3])
    at = start + header["tensors"][d]["offset"] + 13
    path = _write(tmp_path, raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1 :])
    good = load_numpy(_write(tmp_path, raw, "good.perm"))
    with pytest.raises(IntegrityError, match="strict=False"):
        permcodec.open(path)
    with pytest.raises(IntegrityError, match="whole-file"):
        load_numpy(path)
    with permcodec.open(path, strict=False) as pf:
        for name in names:
            if name == "fc.weight":
                with pytest.raises(IntegrityError, match=r"'fc\.weight'") as err:
                    pf.tensor(name)
                assert err.value.tensor == "fc.weight"
            else:
                assert np.array_equal(pf.tensor(name), good[name].view(pf.tensor(name).dtype))
        problems = pf.verify()
    assert [p[0] for p in problems] == ["fc.weight", "<file>"]


def test_damage_outside_every_tensor_is_reported_as_such(tmp_path):
    raw = hf.valid_files()["exact"]
    hlen = container.PREAMBLE.unpack(raw[:24])[3]
    at = container.data_start(hlen) - 1  # a padding byte
    assert raw[at] == 0
    path = _write(tmp_path, raw[:at] + b"\x01" + raw[at + 1 :])
    with permcodec.open(path, strict=False) as pf:
        problems = pf.verify()
    assert len(problems) == 1 and problems[0][0] == "<file>" and "padding" in problems[0][1]


def test_claimed_size_is_limited_before_anything_is_allocated(tmp_path, monkeypatch):
    raw = hf.valid_files()["exact"]
    # a seeded tensor that claims 2**30 x 2**10 float32 values, with valid fans
    bad = hf.reseal(raw, hf.entry_edit("fc.weight", shape=[2**30, 2**10], spec_fan_in=2**10,
                                   spec_fan_out=2**30))  # fmt: skip
    path = _write(tmp_path, bad)
    tracemalloc.start()
    with pytest.raises(LimitError, match="over the limit of 4,294,967,296 bytes"):
        load_numpy(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20
    # the limit follows max_bytes=, then PERMCODEC_MAX_BYTES
    claimed = decode_bytes([parse_entry(t) for t in hf.split(raw)[0]["tensors"]])
    with pytest.raises(LimitError):
        load_numpy(_write(tmp_path, raw), max_bytes=claimed - 1)
    assert load_numpy(_write(tmp_path, raw), max_bytes=claimed)
    monkeypatch.setenv(limits.ENV_MAX_BYTES, str(claimed - 1))
    with pytest.raises(LimitError):
        permcodec.open(_write(tmp_path, raw))
    monkeypatch.setenv(limits.ENV_MAX_BYTES, "lots")
    with pytest.raises(LimitError, match="PERMCODEC_MAX_BYTES"):
        permcodec.open(_write(tmp_path, raw))


def test_the_limit_counts_the_working_set_of_a_long_row(tmp_path):
    """One row of 2**22 values decodes into 16 MiB but takes about 128 bytes per value
    to regenerate and class: the cap counts that before decoding starts."""
    m = 1 << 22
    edit = hf.entry_edit("fc.weight", shape=[1, m], spec_fan_in=m, spec_fan_out=1)
    path = _write(tmp_path, hf.reseal(hf.valid_files()["exact"], edit))
    tracemalloc.start()
    with pytest.raises(LimitError, match="takes 5"):
        load_numpy(path, max_bytes=256 << 20)
    assert tracemalloc.get_traced_memory()[1] < 4 << 20
    tracemalloc.stop()
    with pytest.raises(IntegrityError, match="ends early"):
        load_numpy(path, max_bytes=1 << 30)


def test_tensor_count_is_limited(tmp_path, monkeypatch):
    monkeypatch.setattr(container, "MAX_TENSORS", 3)
    with pytest.raises(FormatError, match="exceed the limit 3"):
        load_numpy(_write(tmp_path, hf.valid_files()["exact"]))


@pytest.mark.parametrize(
    "text, size", [("4096", 4096), ("512M", 512 << 20), ("16G", 16 << 30), ("1.5k", 1536)]
)
def test_parse_size(text, size):
    assert limits.parse_size(text) == size


@pytest.mark.parametrize("name", ["fc.weight", "sparse.weight", "ctx.weight"])
def test_a_tiny_file_claiming_a_big_seeded_tensor_fails_fast_and_small(tmp_path, name):
    """A seeded entry blown up to 32 Mi values (up to 128 MiB) with its tiny payload kept:
    refused within the time limit, using memory near the claim at most."""
    raw = hf.valid_files()["exact"]
    bad = hf.reseal(raw, hf.entry_edit(name, shape=[2**15, 2**10], spec_fan_in=2**10,
                                   spec_fan_out=2**15))  # fmt: skip
    assert check(bad, "load_numpy", tmp_path) != "ok"


# ---------------------------------------------------------------- nothing runs


EVIL = """
import os, pickle, sys, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
torch.save({"state_dict": {"w": torch.zeros(2)}, "x": Evil()}, sys.argv[1])
"""


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "permcodec.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.mark.slow
def test_cli_refuses_a_checkpoint_that_would_run_code(tmp_path):
    evil, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    subprocess.run([sys.executable, "-c", EVIL, str(evil), str(marker)], check=True)
    assert not marker.exists()
    for extra in ([], ["--bpw", "3"], ["--max-error", "0.01"]):
        r = _cli("encode", str(evil), "-o", str(tmp_path / "evil.perm"), *extra)
        assert r.returncode == 3, r.stderr
        assert r.stderr.count("\n") == 1 and "weights_only" in r.stderr
        assert "Traceback" not in r.stderr
    assert not marker.exists()
    assert not (tmp_path / "evil.perm").exists()


# ---------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_one_line_and_exit_codes_on_bad_files(tmp_path):
    raw = hf.valid_files()["exact"]
    damaged = raw[:-40] + bytes([raw[-40] ^ 4]) + raw[-39:]
    big = hf.reseal(raw, hf.entry_edit("zeros", shape=[2**20, 2**20]))
    cases = {
        "damaged": (damaged, 3),
        "truncated": (raw[:100], 3),
        "newer": (raw[:8] + (99).to_bytes(4, "little") + raw[12:], 3),
        "big": (big, 4),
    }
    for label, (content, code) in cases.items():
        path = _write(tmp_path, content, f"{label}.perm")
        for cmd in (["info"], ["verify"], ["decode", "-o", str(tmp_path / f"{label}.npz")]):
            r = _cli(*cmd[:1], str(path), *cmd[1:])
            assert r.returncode == code, (label, cmd, r.stderr)
            *damaged, last = r.stderr.splitlines()  # verify lists what it found first
            assert last.startswith("permcodec: error:") and "Traceback" not in r.stderr
            assert all(line.startswith("damaged: ") for line in damaged)
            assert cmd == ["verify"] or not damaged
        assert not (tmp_path / f"{label}.npz").exists()
    r = _cli("--max-bytes", "16T", "info", str(tmp_path / "big.perm"))
    assert r.returncode == 0, r.stderr
    r = _cli("verify", str(tmp_path / "damaged.perm"))
    assert r.stderr.startswith("damaged: ") and r.returncode == 3


def test_cli_usage_errors_are_one_line_exit_2(tmp_path):
    for args in (["nope"], ["decode"], ["info", str(tmp_path / "missing.perm")], ["--max-bytes", "x", "info", "f"]):  # fmt: skip
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "--help" in r.stderr, r.stderr


# ---------------------------------------------------------------- nothing lost


def _model_checkpoint(path: Path) -> None:
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    permcodec.init(model, 0)
    with torch.no_grad():
        w = model[0].weight
        w.copy_(torch.gather(w, 1, torch.argsort(torch.rand(w.shape), 1)))
    permcodec.save_checkpoint(model, path)


def test_a_failed_write_leaves_the_old_output_and_no_temporary(tmp_path, monkeypatch):
    from permcodec.format import reader as permfile

    _model_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "m.perm"
    out.write_bytes(b"the old file")

    def fail(*a: Any, **k: Any) -> None:
        raise OSError(28, "No space left on device")

    sd, plan = permcodec.load_checkpoint(tmp_path / "m.pt")
    monkeypatch.setattr(permfile.container, "write", fail)
    with pytest.raises(OSError, match="No space"):
        permcodec.save(sd, out, plan=plan)
    assert out.read_bytes() == b"the old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.perm", "m.pt"]


SLOW_WRITE = """
import sys, time
from permcodec.format import reader as permfile
real = permfile.container.write
def slow(stream, *a, **k):
    stream.write(b"partial" * 1000)
    stream.flush()
    print("writing", flush=True)
    time.sleep(60)
permfile.container.write = slow
from permcodec.cli.main import main
sys.argv = ["permcodec", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_encode_leaves_the_old_output(tmp_path, sig):
    """Killed in the middle of writing: the target keeps its old bytes; SIGINT and
    SIGTERM also remove the temporary file (nothing can after SIGKILL)."""
    _model_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "m.perm"
    out.write_bytes(b"the old file")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITE, "encode", str(tmp_path / "m.pt"), "-o", str(out), "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert out.read_bytes() == b"the old file"
    left = sorted(p.name for p in tmp_path.iterdir())
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        assert all(n in ("m.perm", "m.pt") or n.startswith(".m.perm.") for n in left)
    else:
        assert proc.returncode == 130, err
        assert left == ["m.perm", "m.pt"]
        assert err.count("\n") == 1 and "interrupted" in err


def test_decode_refuses_to_overwrite_without_force(tmp_path):
    src = _write(tmp_path, hf.valid_files()["exact"])
    out = tmp_path / "out.npz"
    out.write_bytes(b"keep me")
    r = _cli("decode", str(src), "-o", str(out))
    assert r.returncode == 1 and "--force" in r.stderr and r.stderr.count("\n") == 1
    assert out.read_bytes() == b"keep me"
    assert _cli("decode", str(src), "-o", str(out), "--force").returncode == 0
    names = [t["name"] for t in hf.split(hf.valid_files()["exact"])[0]["tensors"]]
    assert sorted(np.load(out)) == sorted(names)


def test_torch_load_applies_the_same_checks(tmp_path):
    raw = hf.valid_files()["exact"]
    damaged = _write(tmp_path, raw[:-40] + bytes([raw[-40] ^ 1]) + raw[-39:], "d.perm")
    with pytest.raises(IntegrityError, match="whole-file"):
        permcodec.load(damaged)
    good = _write(tmp_path, raw)
    with pytest.raises(LimitError):
        permcodec.load(good, max_bytes=1000)
    assert set(permcodec.load(good)) == set(load_numpy(good))
