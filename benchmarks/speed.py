"""Speed and memory of permcodec next to NNCodec, torch.save / torch.load and safetensors.

One command (every model; ``--quick`` for lenet300, vgg and the trained LeNet-300s only):

    python benchmarks/speed.py

Each model (LeNet-300-100, the Conv-6 VGG-style net at 2.3M weights, and a 25M-weight
stack of 3x3 convs with ResNet-50-sized rows of 576..4608 values) is seeded with
``permcodec.init(model, seed=0)`` and every planned row is then shuffled at random: an
exact arrangement of its init with no rank correlation left, the worst case for size.
The ``-trained`` models are the files real training writes: ``permcodec train`` by
LaPerm on Fashion-MNIST (LeNet-300-100 2 epochs, lossless and at ``--bpw 1``, Conv-2 1
epoch; one thread). ``stack25m-grid`` is the 25M-weight stack as torch initializes it (a
model permcodec did not seed, like one trained elsewhere) stored by ``permcodec.save(model,
path, bpw=2)`` on grids; NNCodec codes it at the same qp as the others, so the two do not
sit at the same rate or error there. The native decoder (``make -C native``) is timed on the
files it reads, as a process writing ``.safetensors``.
For each model, in one run and side by side: permcodec encode (``permcodec.save``),
decode with numpy (``permcodec.load_numpy``), into torch on the CPU (``permcodec.load``)
and on CUDA when there is a GPU (checked bit for bit against the CPU result),
``torch.save`` / ``torch.load(weights_only=True)`` and safetensors of the float32 state
dict, and NNCodec encode / decode of the same float32 weight matrices at one qp. Times
are medians of ``--repeat`` runs after one warm-up run. Weights are the elements of the
planned (seeded) weight tensors; weights/s and the ratios count those. Peak resident
memory of a decode is measured in a fresh subprocess per model, over a baseline taken
after a tiny warm-up decode (so imports and kernels are in the baseline), with the
decoded tensors kept alive; the peak is Linux's VmHWM, reset at the baseline, because a
child's ``ru_maxrss`` starts at its parent's peak (``ru_maxrss`` is recorded as well);
the same child also reports its peak above the bare interpreter (imports included).
The first decode in a fresh process is timed per backend (the C kernels; the numpy
reference, as where no C compiler was found), and the size of a decode-only install is summed from
the installed distributions. Prints the tables and writes ``speed.json`` (raw timings,
machine, command line) and ``speed.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import permcodec
from permcodec.experiments.models import build_model

sys.path.insert(0, str(Path(__file__).parent))
import baselines

RESULTS = Path(__file__).parent / "results"
#: Files real training produces: (model, epochs) trained by LaPerm on Fashion-MNIST.
#: name -> (model, epochs, --bpw or None).
TRAINED: dict[str, tuple[str, int, float | None]] = {
    "lenet300-trained": ("lenet300", 2, None),
    "lenet300-bpw1": ("lenet300", 2, 1.0),
    "conv2-trained": ("conv2", 1, None),
    "conv2-bpw1": ("conv2", 1, 1.0),
}
#: Models trained elsewhere (no plan), stored on grids: name -> (architecture, --bpw).
POSTHOC: dict[str, tuple[str, float]] = {"stack25m-grid": ("stack25m", 2.0)}
MODELS = ("lenet300", "vgg", "stack25m", *TRAINED, *POSTHOC)
QUICK_MODELS = ("lenet300", "vgg", "lenet300-trained", "lenet300-bpw1")
#: The native decoder (native/, ``make -C native``), timed where it reads the file.
NATIVE = Path(__file__).resolve().parent.parent / "native" / "permcodec-decode"
#: What a decode-only install brings (pip install permcodec), and the JIT it no longer uses.
DECODE_ONLY = ("permcodec", "numpy", "zstandard", "msgpack", "click")
JIT = ("numba", "llvmlite")
SEED = 0
#: (channels, number of 3x3 convs channels -> channels) of the 25M-weight stack.
STACK25M = ((64, 6), (128, 8), (256, 8), (512, 8))
MIB = 2**20

#: Run in a fresh interpreter: argv = loader ("permcodec" | "torch"), tiny file, model file,
#: threads. Prints a JSON object of resident-memory readings in KiB. ``ru_maxrss`` of a child
#: starts at its parent's peak (Linux carries the exec'ing mm's high-water mark into it), so
#: where /proc allows, the high-water mark is reset after the warm-up (``clear_refs`` 5) and
#: the peak read from ``VmHWM``; ``ru_maxrss`` is recorded too.
CHILD_PEAK = """
import gc, json, resource, sys
def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))
bare_kib = status("VmRSS")
loader, tiny, path, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if loader == "permcodec":
    import numpy as np
    import permcodec
    load = permcodec.load_numpy
    nbytes = lambda t: t.nbytes
else:
    import torch
    torch.set_num_threads(threads)
    load = lambda p: torch.load(p, weights_only=True)
    nbytes = lambda t: t.numel() * t.element_size()
def maxrss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
warm = load(tiny)
del warm
gc.collect()
rec = {"ru_maxrss_base_kib": maxrss(), "bare_kib": bare_kib, "imported_kib": status("VmRSS")}
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rec["method"] = "VmHWM after clear_refs"
    rec["base_kib"] = status("VmHWM")
except OSError:
    rec["method"] = "ru_maxrss"
    rec["base_kib"] = rec["ru_maxrss_base_kib"]
out = load(path)
rec["ru_maxrss_peak_kib"] = maxrss()
rec["peak_kib"] = status("VmHWM") if rec["method"] != "ru_maxrss" else maxrss()
rec["rss_after_kib"] = status("VmRSS")
rec["decoded_bytes"] = sum(nbytes(t) for t in out.values())
print(json.dumps(rec))
"""


# ---------------------------------------------------------------------------------------------
# Models


def stack25m() -> nn.Module:
    """3x3 convs without bias, 64..512 channels: rows of 576, 1152, 2304, 4608 values."""
    layers = [
        nn.Conv2d(c, c, 3, padding=1, bias=False) for c, count in STACK25M for _ in range(count)
    ]
    return nn.Sequential(*layers)


def build(name: str) -> nn.Module:
    """One of ``MODELS``, freshly constructed (not yet seeded)."""
    if name == "lenet300":
        return build_model("lenet300", in_channels=1, image_size=28, num_classes=10)
    if name == "vgg":
        return build_model("conv6", in_channels=3, image_size=32, num_classes=10)
    if name == "stack25m":
        return stack25m()
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


@torch.no_grad()
def shuffle_rows(model: nn.Module, names: list[str], gen: torch.Generator) -> None:
    """Permute the values inside every row (``weight.flatten(1)``) of the named tensors."""
    for name in names:
        weight = model.get_parameter(name)
        rows = weight.view(weight.shape[0], -1)
        order = torch.argsort(torch.rand(rows.shape, generator=gen), dim=1)
        rows.copy_(torch.gather(rows, 1, order))


def laperm_model(name: str) -> tuple[nn.Module, list[str]]:
    """The seeded model with every planned row shuffled; and the planned tensor names."""
    model = build(name)
    plan = permcodec.init(model, seed=SEED)
    names = list(plan.tensors)
    shuffle_rows(model, names, torch.Generator().manual_seed(SEED))
    return model, names


def trained_model(name: str, work: Path, args: argparse.Namespace) -> tuple[nn.Module, list[str]]:
    """A model of ``TRAINED`` as LaPerm training leaves it (``permcodec train``, one
    thread), loaded back with its plan; and the planned tensor names."""
    arch, epochs, bpw = TRAINED[name]
    path = work / f"{name}-train.perm"
    if not path.exists():
        cli = Path(sys.executable).with_name("permcodec")
        cmd = [str(cli if cli.exists() else "permcodec"), "train", "--model", arch, "--dataset"]
        cmd += ["fashion-mnist", "--epochs", str(epochs), "--threads", "1", "--no-progress"]
        cmd += ["-o", str(path)] + (["--data-dir", args.data_dir] if args.data_dir else [])
        cmd += ["--bpw", f"{bpw:g}"] if bpw is not None else []
        print(f"{name}: training ({' '.join(cmd[1:])})", flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    meta = permcodec.open(path).metadata()
    model = build_model(
        arch,
        in_channels=int(meta["in_channels"]),
        image_size=int(meta["image_size"]),
        num_classes=int(meta["num_classes"]),
    )
    permcodec.load_model(model, path)
    return model, list(permcodec.open(path).plan().tensors)


def posthoc_model(name: str) -> tuple[nn.Module, list[str]]:
    """A model of ``POSTHOC`` as torch initializes it (not seeded by permcodec: its
    weights are like those of a model trained elsewhere), and its weight matrices."""
    torch.manual_seed(SEED)
    model = build(POSTHOC[name][0])
    return model, [n for n, p in model.named_parameters() if p.ndim >= 2]


def tiny_model() -> tuple[nn.Module, list[str]]:
    """A small seeded-and-shuffled Linear + Conv model, decoded first to warm things up."""
    model = nn.Sequential(nn.Linear(64, 16), nn.Conv2d(4, 8, 3))
    names = list(permcodec.init(model, seed=SEED).tensors)
    shuffle_rows(model, names, torch.Generator().manual_seed(SEED))
    return model, names


# ---------------------------------------------------------------------------------------------
# Timing


def timed(fn: Callable[[], Any], repeat: int, cuda: bool = False) -> list[float]:
    """Seconds of ``repeat`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two state dicts hold the same keys, dtypes, shapes and bytes."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k].detach().cpu(), b[k].detach().cpu()
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if x.contiguous().numpy().tobytes() != y.contiguous().numpy().tobytes():
            return False
    return True


def time_permcodec(
    model: nn.Module, path: Path, repeat: int, bpw: float | None = None
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Raw times of permcodec encode (at ``bpw`` when given) and decodes, of the native
    decoder where it reads the file, and the CUDA check."""
    times = {
        "permcodec encode": timed(lambda: permcodec.save(model, path, bpw=bpw), repeat),
        "permcodec decode numpy": timed(lambda: permcodec.load_numpy(path), repeat),
        "permcodec decode torch cpu": timed(lambda: permcodec.load(path, device="cpu"), repeat),
    }
    with _decode_threads(2):
        times["permcodec decode numpy, 2 threads"] = timed(
            lambda: permcodec.load_numpy(path), repeat
        )
    native = time_native(path, repeat)
    if native:
        times["native decode to .safetensors"] = native
    cuda: dict[str, Any] = {"available": torch.cuda.is_available()}
    if not cuda["available"]:
        cuda["note"] = "no GPU"
        return times, cuda
    cuda["device"] = torch.cuda.get_device_name(0)
    times["permcodec decode torch cuda"] = timed(
        lambda: permcodec.load(path, device="cuda"), repeat, cuda=True
    )
    cuda["bit_identical_to_cpu"] = same_bits(
        permcodec.load(path, device="cuda"), permcodec.load(path, device="cpu")
    )
    return times, cuda


@contextlib.contextmanager
def _decode_threads(n: int) -> Iterator[None]:
    """PERMCODEC_THREADS=n for the block."""
    old = os.environ.get("PERMCODEC_THREADS")
    os.environ["PERMCODEC_THREADS"] = str(n)
    try:
        yield
    finally:
        if old is None:
            del os.environ["PERMCODEC_THREADS"]
        else:
            os.environ["PERMCODEC_THREADS"] = old


def time_native(path: Path, repeat: int) -> list[float] | None:
    """Seconds of ``permcodec-decode FILE -o FILE.safetensors`` (the process, writing
    the file included), or None where it is not built or does not read the file."""
    if not NATIVE.exists():
        return None
    out = path.with_suffix(".native.safetensors")
    cmd = [str(NATIVE), str(path), "-o", str(out), "--force"]
    try:  # the untimed warm-up run is the one that finds a file it refuses
        return timed(lambda: subprocess.run(cmd, capture_output=True, check=True), repeat)
    except subprocess.CalledProcessError:
        return None


def time_torch(state: dict[str, torch.Tensor], path: Path, repeat: int) -> dict[str, list[float]]:
    """Raw times of ``torch.save`` and ``torch.load(weights_only=True)`` of a state dict."""
    return {
        "torch.save": timed(lambda: torch.save(state, path), repeat),
        "torch.load": timed(lambda: torch.load(path, weights_only=True), repeat),
    }


def time_nncodec(
    arrays: dict[str, np.ndarray], qp: int, repeat: int
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Raw NNCodec encode / decode times of one round trip per run; its size and error."""
    if baselines.NNCODEC_ERROR:
        return {}, {"error": baselines.NNCODEC_ERROR}
    runs = [baselines.nncodec_roundtrip(arrays, qp) for _ in range(repeat + 1)][1:]
    decoded, nbytes = runs[-1][0], runs[-1][1]
    err = max(float(np.abs(np.asarray(decoded[k]) - a).max()) for k, a in arrays.items())
    times = {"NNCodec encode": [r[2] for r in runs], "NNCodec decode": [r[3] for r in runs]}
    return times, {"qp": qp, "bytes": nbytes, "max_abs_error": err}


def time_safetensors(
    state: dict[str, torch.Tensor], path: Path, repeat: int
) -> dict[str, list[float]]:
    """Raw times of safetensors' ``save_file`` / ``load_file`` (torch), if installed."""
    try:
        from safetensors.torch import load_file, save_file
    except ImportError:
        return {}
    plain = {k: v.contiguous() for k, v in state.items()}
    return {
        "safetensors save": timed(lambda: save_file(plain, str(path)), repeat),
        "safetensors load": timed(lambda: load_file(str(path)), repeat),
    }


#: A fresh interpreter that decodes argv[1] once and prints how long its imports and its
#: first decode took (the interpreter's own start-up is measured apart).
CHILD_COLD = """
import json, sys, time
t0 = time.perf_counter()
import permcodec
from permcodec import kernels
t1 = time.perf_counter()
permcodec.load_numpy(sys.argv[1])
t2 = time.perf_counter()
host = kernels.load("rans")
print(json.dumps({"import_s": t1 - t0, "first_decode_s": t2 - t1,
                  "backend": None if host is None else host.backend}))
"""


#: Weights above which the numpy reference's first decode is not timed (minutes).
REFERENCE_MAX_WEIGHTS = 5_000_000


def cold_decode(path: Path, weights: int) -> dict[str, Any]:
    """The first decode in a fresh process, per backend: the C kernels, and the numpy
    reference (an install without a C compiler) on files of at most
    :data:`REFERENCE_MAX_WEIGHTS` weights."""
    out: dict[str, Any] = {}
    for label, pure in (("c", "0"), ("numpy reference", "1")):
        if pure == "1" and weights > REFERENCE_MAX_WEIGHTS:
            out[label] = {"skipped": f"over {REFERENCE_MAX_WEIGHTS:,} weights"}
            continue
        env = {**os.environ, "PERMCODEC_PURE_NUMPY": pure}
        env.pop("PERMCODEC_KERNELS", None)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD_COLD, str(path)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            out[label] = {"error": proc.stderr.strip().splitlines()[-1:]}
            continue
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        out[label] = {**rec, "process_s": wall}
    return out


def install_size() -> dict[str, Any]:
    """Bytes on disk of each distribution a decode-only install brings, and of the JIT
    (numba, llvmlite) no part of permcodec uses any more; permcodec counts its package folder without
    generated C, tests or caches (it may be an editable install)."""
    from importlib import metadata

    sizes: dict[str, int | None] = {}
    for dist in (*DECODE_ONLY, *JIT):
        if dist == "permcodec":
            root = Path(permcodec.__file__).parent
            files = [f for f in root.rglob("*") if f.is_file()]
            keep = [
                f for f in files if f.suffix not in (".c", ".pyc") and "__pycache__" not in f.parts
            ]
            sizes[dist] = sum(f.stat().st_size for f in keep)
            continue
        try:
            d = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            sizes[dist] = None
            continue
        total = 0
        for f in d.files or []:
            full = Path(d.locate_file(f))
            if full.is_file() and "__pycache__" not in full.parts:
                total += full.stat().st_size
        sizes[dist] = total
    decode = sum(v or 0 for k, v in sizes.items() if k in DECODE_ONLY)
    jit = sum(v or 0 for k, v in sizes.items() if k in JIT)
    return {"bytes": sizes, "decode_only_mb": decode / 1e6, "jit_mb": jit / 1e6}


# ---------------------------------------------------------------------------------------------
# Peak memory


def peak_memory(loader: str, tiny: Path, path: Path, threads: int) -> dict[str, Any]:
    """Peak RSS of decoding ``path`` in a fresh interpreter, over its post-warm-up baseline."""
    cmd = [sys.executable, "-c", CHILD_PEAK, loader, str(tiny), str(path), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    over = (rec["peak_kib"] - rec["base_kib"]) * 1024
    rec["peak_over_base_mib"] = over / MIB
    rec["x_decoded_float32"] = over / rec["decoded_bytes"]
    # above a bare interpreter: imports, kernels and the decode together
    rec["peak_over_bare_mib"] = (rec["peak_kib"] - rec["bare_kib"]) * 1024 / MIB
    return rec


# ---------------------------------------------------------------------------------------------
# One model


def measure_model(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Everything measured for one model."""
    if name in TRAINED:
        model, names = trained_model(name, work, args)
    elif name in POSTHOC:
        model, names = posthoc_model(name)
    else:
        model, names = laperm_model(name)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    weights = sum(state[k].numel() for k in names)
    perm_path, pt_path = work / f"{name}.perm", work / f"{name}.pt"
    print(f"{name}: {weights:,} planned weights, measuring...", flush=True)
    bpw = POSTHOC[name][1] if name in POSTHOC else None
    times, cuda = time_permcodec(model, perm_path, args.repeat, bpw)
    times.update(time_torch(state, pt_path, args.repeat))
    times.update(time_safetensors(state, work / f"{name}.safetensors", args.repeat))
    arrays = {k: state[k].numpy() for k in names}
    nnc_times, nnc = ({}, {"error": "skipped (--no-nncodec)"})
    if args.nncodec:
        nnc_times, nnc = time_nncodec(arrays, args.nncodec_qp, args.repeat)
    if "bytes" in nnc:
        nnc["bits_per_weight"] = 8 * nnc["bytes"] / weights
    times.update(nnc_times)
    tiny_perm, tiny_pt = work / "tiny.perm", work / "tiny.pt"
    memory = {
        "permcodec decode numpy": peak_memory("permcodec", tiny_perm, perm_path, args.threads),
        "torch.load": peak_memory("torch", tiny_pt, pt_path, args.threads),
    }
    cold = cold_decode(perm_path, weights)
    medians = {op: statistics.median(t) for op, t in times.items()}
    print(f"{name}: " + ", ".join(f"{op} {s:.3f} s" for op, s in medians.items()), flush=True)
    return {
        "model": name,
        "parameters": sum(v.numel() for v in state.values()),
        "weights": weights,
        "planned_tensors": names,
        "float32_bytes": 4 * sum(v.numel() for v in state.values()),
        "permcodec_bytes": perm_path.stat().st_size,
        "permcodec_bits_per_weight": 8 * perm_path.stat().st_size / weights,
        "torch_save_bytes": pt_path.stat().st_size,
        "nncodec": nnc,
        "cuda": cuda,
        "times": times,
        "median_s": medians,
        "weights_per_s": {op: weights / s for op, s in medians.items()},
        "ratios": ratios(medians),
        "memory": memory,
        "cold_decode": cold,
        "codings": sorted(
            {t["coding"] for t in permcodec.open(perm_path).info()["tensors"] if t["name"] in names}
        ),
    }


def ratios(med: dict[str, float]) -> dict[str, float | None]:
    """The issue's ratios (throughput ratios vs NNCodec, time ratio vs torch.load)."""

    def over(num: str, den: str) -> float | None:
        return med[num] / med[den] if num in med and den in med else None

    return {
        "decode_throughput_vs_nncodec": over("NNCodec decode", "permcodec decode numpy"),
        "encode_throughput_vs_nncodec": over("NNCodec encode", "permcodec encode"),
        "decode_time_vs_torch_load": over("permcodec decode numpy", "torch.load"),
        "torch_decode_time_vs_torch_load": over("permcodec decode torch cpu", "torch.load"),
        "decode_time_vs_safetensors_load": over("permcodec decode numpy", "safetensors load"),
    }


def write_tiny(work: Path) -> None:
    """The warm-up files the memory children decode before their baseline."""
    model, _ = tiny_model()
    permcodec.save(model, work / "tiny.perm")
    torch.save(model.state_dict(), work / "tiny.pt")


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(x: float | None, spec: str) -> str:
    return "" if x is None else format(x, spec)


def table_rows(rec: dict[str, Any]) -> list[list[str]]:
    """Table cells of one model: one row per operation."""
    med, rows = rec["median_s"], []
    for op, s in med.items():
        ref = "NNCodec encode" if "encode" in op or op == "torch.save" else "NNCodec decode"
        vs_nnc = med[ref] / s if ref in med else None
        vs_load = s / med["torch.load"] if "decode" in op or op == "torch.load" else None
        mem = rec["memory"].get(op, {})
        peak = (
            f"{mem['peak_over_base_mib']:.1f} ({mem['x_decoded_float32']:.2f}x)"
            if "peak_over_base_mib" in mem
            else ""
        )
        bpw = {
            "permcodec encode": rec["permcodec_bits_per_weight"],
            "NNCodec encode": rec["nncodec"].get("bits_per_weight"),
        }.get(op)
        rows.append(
            [
                rec["model"],
                op,
                f"{s:.4f}",
                f"{rec['weights'] / s / 1e6:.2f}",
                _fmt(vs_nnc, ".2f"),
                _fmt(vs_load, ".2f"),
                _fmt(bpw, ".3f"),
                peak,
            ]
        )
    if not rec["cuda"]["available"]:
        rows.append([rec["model"], "permcodec decode torch cuda", "no GPU", "", "", "", "", ""])
    if "error" in rec["nncodec"]:
        rows.append([rec["model"], "NNCodec", rec["nncodec"]["error"][:60], "", "", "", "", ""])
    return rows


HEADER = [
    "model",
    "operation",
    "median s",
    "M weights/s",
    "speed vs NNCodec",
    "time vs torch.load",
    "bits/weight",
    "peak MiB (x f32)",
]


FOOTPRINT_HEADER = [
    "model",
    "codings",
    "decode peak MiB above bare python",
    "torch.load peak above bare",
    "first decode, fresh process: C s",
    "numpy reference s",
]


def footprint_rows(rec: dict[str, Any]) -> list[list[str]]:
    """Memory above a bare interpreter and the first decode in a fresh process."""
    mem, cold = rec["memory"], rec["cold_decode"]

    def peak(op: str) -> str:
        m = mem.get(op, {})
        return f"{m['peak_over_bare_mib']:.1f}" if "peak_over_bare_mib" in m else ""

    def first(label: str) -> str:
        c = cold.get(label, {})
        if "skipped" in c:
            return "not timed"
        if "process_s" not in c:
            return "error" if c else ""
        return f"{c['process_s']:.2f} (decode {c['first_decode_s']:.2f})"

    return [
        [
            rec["model"],
            "+".join(rec["codings"]),
            peak("permcodec decode numpy"),
            peak("torch.load"),
            first("c"),
            first("numpy reference"),
        ]
    ]


def install_line(size: dict[str, Any]) -> str:
    """One line on the size of a decode-only install."""
    parts = ", ".join(
        f"{k} {v / 1e6:.1f}" for k, v in size["bytes"].items() if k in DECODE_ONLY and v
    )
    return (
        f"decode-only install: {size['decode_only_mb']:.1f} MB ({parts}); "
        f"numba + llvmlite, no longer used at all: {size['jit_mb']:.1f} MB"
    )


def _fixed(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _markdown_table(rows: list[list[str]]) -> list[str]:
    head, body = rows[0], rows[1:]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(r) + " |" for r in body
    ]


def text_table(records: list[dict[str, Any]]) -> str:
    """A fixed-width table for the terminal."""
    main = _fixed([HEADER] + [r for rec in records for r in table_rows(rec)])
    foot = _fixed([FOOTPRINT_HEADER] + [r for rec in records for r in footprint_rows(rec)])
    return main + "\n\n" + foot


def markdown(records: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """The markdown table written to ``speed.md``, with a line on models and machine."""
    lines = [
        f"`{info['command']}` on {info['machine']['cpu_count']} CPUs "
        f"({info['threads']} torch threads), {info['repeat']} timed runs each, NNCodec "
        f"qp={info['nncodec_qp']}; "
        + ", ".join(f"{r['model']}: {r['weights']:,} weights" for r in records),
        "",
        *_markdown_table([HEADER] + [r for rec in records for r in table_rows(rec)]),
        "",
        *_markdown_table([FOOTPRINT_HEADER] + [r for rec in records for r in footprint_rows(rec)]),
        "",
        install_line(info["install"]),
    ]
    return "\n".join(lines) + "\n"


def _git_head() -> str | None:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def machine() -> dict[str, Any]:
    """Versions and CPU of this machine."""
    try:
        from permcodec import kernels

        host = kernels.load("rans")
        kernels_backend: str | None = None if host is None else host.backend
    except Exception:
        kernels_backend = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "permcodec": permcodec.__version__,
        "permcodec_kernels": kernels_backend,
        "nncodec": baselines.NNCODEC_VERSION,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git": _git_head(),
    }


# ---------------------------------------------------------------------------------------------
# Main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"from {', '.join(MODELS)}")
    ap.add_argument("--quick", action="store_true", help="only " + ", ".join(QUICK_MODELS))
    ap.add_argument("--repeat", type=int, default=3, help="timed runs after one warm-up")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (NNCodec and the decoder use one)"
    )
    ap.add_argument("--nncodec-qp", type=int, default=-38)
    ap.add_argument("--no-nncodec", dest="nncodec", action="store_false")
    ap.add_argument(
        "--train-models",
        default="lenet300,lenet5",
        help="LaPerm training overhead on these (Fashion-MNIST); '' to skip",
    )
    ap.add_argument("--train-epochs", type=int, default=8, help="epochs per variant (median)")
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: Debian's)")
    ap.add_argument("--keep", type=Path, default=None, help="write the files here and keep them")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for speed.json / .md")
    args = ap.parse_args()
    picked = [m.strip() for m in args.models.split(",") if m.strip()]
    args.models = list(QUICK_MODELS) if args.quick else picked
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    return args


def run_all(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    write_tiny(work)
    return [measure_model(name, args, work) for name in args.models]


def training_overhead(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """LaPerm (k=20, k=1) against plain Adam, time per epoch, by
    ``benchmarks/train_overhead.py`` in a fresh interpreter: once NNCodec's extension is
    loaded, torch's Adam step takes twice as long in the same process."""
    names = [n for n in args.train_models.split(",") if n]
    if not names:
        return []
    out = work / "train_overhead.json"
    cmd = [
        sys.executable,
        str(Path(__file__).parent / "train_overhead.py"),
        "--models",
        ",".join(names),
        "--epochs",
        str(args.train_epochs),
        "--threads",
        str(args.threads),
        "--out",
        str(out),
    ]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())["records"]


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.nncodec and baselines.NNCODEC_ERROR:
        print(f"NNCodec skipped: {baselines.NNCODEC_ERROR}", flush=True)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        records = run_all(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="permcodec_speed_") as tmp:
            records = run_all(args, Path(tmp))
    info = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "threads": args.threads,
        "repeat": args.repeat,
        "nncodec_qp": args.nncodec_qp,
        "seed": SEED,
        "install": install_size(),
    }
    with tempfile.TemporaryDirectory(prefix="permcodec_train_") as tmp:
        training = training_overhead(args, Path(tmp))
    print(text_table(records))
    print(install_line(info["install"]))
    if training:
        import train_overhead

        print(train_overhead.table(training))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {**info, "models": records, "training": training}
    (args.out / "speed.json").write_text(json.dumps(result, indent=1))
    md = markdown(records, info)
    if training:
        md += "\nLaPerm training overhead (median epoch times; overhead: median of the\n"
        md += "per-round ratios of interleaved epochs):\n\n"
        md += train_overhead.table(training) + "\n"
    (args.out / "speed.md").write_text(md)
    print(f"wrote {args.out / 'speed.json'} and speed.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
