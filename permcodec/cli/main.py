"""``permcodec``: encode, decode, inspect and verify `.perm` files; train and evaluate.

A thin click layer over :mod:`permcodec.cli.files`, :class:`permcodec.PermFile` and the
experiment harness: it parses arguments, calls the library, prints, and maps the
library's errors to one line and an exit code (naming the flag where the library names
an argument).
Every error is one line on stderr (``PERMCODEC_DEBUG=1`` adds the traceback of
unexpected ones). Exit codes: 0 success, 1 the operation failed, 2 usage error, 3
invalid, damaged or unsafe input file, 4 a resource limit (``--max-bytes``) refused the
file, 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..coding.runs import THREADS_ENV
from ..core.plan import MAX_BITS
from ..core.version import __version__
from ..errors import FormatError, LimitError, PermcodecError, UnsafeCheckpointError, require
from ..format import posthoc
from ..format.limits import ENV_MAX_BYTES, parse_size
from ..format.reader import PermFile
from .files import OUTPUT_DTYPES, OUTPUT_FORMATS, check_target, decode_file, encode_checkpoint

EXIT_FAILED, EXIT_USAGE, EXIT_DAMAGED, EXIT_LIMIT, EXIT_INTERRUPTED = 1, 2, 3, 4, 130


#: How the library's error messages name arguments (patterns), and the flags that set
#: them here.
FLAG_OF = {
    r"\boverwrite=True": "--force",
    r"\bmax_bytes= or PERMCODEC_MAX_BYTES": "--max-bytes or PERMCODEC_MAX_BYTES",
    r"init\(\.\.\., bpw=R\)": "permcodec train --bpw R",
    r"\bbpw=R\b": "--bpw R",
    r"\bmax_error=E\b": "--max-error E",
    r"\blossless=True": "--lossless",
    r"\b(bpw|bits|max_error|key)=(?!\w)": lambda m: "--" + m.group(1).replace("_", "-"),
}


def _fail(message: str, code: int) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    for argument, flag in FLAG_OF.items():
        first = re.sub(argument, flag, first)
    click.echo(f"permcodec: error: {first}", err=True)
    sys.exit(code)


def reports_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every error into one line on stderr and a meaningful exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise  # usage errors: the group reports them (exit 2)
        except (FormatError, UnsafeCheckpointError) as e:
            _fail(str(e), EXIT_DAMAGED)
        except LimitError as e:
            _fail(str(e), EXIT_LIMIT)
        except (PermcodecError, OSError, ImportError) as e:
            _fail(str(e), EXIT_FAILED)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except Exception as e:  # a bug: still one line, unless debugging
            if os.environ.get("PERMCODEC_DEBUG"):
                traceback.print_exc()
            _fail(f"internal error, please report it: {type(e).__name__}: {e}", EXIT_FAILED)

    return wrapper


class OneLineErrors(click.Group):
    """A group whose usage errors are one line on stderr too (exit 2)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        signal.signal(signal.SIGTERM, _interrupt)  # clean up temporary files as on Ctrl-C
        if hasattr(signal, "SIGPIPE"):  # `permcodec info m.perm | head -1`: stop quietly
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx else "permcodec"
            _fail(f"{e.format_message()} (see '{where} --help')", EXIT_USAGE)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except click.Abort:
            _fail("interrupted", EXIT_INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else 0)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _set_max_bytes(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Keep --max-bytes (before or after the verb) for the commands, which pass it to the
    library."""
    if value is None:
        return
    try:
        ctx.find_root().ensure_object(dict)["max_bytes"] = parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def max_bytes_option(envvar: str | None = None) -> Callable[..., Any]:
    """--max-bytes, on the group (with its environment variable) and on every verb that
    reads a .perm file."""
    return click.option(
        "--max-bytes",
        metavar="SIZE",
        envvar=envvar,
        expose_value=False,
        callback=_set_max_bytes,
        help="Refuse .perm files whose tensors take more than SIZE once decoded "
        "(e.g. 512M, 64G) [default: 4G; env PERMCODEC_MAX_BYTES].",
    )


def _max_bytes() -> int | None:
    """The --max-bytes of this invocation (None: the library's default)."""
    return click.get_current_context().find_root().ensure_object(dict).get("max_bytes")


def _output_suffix(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and value.suffix.lower() not in OUTPUT_FORMATS:
        raise click.BadParameter(f"{value.name} must end in one of {', '.join(OUTPUT_FORMATS)}")
    return value


def perm_file(metavar: str = "IN.perm") -> Callable[..., Any]:
    """The input-file argument of the commands that read a .perm file (and their
    --max-bytes)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = max_bytes_option()(fn)
        return click.argument(
            "src", metavar=metavar, type=click.Path(exists=True, dir_okay=False, path_type=Path)
        )(fn)

    return decorate


def threads_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="torch threads [default: torch's]. Use 1 when other work shares the CPU: a "
        "2-thread loop then ran 15-30x slower here.",
    )(fn)


def _set_decode_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:  # what the decoders read (permcodec.coding.runs.decode_threads)
        os.environ[THREADS_ENV] = str(value)


decode_threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    envvar=THREADS_ENV,
    expose_value=False,
    callback=_set_decode_threads,
    help="Decode on N threads: tensors side by side, row-rans lanes, bucket-rans layers "
    "[default: 1; env PERMCODEC_THREADS]. More than 1 pays only on an idle machine.",
)


def bits_option(help_text: str) -> Callable[..., Any]:
    return click.option(
        "--bits",
        default=None,
        type=click.IntRange(1, MAX_BITS),
        metavar="B",
        help=help_text,
    )


force_option = click.option(
    "-f", "--force", is_flag=True, help="Overwrite the output if it exists."
)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="permcodec")
@max_bytes_option(ENV_MAX_BYTES)
def main() -> None:
    """Store networks trained by permutation (LaPerm) as seed + specs + permutations.

    \b
    Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 invalid, damaged or
    unsafe input file, 4 over a resource limit (--max-bytes), 130 interrupted.
    """


def _retired(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        raise click.UsageError(
            "--approximate is retired (its default damaged models): give --bpw R (a size) "
            "or --max-error E (a relative error per weight matrix)"
        )


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output .perm file [default: MODEL with suffix .perm].",
)
@click.option(
    "--bpw",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="R",
    help="Target size: the weight matrices cost at most R bits per weight, container "
    "included (lossy; the error of each matrix is reported).",
)
@click.option(
    "--max-error",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=None,
    metavar="E",
    help="A model trained without LaPerm: every weight matrix within relative L2 error E, "
    f"as small as that allows [default: {posthoc.DEFAULT_MAX_ERROR:g}].",
)
@click.option(
    "--lossless", is_flag=True, help="A model trained without LaPerm: store every tensor exactly."
)
@bits_option("A LaPerm model: store only each weight's rank bucket (2**B per row): lossy.")
@click.option(
    "--key",
    default=None,
    metavar="KEY",
    help="The entry of a training checkpoint that holds the state dict (found when only "
    "one entry holds tensors).",
)
@click.option(
    "--calibrate",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="With --bpw, on a .perm written by `permcodec train`: choose the depths by the "
    "rise of the model's loss on the first N training examples of its dataset (all of "
    "them if fewer; needs torch), not by relative error.",
)
@click.option("--data-dir", default=None, help="Folder of the dataset files (--calibrate).")
@click.option("--approximate", is_flag=True, hidden=True, expose_value=False, callback=_retired)
@force_option
@reports_errors
def encode(
    model: Path,
    output: Path | None,
    bpw: float | None,
    max_error: float | None,
    lossless: bool,
    bits: int | None,
    key: str | None,
    calibrate: int | None,
    data_dir: str | None,
    force: bool,
) -> None:
    """Encode a model (.pt state dict or checkpoint, .safetensors, .npz) into a .perm file.

    \b
    A model trained by LaPerm (permcodec.save_checkpoint, or a state dict of a
    model seeded by permcodec.init): stored exactly; --bits B keeps rank buckets,
    --bpw R re-codes it within R bits per weight.
    \b
    Any other model (trained by Adam, downloaded): every weight matrix goes on a
    grid fitted to its values, the rest (biases, norm layers, buffers) stays exact.
    --bpw R: within R bits per weight; --max-error E: each matrix within relative
    L2 error E; neither: each within 0.001; --lossless: everything exact. Each
    lossy matrix's error is reported (permcodec info lists them).
    \b
    MODEL may also be a .perm file, re-coded with --bits or --bpw.
    """
    chosen = [f for f, v in (("--bits", bits), ("--bpw", bpw), ("--max-error", max_error),
                             ("--lossless", lossless or None)) if v is not None]  # fmt: skip
    if len(chosen) > 1:
        raise click.UsageError(
            f"give one of --bits, --bpw, --max-error, --lossless, not {' and '.join(chosen)}"
        )
    if calibrate is not None and bpw is None:
        raise click.UsageError("--calibrate chooses the depths of --bpw R; give --bpw too")
    if calibrate is not None and model.suffix != ".perm":
        raise click.UsageError("--calibrate re-codes a .perm written by `permcodec train`")
    if data_dir is not None and calibrate is None:
        raise click.UsageError("--data-dir is where --calibrate finds its data; give --calibrate N")
    output = output or model.with_suffix(".perm")
    loss = None
    if calibrate is not None:
        require("torch", "permcodec encode --calibrate", "torch", "train")
        from ..experiments.train import calibration_loss

        check_target(output, force)  # before the calibration's minutes, not after
        loss = calibration_loss(model, calibrate, data_dir, _max_bytes())
    info = encode_checkpoint(
        model,
        output,
        overwrite=force,
        bits=bits,
        max_bytes=_max_bytes(),
        bpw=bpw,
        loss=loss,
        max_error=max_error,
        lossless=lossless,
        key=key,
    )
    click.echo(
        f"wrote {output}: {info['file_bytes']} bytes, {info['bits_per_weight']:.3f} "
        f"bits/weight, {info['ratio_vs_float32']:.2f}x smaller than float32"
    )
    _report_lossy(info, default=bpw is None and max_error is None and not lossless)
    _report_rate(info["weight_matrices"], bpw)


def _report_lossy(info: dict[str, Any], default: bool = False) -> None:
    """The tensors a file does not hold exactly: the rank-bucket ones one by one, the
    weight matrices on grids in one line (``permcodec info`` lists them)."""
    grids = [t for t in info["tensors"] if t["coding"] == "grid-rans"]
    for t in info["tensors"]:
        if t.get("rel_error") and t["coding"] != "grid-rans":
            how = "approximated" if t.get("exact", True) else f"at {t.get('bits')} bits"
            click.echo(f"lossy: {t['name']} {how}: relative L2 error {t['rel_error']:.4f}")
    if grids:
        errors = [t.get("rel_error", 0.0) for t in grids]
        within = (
            f"; each within the default --max-error {posthoc.DEFAULT_MAX_ERROR:g} (choose "
            "with --max-error E, --bpw R or --lossless)"
            if default
            else ""
        )
        what = (
            "1 weight matrix on a grid"
            if len(grids) == 1
            else f"{len(grids)} weight matrices on grids"
        )
        click.echo(
            f"lossy: {what}, relative L2 error {min(errors):.2e} to {max(errors):.2e}{within}"
        )


@main.command()
@perm_file("IN.perm")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_output_suffix,
    help="Output file: .pt (torch.save state dict), .safetensors or .npz "
    "[default: IN with suffix .safetensors].",
)
@click.option(
    "--dtype",
    type=click.Choice(OUTPUT_DTYPES),
    default=None,
    help="Convert floating-point tensors on the way out [default: as stored].",
)
@click.option(
    "--device", default="cpu", show_default=True, help="Where to decode: cpu or cuda (needs torch)."
)
@force_option
@decode_threads_option
@reports_errors
def decode(src: Path, output: Path | None, dtype: str | None, device: str, force: bool) -> None:
    """Rebuild the exact weights of IN.perm and write them as .pt, .safetensors or .npz."""
    output = output or src.with_suffix(".safetensors")
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always", UserWarning)
        n = decode_file(
            src, output, device=device, overwrite=force, max_bytes=_max_bytes(), dtype=dtype
        )
    click.echo(f"wrote {output}: {n} tensors")
    for note in notes:
        click.echo(f"note: {note.message}", err=True)


def _spec_text(spec: dict[str, Any]) -> str:
    text = spec.get("kind", "?")
    if spec.get("density", 1.0) < 1.0:
        text += f" d={spec['density']:g}"
    if spec.get("granularity", "row") != "row":
        text += f" per-{spec['granularity']}"
    return text


@main.command()
@perm_file("IN.perm")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@reports_errors
def info(src: Path, as_json: bool) -> None:
    """Show each tensor's shape, spec, coding, bits per weight and the bound."""
    with PermFile(src, max_bytes=_max_bytes()) as pf:
        data = pf.info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{data['path']}  (format {data['format_version']}, seed {data['seed']})")
    head = f"{'tensor':32} {'shape':>16} {'dtype':>8} {'coding':>11} {'spec':>22} {'bits/w':>7} {'bound':>7} {'ratio':>6}"
    click.echo(head)
    click.echo("-" * len(head))
    for t in data["tensors"]:
        shape = "x".join(map(str, t["shape"])) or "scalar"
        spec = _spec_text(t["spec"]) if "spec" in t else "-"
        if t["coding"] == "grid-rans":
            spec = f"grid, err {t.get('rel_error', 0.0):.1e}"
        bound = f"{t['bound_bits_per_weight']:.3f}" if "bound_bits_per_weight" in t else "-"
        ratio = f"{t['ratio_to_bound']:.4f}" if t.get("ratio_to_bound") else "-"
        click.echo(
            f"{t['name'][:32]:32} {shape:>16} {t['dtype']:>8} {t['coding']:>11} "
            f"{spec:>22} {t['bits_per_weight']:7.3f} {bound:>7} {ratio:>6}"
        )
    click.echo(
        f"total: {data['numel']} values in {data['file_bytes']} bytes = "
        f"{data['bits_per_weight']:.3f} bits/weight; {data['ratio_vs_float32']:.2f}x smaller "
        f"than float32, {data['ratio_vs_float16']:.2f}x smaller than float16"
    )
    _report_lossy(data)
    _report_rate(data["weight_matrices"], None)
    if data["seeded_ratio_to_bound"]:
        click.echo(
            f"seeded tensors: {data['seeded_bits']:.0f} bits = "
            f"{data['seeded_ratio_to_bound']:.4f} x their bound; other tensors "
            f"{data['other_payload_bits']:.0f} bits; container {data['container_bits']:.0f} bits"
        )


@main.command()
@perm_file("IN.perm")
@decode_threads_option
@reports_errors
def verify(src: Path) -> None:
    """Decode every tensor and check every checksum and digest.

    Exits 3 and names each damaged tensor if anything does not match.
    """
    with PermFile(src, strict=False, max_bytes=_max_bytes()) as pf:
        problems = pf.verify()
        n = len(pf)
    if problems:
        for name, msg in problems:
            click.echo(f"damaged: {name}: {msg}", err=True)
        _fail(f"{src}: {len(problems)} problem(s) found", EXIT_DAMAGED)
    click.echo(f"ok: {src}: {n} tensors decoded, all digests match")


@main.command()
@click.option(
    "--model",
    default="lenet300",
    show_default=True,
    help="lenet300, lenet5, conv2/conv4/conv6 (+ -bn), resnet20, logreg (784-10), mlp128 "
    "(784-128-64-10); byte-level language models lm-tiny (0.26M), lm-small (0.84M).",
)
@click.option(
    "--dataset",
    default=None,
    help="Images: digits (embedded, the default), fashion-mnist, mnist, cifar10, idx. "
    "Language models: python-stdlib (this Python's own .py files, the default) or text "
    "(every text file under --data-dir).",
)
@click.option("--data-dir", default=None, help="Folder of the dataset files.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--batch-size",
    default=None,
    type=click.IntRange(min=1),
    help="[default: 128; 16 windows for language models]",
)
@click.option(
    "--sync-period",
    "-k",
    default=None,
    type=click.IntRange(min=1),
    help="LaPerm sync period k, steps between syncs [default: 20; 50 for language models].",
)
@click.option(
    "--optimizer",
    type=click.Choice(["adam", "adamw", "sgd"]),
    default=None,
    help="Inner optimizer [default: adam; adamw for language models].",
)
@click.option(
    "--lr",
    default=None,
    type=float,
    help="Learning rate [default: 1e-3; 6e-3 for language models].",
)
@click.option(
    "--schedule",
    type=click.Choice(["constant", "cosine", "warmup-cosine"]),
    default=None,
    help="Learning rate over the run, the same for LaPerm and --baseline: constant, a "
    "cosine down to 0, or 5% warmup then a cosine down to 10% [default: constant; "
    "warmup-cosine for language models].",
)
@click.option("--momentum", default=0.9, show_default=True, type=float, help="SGD momentum.")
@click.option(
    "--weight-decay", default=None, type=float, help="[default: 0; 0.1 for language models]"
)
@click.option(
    "--density",
    default=None,
    type=click.FloatRange(0.0, 1.0, min_open=True),
    help="Fraction of non-zeros kept in every row, in (0, 1] (sparse init).",
)
@click.option(
    "--init",
    "init_spec",
    default=None,
    help='Initializer, e.g. he_normal, "normal:std=0.02", "constant:value=0.08" '
    "[default: he_uniform; xavier_normal for language models].",
)
@click.option(
    "--min-row",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Leave layers whose rows are shorter unseeded (trained normally, stored exactly).",
)
@bits_option("Train at 2**B rank buckets per row; the .perm then costs about B bits/weight.")
@click.option(
    "--bpw",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="R",
    help="Target size: the weight matrices cost at most R bits per weight, container "
    "included; each matrix gets the form that loses least (overrides --init, --density, "
    "--min-row).",
)
@click.option(
    "--allocation",
    type=click.Choice(["weights", "rows"]),
    default=None,
    help="How --bpw shares bits among matrices: by weights (every weight alike, about one "
    "rate for all; the default, best on conv nets) or by rows (longer rows get fewer bits "
    "per weight; 0.3-0.4 points better on LeNet-300-100).  [default: weights]",
)
@click.option("--biases", is_flag=True, help="Seed and permute biases too.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1))
@click.option(
    "--baseline",
    is_flag=True,
    help="Train the same seeded model with the plain inner optimizer (writes .pt).",
)
@click.option("--device", default="cpu", show_default=True)
@threads_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output .perm (a .jsonl log and a .png of the curves go beside it).",
)
@force_option
@reports_errors
def train(
    output: Path,
    force: bool,
    no_progress: bool,
    init_spec: str | None,
    threads: int | None,
    **opts: Any,
) -> None:
    """Train a built-in model by LaPerm (or --baseline) and write it as .perm.

    An epoch of a language model is 250 steps (under a warmup-and-cosine schedule unless
    --schedule says otherwise); its log and `evaluate` report the validation loss in bits
    per byte.
    """
    require("torch", "permcodec train", "torch", "train")
    from ..experiments.data import DATASETS
    from ..experiments.models import LANGUAGE_MODELS, MODELS
    from ..experiments.text import CORPORA
    from ..experiments.train import TrainConfig, run

    if opts["allocation"] is not None and opts["bpw"] is None:
        raise click.UsageError("--allocation shares the bits of --bpw; give --bpw R too")
    if opts["allocation"] is None:
        del opts["allocation"]  # TrainConfig's default
    _known("--model", opts["model"], [*MODELS, *LANGUAGE_MODELS])
    lm = opts["model"] in LANGUAGE_MODELS
    if opts["dataset"] is not None:
        _known("--dataset", opts["dataset"], CORPORA if lm else DATASETS)
    check_target(output.with_suffix(".pt") if opts["baseline"] else output, force)
    _set_threads(threads)
    cfg = TrainConfig(init=init_spec, **opts)
    result = run(cfg, output, progress=not no_progress)
    for note in result.notes:
        click.echo(note, err=True)
    last = result.epochs[-1]
    if lm:
        loss = result.final_test_loss
        click.echo(
            f"final validation loss {loss:.4f} nats/byte = {loss / math.log(2):.4f} bits/byte "
            f"(train {last.train_loss:.4f}), {result.seconds_per_epoch:.1f} s/epoch; "
            f"wrote {result.output}"
        )
    else:
        click.echo(
            f"final test accuracy {result.final_test_acc:.2f}% (train {last.train_acc:.2f}%), "
            f"{result.seconds_per_epoch:.1f} s/epoch; wrote {result.output}"
        )
    if result.output is not None and result.output.suffix == ".perm":
        with PermFile(result.output, max_bytes=_max_bytes()) as pf:
            _report_rate(pf.size_split(), opts.get("bpw"))


def _report_rate(split: dict[str, float], target: float | None) -> None:
    """One line: the weight matrices' bits per weight (and the target), the rest apart."""
    aim = f" (target {target:g})" if target is not None else ""
    click.echo(
        f"weight matrices: {split['bits_per_weight']:.3f} bits/weight{aim}, container "
        f"included; other tensors {split['other_bits'] / 8:.0f} bytes, metadata "
        f"{split['metadata_bits'] / 8:.0f} bytes"
    )


def _known(flag: str, value: str, known: Any) -> None:
    """A usage error (exit 2) for a name that is not among ``known``."""
    if value not in known:
        raise click.BadParameter(f"{value!r} is not one of {', '.join(known)}", param_hint=flag)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


@main.command()
@perm_file("MODEL.perm")
@click.option("--dataset", default=None, help="Dataset [default: the one it was trained on].")
@click.option("--data-dir", default=None, help="Folder of the dataset files.")
@click.option("--device", default="cpu", show_default=True)
@threads_option
@reports_errors
def evaluate(
    src: Path, dataset: str | None, data_dir: str | None, device: str, threads: int | None
) -> None:
    """Test accuracy of the model decoded from MODEL.perm (written by `permcodec train`;
    the .pt of `train --baseline` too)."""
    require("torch", "permcodec evaluate", "torch", "train")
    from ..experiments.data import DATASETS
    from ..experiments.train import evaluate as evaluate_file

    if dataset is not None:
        _known("--dataset", dataset, DATASETS)
    _set_threads(threads)

    score, meta = evaluate_file(src, dataset, data_dir, device, max_bytes=_max_bytes())
    if meta.get("task") == "lm":
        recorded = meta.get("val_loss")
        at_end = f" (recorded at the end of training: {recorded})" if recorded else ""
        click.echo(
            f"validation loss {score:.6f} nats/byte{at_end}, {score / math.log(2):.4f} bits/byte"
        )
        return
    recorded = (
        f" (recorded at the end of training: {meta['test_acc']}%)" if "test_acc" in meta else ""
    )
    click.echo(f"test accuracy {score:.4f}%{recorded}")


@main.command()
@perm_file("MODEL.perm")
@click.option("--prompt", default="def ", show_default=True, help="Text to continue.")
@click.option("--length", default=200, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--temperature",
    default=0.8,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="Sampling temperature (0: always the likeliest byte).",
)
@click.option("--top-k", default=40, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1))
@click.option("--device", default="cpu", show_default=True)
@threads_option
@reports_errors
def generate(
    src: Path,
    prompt: str,
    length: int,
    temperature: float,
    top_k: int,
    seed: int,
    device: str,
    threads: int | None,
) -> None:
    """Decode a language model from MODEL.perm and continue PROMPT with sampled text."""
    require("torch", "permcodec generate", "torch", "train")
    from ..experiments.lm import sample
    from ..experiments.train import rebuild

    _set_threads(threads)
    with PermFile(src, max_bytes=_max_bytes()) as pf:
        meta = pf.metadata()
    if meta.get("task") != "lm":
        raise PermcodecError(f"{src} holds {meta.get('model', 'a model')}, not a language model")
    model, _ = rebuild(src, device, max_bytes=_max_bytes())
    out = sample(model, prompt.encode(), length, temperature, top_k, seed)
    click.echo(prompt + out.decode("utf-8", errors="replace"))


@main.command()
@perm_file("MODEL.perm")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PNG to write [default: MODEL.profile.png].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@reports_errors
def profile(src: Path, output: Path | None, as_json: bool) -> None:
    """Plot each layer's weight profile and how far its ranks moved from the init."""
    from ..experiments.profile import RANDOM_SHIFT_STD, plot_profiles, weight_profiles

    profiles = weight_profiles(src, max_bytes=_max_bytes())
    output = output or src.with_suffix(".profile.png")
    plot_profiles(profiles, output, title=src.name)
    rows = [
        {
            "name": p.name,
            "shape": p.shape,
            "row_length": p.m,
            "rank_shift_std": p.shift_std,
            "mean_abs_rank_shift": p.mean_abs_shift,
            "unmoved": p.unmoved,
        }
        for p in profiles
    ]
    if as_json:
        click.echo(
            json.dumps(
                {"layers": rows, "random_shift_std": RANDOM_SHIFT_STD, "plot": str(output)},
                indent=2,
            )
        )
        return
    click.echo(f"{'tensor':28} {'row':>6} {'shift std':>10} {'mean |shift|':>13} {'unmoved':>8}")
    for r in rows:
        click.echo(
            f"{r['name'][:28]:28} {r['row_length']:6d} {r['rank_shift_std']:10.4f} "
            f"{r['mean_abs_rank_shift']:13.4f} {r['unmoved']:8.4f}"
        )
    click.echo(f"(unrelated arrangements: shift std {RANDOM_SHIFT_STD:.4f}); plot: {output}")


if __name__ == "__main__":
    main()
