"""The native decoder (native/, ``permcodec-decode``): built here with its Makefile, it
must write what the Python decoder returns, bit for bit, and refuse what it refuses, in
one line with the right exit code; built with AddressSanitizer and UBSan it must
survive hostile files. Skipped where no C compiler or libzstd headers are found (never
under CI, whose set-up installs them)."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import hostile_files as hf
import numpy as np
import pytest
from safetensors.numpy import load_file

import permcodec
from permcodec import LossyWarning, PermcodecError
from permcodec.format.posthoc import write_trained

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
GOLDEN = Path(__file__).parent / "golden"
HOSTILE = Path(__file__).parent / "data" / "hostile"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DAMAGED, EXIT_LIMIT = 0, 1, 2, 3, 4
SANITIZER_MARKS = ("Sanitizer", "runtime error:")


def _build(target: str) -> Path:
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler")
    done = subprocess.run(["make", "-C", str(NATIVE), target], capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"the native decoder does not build:\n{done.stderr}")
        pytest.skip(f"the native decoder does not build here: {done.stderr.strip()[-200:]}")
    return NATIVE / target


@pytest.fixture(scope="session")
def decoder() -> Path:
    return _build("permcodec-decode")


@pytest.fixture(scope="session")
def asan_decoder() -> Path:
    return _build("permcodec-decode-asan")


def run(binary: Path, *args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"}
    done = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    assert not any(mark in done.stderr for mark in SANITIZER_MARKS), done.stderr
    return done


def as_bytes(a: np.ndarray) -> bytes:
    return (a.view(np.uint16) if a.dtype.name == "bfloat16" else a).tobytes()


def assert_same_as_python(decoder: Path, path: Path, tmp_path: Path, *args: str) -> None:
    out = tmp_path / "out.safetensors"
    done = run(decoder, path, "-o", out, "--force", *args)
    assert done.returncode == EXIT_OK, done.stderr
    theirs, mine = permcodec.load_numpy(path), load_file(str(out))
    assert list(mine) == list(theirs)
    for name, a in theirs.items():
        b = mine[name]
        assert b.shape == a.shape, name
        assert as_bytes(b) == as_bytes(a), name


def _posthoc_file(tmp_path: Path, seed: int, **rate) -> Path:
    rng = np.random.default_rng(seed)
    conv = (np.cumsum(rng.standard_normal((24, 8, 9)), axis=2) * 0.05).astype(np.float32)
    conv[3, 2, 1] = 40.0  # an outlier
    items = [
        ("conv.weight", conv, "float32"),
        ("fc.weight", (rng.standard_normal((300, 96)) * 0.1).astype(np.float16), "float16"),
        ("emb.weight", rng.standard_normal((50, 32)).astype(np.float32).view(np.uint16)[:, 1::2]
         .copy(), "bfloat16"),
        ("head.weight", rng.standard_normal((10, 96)), "float64"),
        ("fc.bias", rng.standard_normal(300).astype(np.float32), "float32"),
        ("steps", np.arange(7, dtype=np.int64), "int64"),
        ("mask", rng.random(13) < 0.5, "bool"),
    ]  # fmt: skip
    path = tmp_path / f"m{seed}.perm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LossyWarning)
        write_trained(path, items, {"seed": str(seed)}, **rate)
    return path


def test_golden_grid_file_decodes_bit_for_bit(decoder, tmp_path):
    assert_same_as_python(decoder, GOLDEN / "v6_grid.perm", tmp_path)


@pytest.mark.parametrize("rate", [{"bpw": 1.0}, {"bpw": 3.0}, {"max_error": 1e-3}])
@pytest.mark.parametrize("seed", [0, 1])
def test_models_encoded_post_hoc_decode_bit_for_bit(decoder, tmp_path, rate, seed):
    assert_same_as_python(decoder, _posthoc_file(tmp_path, seed, **rate), tmp_path)


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.perm")))
def test_every_golden_file_decodes_bit_for_bit_tensor_by_tensor(decoder, tmp_path, name):
    path = GOLDEN / name
    assert_same_as_python(decoder, path, tmp_path)
    listed = run(decoder, path, "--list")
    assert listed.returncode == EXIT_OK, listed.stderr
    theirs = permcodec.load_numpy(path)
    rows = [line.split("\t") for line in listed.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == list(theirs)
    for tensor, *_ in rows:
        out = tmp_path / f"{len(tensor)}.bin"
        done = run(decoder, path, "--tensor", tensor, "-o", out, "--force")
        assert done.returncode == EXIT_OK, done.stderr
        assert out.read_bytes() == as_bytes(theirs[tensor])


SEEDED_SPECS = {
    "he_uniform": permcodec.InitSpec("he_uniform"),
    "sparse_normal": permcodec.InitSpec("he_normal", density=0.3),
    "constant": permcodec.InitSpec("constant", value=0.08, random_sign=True, density=0.6),
    "tensorwise": permcodec.InitSpec("uniform", a=-1.0, b=1.0, granularity="tensor"),
    "levels": permcodec.InitSpec("levels", levels=2, scale=0.05, density=0.5),
    # many levels, dense: some cast to one float16/bfloat16 value (classes merge)
    "levels_many": permcodec.InitSpec("levels", levels=100, scale=0.01, density=1.0),
    "trunc_normal": permcodec.InitSpec("trunc_normal", std=0.02),
}


def _seeded_file(path: Path, coding: str, spec: str, dtype: str, shape: tuple, lanes: int):
    """A file of one seeded tensor whose ranks stay near the init's, made with the
    encoders (test_chunked_decode's entries): several runs of rows, or rows longer
    than a run."""
    from test_chunked_decode import _entry

    entry, payload, _ = _entry(coding, SEEDED_SPECS[spec], shape, dtype, lanes, seed=len(spec))
    version = 6 if spec.startswith("levels") else 4
    path.write_bytes(hf.seal({"byteorder": "little", "tensors": [entry]}, [payload], version))
    return path


@pytest.mark.parametrize("coding", ["row-rans", "perm-rans", "bucket-lossy", "bucket-exact"])
@pytest.mark.parametrize("spec", sorted(SEEDED_SPECS))
def test_seeded_tensors_decode_bit_for_bit(decoder, tmp_path, coding, spec):
    """Every seeded coding over runs of rows (300 x 70: several runs of lanes or groups)
    and rows longer than a run (3 x 9000), in each float dtype."""
    for i, (dtype, shape, lanes) in enumerate(
        [("float32", (300, 70), 7), ("float16", (300, 70), 37), ("bfloat16", (3, 9000), 2),
         ("float64", (41, 33), 41)]
    ):  # fmt: skip
        path = _seeded_file(tmp_path / f"{i}.perm", coding, spec, dtype, shape, lanes)
        assert_same_as_python(decoder, path, tmp_path)
        assert_same_as_python(decoder, path, tmp_path, "--threads", "3")


@pytest.mark.parametrize("coding", ["row-rans", "bucket-exact"])
def test_threads_decode_seeded_tensors_alike_in_python(tmp_path, monkeypatch, coding):
    """PERMCODEC_THREADS: row-rans lanes side by side, bucket-rans's layer ahead of its
    refinement on a thread of its own; the same bits as one thread, and a damaged
    payload refused alike."""
    path = _seeded_file(tmp_path / "s.perm", coding, "he_uniform", "float32", (300, 70), 7)
    one = permcodec.load_numpy(path)
    entry, payloads, version = hf.split(path.read_bytes())
    damaged = bytearray(payloads[0])
    damaged[len(damaged) // 2] ^= 0x10
    bad = tmp_path / "bad.perm"
    bad.write_bytes(hf.seal(entry, [bytes(damaged)], version))
    outcomes = set()
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("PERMCODEC_THREADS", threads)
        got = permcodec.load_numpy(path)
        assert got["w"].tobytes() == one["w"].tobytes()
        with pytest.raises(PermcodecError) as e:
            permcodec.load_numpy(bad)
        outcomes.add(type(e.value))
    assert len(outcomes) == 1


def test_the_command_line_refuses_in_one_line_with_its_exit_codes(decoder, tmp_path):
    path = _posthoc_file(tmp_path, 3, bpw=2.0)
    out = tmp_path / "m.safetensors"
    assert run(decoder, path, "-o", out).returncode == EXIT_OK
    cases = {
        "output exists": ([path, "-o", out], EXIT_USAGE),
        "unknown tensor": ([path, "--tensor", "nope", "-o", tmp_path / "x.bin"], EXIT_USAGE),
        "raw needs one tensor": ([path, "-o", tmp_path / "x.bin"], EXIT_USAGE),
        "unknown option": ([path, "--frobnicate"], EXIT_USAGE),
        "missing file": ([tmp_path / "absent.perm", "-o", tmp_path / "y.safetensors"], EXIT_FAILED),
        "not a perm file": ([ROOT / "README.md", "-o", tmp_path / "z.safetensors"], EXIT_DAMAGED),
        "over the limit": ([path, "--max-bytes", "1K", "-o", tmp_path / "w.safetensors"],
                           EXIT_LIMIT),
    }  # fmt: skip
    for what, (args, code) in cases.items():
        done = run(decoder, *args)
        assert done.returncode == code, (what, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (what, done.stderr)
        assert done.stderr.startswith("permcodec-decode: error: "), what
    assert not list(tmp_path.glob("*.partial"))
    assert "usage: permcodec-decode" in run(decoder, "--help").stdout


def _python_outcome(path: Path) -> dict[str, np.ndarray] | None:
    try:
        return permcodec.load_numpy(path, max_bytes=hf.FUZZ_MAX_BYTES)
    except PermcodecError:
        return None


@pytest.mark.parametrize("family", ["bytes", "header", "payload"])
def test_mutated_files_are_refused_or_decoded_as_python_does(asan_decoder, tmp_path, family):
    """Hostile edits of files of every coding (checksums resealed for header and payload
    edits), under ASan and UBSan: no crash and no report; the decoder accepts exactly
    what the Python reader accepts, and then writes the same bytes."""
    files = list(hf.valid_files().values())
    rng = random.Random(f"native-{family}")
    path, out = tmp_path / "case.perm", tmp_path / "case.safetensors"
    outcomes = {}
    for i in range(120):
        bad = hf.mutate(files[i % len(files)], rng, family)
        if bad is None:
            continue
        path.write_bytes(bad)
        done = run(asan_decoder, path, "-o", out, "--force", "--max-bytes", "256M")
        theirs = _python_outcome(path)
        assert done.returncode in (EXIT_OK, EXIT_FAILED, EXIT_DAMAGED, EXIT_LIMIT), done.stderr
        assert (done.returncode == EXIT_OK) == (theirs is not None), done.stderr
        if theirs is not None:
            mine = load_file(str(out))
            assert {k: as_bytes(v) for k, v in mine.items()} == {
                k: as_bytes(v) for k, v in theirs.items()
            }
        outcomes[done.returncode] = outcomes.get(done.returncode, 0) + 1
    assert outcomes.get(EXIT_DAMAGED, 0) > 0  # the mutations reached the checks


def test_the_hostile_corpus_is_refused_without_a_crash(asan_decoder, tmp_path):
    for path in sorted(HOSTILE.glob("*.perm")):
        done = run(asan_decoder, path, "-o", tmp_path / "h.safetensors", "--force",
                   "--max-bytes", "256M")  # fmt: skip
        assert done.returncode in (EXIT_FAILED, EXIT_DAMAGED, EXIT_LIMIT), (path.name, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, path.name


def test_the_c_constants_are_the_python_packages():
    """csrc/perm_format.h, the C side's one place for the format's constants, against
    the values the Python package enforces."""
    from permcodec.coding import grid_rans, level_rans, static_rans
    from permcodec.format import container, limits
    from permcodec.kernels import contract

    text = (ROOT / "csrc" / "perm_format.h").read_text()
    defined = {}
    for name, value in re.findall(r"#define (PC_\w+) (.+)", text):
        value = re.sub(r"\(u?int64_t\)", "", value)
        defined[name] = eval(value.replace("{", "[").replace("}", "]"), {}, {})
    assert bytes(ord(c) if isinstance(c, str) else c for c in defined["PC_MAGIC_BYTES"]) == (
        container.MAGIC
    )
    expected = {
        "PC_FORMAT_VERSION": container.FORMAT_VERSION,
        "PC_ALIGN": container.ALIGN,
        "PC_MAX_HEADER": limits.MAX_HEADER,
        "PC_MAX_TENSORS": limits.MAX_TENSORS,
        "PC_MAX_EXTENT": limits.MAX_EXTENT,
        "PC_MAX_DIM": 2**40,
        "PC_MAX_SHAPE_DIMS": 8,
        "PC_DEFAULT_MAX_BYTES": limits.DEFAULT_MAX_BYTES,
        "PC_STATE_LOW_BITS": contract.STATE_LOW.bit_length() - 1,
        "PC_PROB_BITS": contract.PROB_BITS,
        "PC_GRID_TABLE_BITS": static_rans.TABLE_BITS,
        "PC_GRID_MAX_STEPS": grid_rans.MAX_STEPS,
        "PC_GRID_MAX_SYMBOLS": static_rans.MAX_SYMBOLS,
        "PC_GRID_MAX_TABLES": grid_rans.MAX_TABLES,
        "PC_GRID_MAX_CONTEXTS": grid_rans.MAX_CONTEXTS,
        "PC_GRID_MAX_INDEX": grid_rans.MAX_INDEX,
        "PC_LEVEL_TABLE_BITS": level_rans.TABLE_BITS,
        "PC_LEVEL_MAX_CLASSES": level_rans.MAX_CLASSES,
    }
    assert {k: v for k, v in defined.items() if k != "PC_MAGIC_BYTES"} == expected
