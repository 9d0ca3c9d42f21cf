"""``permcodec``: encode, decode, inspect and verify `.perm` files.

A thin click layer over :mod:`permcodec.convert` and :class:`permcodec.PermFile`.
Exit codes: 0 success, 1 the operation failed, 2 usage error, 3 invalid or damaged
`.perm` file.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import permcodec
from permcodec import FormatError, PermcodecError
from permcodec.convert import decode_file, encode_checkpoint
from permcodec.permfile import PermFile

EXIT_FAILED, EXIT_USAGE, EXIT_DAMAGED = 1, 2, 3


def _fail(message: str, code: int) -> None:
    click.echo(f"permcodec: error: {message}", err=True)
    sys.exit(code)


def reports_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one line on stderr and a meaningful exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FormatError as e:
            _fail(str(e), EXIT_DAMAGED)
        except (PermcodecError, OSError, ImportError) as e:
            _fail(str(e), EXIT_FAILED)
        except KeyboardInterrupt:
            _fail("interrupted", 130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(permcodec.__version__, prog_name="permcodec")
def main() -> None:
    """Store networks trained by permutation (LaPerm) as seed + specs + permutations.

    \b
    Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 invalid or damaged .perm file.
    """


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output .perm file [default: MODEL with suffix .perm].",
)
@click.option("-f", "--force", is_flag=True, help="Overwrite the output if it exists.")
@reports_errors
def encode(model: Path, output: Path | None, force: bool) -> None:
    """Encode a checkpoint written by permcodec.save_checkpoint into a .perm file.

    Every seeded tensor must be an exact rearrangement of its initialization;
    everything else (biases, norm layers, buffers) is stored exactly with zstd.
    """
    output = output or model.with_suffix(".perm")
    info = encode_checkpoint(model, output, force=force)
    click.echo(
        f"wrote {output}: {info['file_bytes']} bytes, {info['bits_per_weight']:.3f} "
        f"bits/weight, {info['ratio_vs_float32']:.2f}x smaller than float32"
    )


@main.command()
@click.argument(
    "src", metavar="IN.perm", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file: .pt (torch.save state dict), .safetensors or .npz.",
)
@click.option(
    "--device", default="cpu", show_default=True, help="Where to decode: cpu or cuda (needs torch)."
)
@click.option("-f", "--force", is_flag=True, help="Overwrite the output if it exists.")
@reports_errors
def decode(src: Path, output: Path, device: str, force: bool) -> None:
    """Rebuild the exact weights of IN.perm and write them as .pt, .safetensors or .npz."""
    n = decode_file(src, output, device=device, force=force)
    click.echo(f"wrote {output}: {n} tensors")


def _spec_text(spec: dict[str, Any]) -> str:
    text = spec.get("kind", "?")
    if spec.get("density", 1.0) < 1.0:
        text += f" d={spec['density']:g}"
    if spec.get("granularity", "row") != "row":
        text += f" per-{spec['granularity']}"
    return text


@main.command()
@click.argument(
    "src", metavar="IN.perm", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@reports_errors
def info(src: Path, as_json: bool) -> None:
    """Show each tensor's shape, spec, coding, bits per weight and the bound."""
    with PermFile(src) as pf:
        data = pf.info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{data['path']}  (format {data['format_version']}, seed {data['seed']})")
    head = f"{'tensor':32} {'shape':>16} {'dtype':>8} {'coding':>9} {'spec':>22} {'bits/w':>7} {'bound':>7} {'ratio':>6}"
    click.echo(head)
    click.echo("-" * len(head))
    for t in data["tensors"]:
        shape = "x".join(map(str, t["shape"])) or "scalar"
        spec = _spec_text(t["spec"]) if "spec" in t else "-"
        bound = f"{t['bound_bits_per_weight']:.3f}" if "bound_bits_per_weight" in t else "-"
        ratio = f"{t['ratio_to_bound']:.4f}" if t.get("ratio_to_bound") else "-"
        click.echo(
            f"{t['name'][:32]:32} {shape:>16} {t['dtype']:>8} {t['coding']:>9} "
            f"{spec:>22} {t['bits_per_weight']:7.3f} {bound:>7} {ratio:>6}"
        )
    click.echo(
        f"total: {data['numel']} values in {data['file_bytes']} bytes = "
        f"{data['bits_per_weight']:.3f} bits/weight; {data['ratio_vs_float32']:.2f}x smaller "
        f"than float32, {data['ratio_vs_float16']:.2f}x smaller than float16"
    )
    if data["seeded_ratio_to_bound"]:
        click.echo(
            f"seeded tensors: {data['seeded_bits']:.0f} bits = "
            f"{data['seeded_ratio_to_bound']:.4f} x their bound; other tensors "
            f"{data['other_payload_bits']:.0f} bits; container {data['container_bits']:.0f} bits"
        )


@main.command()
@click.argument(
    "src", metavar="IN.perm", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@reports_errors
def verify(src: Path) -> None:
    """Decode every tensor and check every checksum and digest.

    Exits 3 and names each damaged tensor if anything does not match.
    """
    with PermFile(src) as pf:
        problems = pf.verify()
        n = len(pf)
    if problems:
        for name, msg in problems:
            click.echo(f"damaged: {name}: {msg}", err=True)
        _fail(f"{src}: {len(problems)} problem(s) found", EXIT_DAMAGED)
    click.echo(f"ok: {src}: {n} tensors decoded, all digests match")


if __name__ == "__main__":
    main()
