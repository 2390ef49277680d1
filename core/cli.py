"""The ``wattwise`` command.

Example::

    wattwise estimate --params 124e6 --tokens 1e9 --epochs 1 --hardware a100-80gb --precision bf16 --country FRA
    python -m wattwise.cli estimate --params 124e6 --tokens 1e9 --hardware t4 --precision fp16 --json
    wattwise report runs/hf                  # summary and runs/hf/wattwise/report.png, from report.json
    wattwise compare runs/hf runs/hf-bf16
    wattwise runs                            # each run's id and directory
    wattwise report 3f2a9c1e                 # a run by its id (or a unique prefix, 8 characters or more)
    wattwise compare 3f2a9c1e 77b0d4a2

Sub-commands: ``estimate`` (a run's energy, time and CO2e before it runs; see ``wattwise.estimate``),
``report RUN`` (a saved run's summary and ``report.png`` again, from its ``report.json`` or directory),
``compare A B`` (two saved runs side by side), ``runs`` (the run registry, newest first, with each run's
id and directory). A RUN is a path (a ``report.json``, or a directory holding one or a ``wattwise/``
with one) or a run id from ``wattwise runs``: the whole id or a unique prefix of at least 8
characters, looked up in the run registry for the directory the run wrote.
Every error (a bad argument, a damaged report.json or run registry, a file that cannot be written)
is one line on stderr naming the argument or file, with exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (naming the argument) and ``-1e6`` read as a value."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # argparse reads only "-1" and "-1.5" as negative numbers: "-1e6" would be taken for an option
        # and "--params -1e6" refused with "expected one argument" instead of "params must be > 0"
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


_NEGATIVE_NUMBER = re.compile(r"^-(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-inf(inity)?$|^-nan$", re.IGNORECASE)


def _number(text: str) -> float:
    """A finite number: ``0.35``, ``1e-3``, ``124e6`` or ``1_000_000`` (``1e400``, ``inf``, ``nan`` refused)."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _count(text: str) -> float:
    """A count written as ``124e6``, ``1_000_000`` or ``1000000``."""
    return _number(text)


def _whole(text: str) -> int:
    value = _count(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    from .estimate import HARDWARE, MODES, PRECISIONS

    parser = _Parser(prog="wattwise", description="Energy and carbon of ML training.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    est = sub.add_parser(
        "estimate",
        help="estimate a run's energy, time and CO2e before it runs",
        description="FLOPs = 6 x params x tokens x epochs (2 x for inference); time = FLOPs / (peak x utilization); "
        "energy = TDP x time; CO2e = energy x PUE x grid intensity.",
    )
    work = est.add_argument_group("work (give --tokens with --params, or --samples with --flops-per-sample)")
    work.add_argument("--params", type=_whole, help="model parameters, e.g. 124e6")
    work.add_argument("--tokens", type=_count, help="tokens per epoch, e.g. 1e9")
    work.add_argument("--samples", type=_count, help="samples per epoch")
    work.add_argument("--flops-per-sample", type=_count, help="forward-pass FLOPs of one sample")
    work.add_argument("--epochs", type=_count, default=1.0, help="epochs (default 1)")
    work.add_argument("--mode", choices=MODES, default="train", help="train (default) or inference")
    hw = est.add_argument_group("hardware")
    hw.add_argument("--hardware", help=f"one of: {', '.join(HARDWARE)}")
    hw.add_argument("--precision", choices=PRECISIONS, default="bf16", help="default bf16")
    hw.add_argument("--devices", type=_whole, default=1, help="number of devices (default 1)")
    hw.add_argument("--cpu-cores", type=_whole, help="cores, with --hardware cpu (default: this machine's)")
    hw.add_argument("--power-w", type=_number, help="board power in W (unknown hardware, or to override the TDP)")
    hw.add_argument("--peak-tflops", type=_number, help="dense peak TFLOP/s at --precision (unknown hardware)")
    hw.add_argument("--utilization", type=_number, help="model FLOPs utilization (default 0.35 GPU, 0.2 CPU)")
    hw.add_argument(
        "--utilization-range", type=_number, nargs=2, metavar=("LOW", "HIGH"),
        help="utilization range for the interval (default utilization x 0.5 to x 1.5)",
    )
    loc = est.add_argument_group("location (for CO2e)")
    loc.add_argument("--country", help="ISO 3166-1 alpha-3 code, e.g. FRA")
    loc.add_argument("--region", help="region within --country, e.g. california")
    loc.add_argument("--cloud-provider", help="e.g. gcp (codecarbon's impact.csv)")
    loc.add_argument("--cloud-region", help="e.g. europe-west1")
    loc.add_argument("--carbon-intensity", type=_number, help="grid intensity in g CO2e/kWh")
    loc.add_argument("--pue", type=_number, default=1.0, help="data-centre PUE (default 1.0)")
    est.add_argument("--json", action="store_true", help="print the estimate as JSON")
    cal = est.add_argument_group("calibration from past runs (wattwise runs)")
    cal.add_argument("--no-calibrate", action="store_true", help="ignore the run registry")
    cal.add_argument("--registry", help="registry file (default: WATTWISE_REGISTRY, else the per-user one)")
    runs = sub.add_parser("runs", help="list the runs recorded in the run registry, newest first")
    runs.add_argument("--limit", type=_whole, default=20, help="how many (default 20)")
    runs.add_argument("--registry", help="registry file (default: WATTWISE_REGISTRY, else the per-user one)")
    runs.add_argument("--json", action="store_true", help="print the runs as JSON")
    rep = sub.add_parser("report", help="print a saved run's summary and draw its report.png again")
    rep.add_argument("path", metavar="RUN",
                     help="a report.json, a directory holding one (or its wattwise/), or a run id from "
                          "`wattwise runs` (a unique prefix of 8+ characters will do)")
    rep.add_argument("--png", help="where to draw the figure (default: report.png beside report.json); a "
                                   "directory (existing, or ending in /) gets report.png in it, created if need be")
    rep.add_argument("--no-png", action="store_true", help="print the summary only")
    rep.add_argument("--registry", help="registry file for run ids (default: WATTWISE_REGISTRY, else the per-user one)")
    cmp = sub.add_parser("compare", help="two saved runs side by side")
    cmp.add_argument("a", metavar="A", help="the first run: a report.json, a directory holding one, or a run id")
    cmp.add_argument("b", metavar="B", help="the second run")
    cmp.add_argument("--registry", help="registry file for run ids (default: WATTWISE_REGISTRY, else the per-user one)")
    return parser


def _estimate(args: argparse.Namespace) -> str:
    from .estimate import estimate

    result = estimate(
        params=args.params, tokens=args.tokens, samples=args.samples, flops_per_sample=args.flops_per_sample,
        epochs=args.epochs, mode=args.mode, precision=args.precision, hardware=args.hardware,
        power_w=args.power_w, peak_tflops=args.peak_tflops, devices=args.devices, cpu_cores=args.cpu_cores,
        utilization=args.utilization,
        utilization_range=tuple(args.utilization_range) if args.utilization_range else None,
        pue=args.pue, country_iso_code=args.country, region=args.region, cloud_provider=args.cloud_provider,
        cloud_region=args.cloud_region, carbon_intensity_g_per_kwh=args.carbon_intensity,
        calibrate=not args.no_calibrate, registry=args.registry,
    )
    if args.json:
        return json.dumps(result.to_dict(), indent=2)
    return result.summary()


def _runs(args: argparse.Namespace) -> str:
    from dataclasses import asdict

    from .registry import Registry, format_runs

    registry = Registry.open(args.registry)
    if registry is None:
        return "the run registry is off (WATTWISE_REGISTRY); nothing is recorded"
    records = registry.runs(limit=args.limit)
    if args.json:
        return json.dumps([asdict(r) for r in records], indent=2)
    return f"{registry.path}\n{format_runs(records)}"


def _report(args: argparse.Namespace) -> None:
    from .render import load_run, print_summary

    report, json_path = load_run(args.path, registry=args.registry or None)
    print_summary(report)
    if args.no_png:
        return
    png = _png_path(args.png, json_path)
    try:
        from .plot import write_png

        png.parent.mkdir(parents=True, exist_ok=True)
        write_png(report, png)
    except OSError as exc:
        raise ValueError(f"cannot write the figure {str(png)!r}: {exc.strerror or exc}") from None
    except Exception as exc:  # no matplotlib, a value the figure cannot take
        raise ValueError(f"cannot draw the figure of {str(json_path)!r} ({type(exc).__name__}: {exc})") from None
    print(f"figure: {png}")


def _png_path(given: str | None, json_path: Path) -> Path:
    """Where ``--png`` draws: ``report.png`` beside the report by default, ``report.png`` inside a
    directory (one that exists, or a path ending in a separator), else the file named (``.png``
    added when it has no suffix, as matplotlib would)."""
    if not given:
        return json_path.with_name("report.png")
    path = Path(given)
    if path.is_dir() or given.endswith(("/", os.sep)):
        return path / "report.png"
    return path if path.suffix else path.with_name(path.name + ".png")


def _compare(args: argparse.Namespace) -> None:
    from .render import compare_table, load_run, plain_table

    (a, a_path), (b, b_path) = (load_run(run, registry=args.registry or None) for run in (args.a, args.b))
    print(f"A: {a_path}\nB: {b_path}")
    print(plain_table(compare_table(a, b)))


_COMMANDS = {"estimate": lambda args: print(_estimate(args)), "runs": lambda args: print(_runs(args)),
             "report": _report, "compare": _compare}


def main(argv: list[str] | None = None) -> int:
    """Run the ``wattwise`` command; returns the exit status. Every error is one line on stderr
    naming the file or argument, with status 2 (argparse's for bad usage); never a traceback. A
    reader that stops early (``wattwise report ... | head``) ends the command quietly, status 0
    (the reader had what it wanted; ``set -o pipefail`` scripts go on)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        try:
            _COMMANDS[args.command](args)
        except BrokenPipeError:
            raise
        except (ValueError, OSError) as exc:
            parser.exit(2, f"wattwise {args.command}: error: {_one_line(exc)}\n")
    except BrokenPipeError:
        _silence_stdout()
        return 0
    return 0


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def _silence_stdout() -> None:
    """stdout's reader is gone: send what is left to /dev/null, so that the interpreter's last flush
    does not fail with a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture): nothing to do
        pass


if __name__ == "__main__":
    sys.exit(main())
