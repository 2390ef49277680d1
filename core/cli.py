"""The ``wattwise`` command.

Example::

    wattwise estimate --params 124e6 --tokens 1e9 --epochs 1 --hardware a100-80gb --precision bf16 --country FRA
    python -m wattwise.cli estimate --params 124e6 --tokens 1e9 --hardware t4 --precision fp16 --json

Sub-commands: ``estimate`` (a run's energy, time and CO2e before it runs; see ``wattwise.estimate``).
Bad arguments print one error line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys


def _count(text: str) -> float:
    """A count written as ``124e6``, ``1_000_000`` or ``1000000``."""
    try:
        return float(text.replace("_", ""))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc


def _whole(text: str) -> int:
    value = _count(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    from .estimate import HARDWARE, MODES, PRECISIONS

    parser = argparse.ArgumentParser(prog="wattwise", description="Energy and carbon of ML training.")
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
    hw.add_argument("--power-w", type=float, help="board power in W (unknown hardware, or to override the TDP)")
    hw.add_argument("--peak-tflops", type=float, help="dense peak TFLOP/s at --precision (unknown hardware)")
    hw.add_argument("--utilization", type=float, help="model FLOPs utilization (default 0.35 GPU, 0.2 CPU)")
    hw.add_argument(
        "--utilization-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
        help="utilization range for the interval (default utilization x 0.5 to x 1.5)",
    )
    loc = est.add_argument_group("location (for CO2e)")
    loc.add_argument("--country", help="ISO 3166-1 alpha-3 code, e.g. FRA")
    loc.add_argument("--region", help="region within --country, e.g. california")
    loc.add_argument("--cloud-provider", help="e.g. gcp (codecarbon's impact.csv)")
    loc.add_argument("--cloud-region", help="e.g. europe-west1")
    loc.add_argument("--carbon-intensity", type=float, help="grid intensity in g CO2e/kWh")
    loc.add_argument("--pue", type=float, default=1.0, help="data-centre PUE (default 1.0)")
    est.add_argument("--json", action="store_true", help="print the estimate as JSON")
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
    )
    if args.json:
        return json.dumps(result.to_dict(), indent=2)
    return result.summary()


def main(argv: list[str] | None = None) -> int:
    """Run the ``wattwise`` command; returns the exit status (argparse exits with 2 on bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "estimate":
        try:
            print(_estimate(args))
        except ValueError as exc:
            parser.exit(2, f"wattwise estimate: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
