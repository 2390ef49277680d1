"""Energy, time and CO2e of a training (or inference) run, estimated before it runs.

Example::

    >>> from wattwise.estimate import estimate
    >>> e = estimate(params=124_000_000, tokens=1_000_000_000, hardware="a100-80gb", precision="bf16",
    ...              country_iso_code="FRA")
    >>> round(e.flops / 1e18, 3)              # 6 x 124e6 x 1e9
    0.744
    >>> round(e.duration_s)                   # 0.744e18 / (312e12 x 0.35)
    6813

The formula (see ``docs/methodology.md``, "Estimating before training")::

    FLOPs    = 6 x params x tokens x epochs          (training; 2 x ... for inference)
    time     = FLOPs / (devices x peak_FLOP/s(precision) x utilization)
    energy   = devices x power x time                (power = the board's TDP unless power_w= is given)
    CO2e     = energy x PUE x grid intensity         (wattwise.carbon.resolve_intensity)

The interval comes from the utilization alone: by default it spans ``utilization / 2`` (slow run,
high energy) to ``min(1, utilization x 1.5)`` (fast run, low energy). Everything else is a point
figure, and every assumption made is listed in ``Estimate.assumptions``.

This module imports no training framework: a model object is only asked for ``count_params()``
(Keras) or ``parameters()`` (PyTorch and anything shaped like it).
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .carbon import J_PER_KWH, resolve_intensity

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
MODES = ("train", "inference")

# Model FLOPs utilization (achieved FLOP/s over the dense datasheet peak at the chosen precision).
# 0.35 for GPUs: large-model training reports 0.2-0.55 (GPT-3 ~0.21 and PaLM 0.46 in the PaLM paper,
# Chowdhery et al. 2022, Table 3; Megatron-LM reports 0.3-0.55 on A100), and smaller single-GPU runs
# usually sit at the low end. 0.2 for CPUs: large fp32 GEMMs reach well over half of the FMA peak,
# but a whole training step (small ops, memory-bound layers, the Python loop) reaches much less.
DEFAULT_GPU_UTILIZATION = 0.35
DEFAULT_CPU_UTILIZATION = 0.20
# Default utilization range, as factors on the utilization: [u / 2, min(1, u x 1.5)].
UTILIZATION_LOW_FACTOR = 0.5
UTILIZATION_HIGH_FACTOR = 1.5

# Training costs 3 forward passes' FLOPs (forward + backward, which is about twice the forward);
# a forward pass costs 2 FLOPs per parameter per token (one multiply-add). Kaplan et al. 2020, sec. 2.1.
TRAIN_FLOPS_PER_PARAM_TOKEN = 6.0
INFERENCE_FLOPS_PER_PARAM_TOKEN = 2.0

# Generic CPU: per physical core.
# Power: 8 W per busy core = codecarbon's default of 4 W per hardware thread (what
# wattwise.sources.model uses when a CPU is not in its TDP table) x 2 threads per core.
CPU_W_PER_CORE = 8.0
# Peak: 80 GFLOP/s per core in fp32 = 2 FMA units x 8 fp32 lanes (AVX2, 256-bit) x 2 FLOPs per FMA
# x 2.5 GHz. bf16/fp16/tf32 are taken at the fp32 rate (no AMX / AVX-512 BF16 assumed).
CPU_PEAK_FLOPS_PER_CORE = 80e9


@dataclass(frozen=True)
class Hardware:
    """One row of the hardware table: board power and dense peak TFLOP/s per precision."""

    name: str
    tdp_w: float
    peak_tflops: dict[str, float]  # precision -> dense TFLOP/s (no structured sparsity)
    kind: str = "gpu"
    source: str = ""
    # words that all appear in a device's NVML name (lower case, split on non-alphanumerics) for a
    # registry run on that device to calibrate this row; e.g. "NVIDIA A100-SXM4-80GB" -> a100, 80gb
    match: tuple[str, ...] = ()

    def peak_tflops_at(self, precision: str | None) -> float | None:
        """Dense TFLOP/s at ``precision``: tf32 on a device without TF32 tensor cores runs at the fp32
        rate; None for a precision the device does not support (or none given)."""
        if precision in self.peak_tflops:
            return self.peak_tflops[precision]
        return self.peak_tflops.get("fp32") if precision == "tf32" else None


# Vendor datasheet figures: TDP (maximum board power) and *dense* peak Tensor/CUDA core TFLOP/s.
# Datasheets print tensor-core figures "with sparsity"; those are halved here. fp16/bf16 are with FP32
# accumulate, as mixed-precision training uses. A precision missing from a row is not supported by the
# hardware's tensor cores (tf32 then runs as fp32; bf16/fp16 missing is an error).
HARDWARE: dict[str, Hardware] = {
    # NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf):
    # SXM max TDP 400 W; FP32 19.5, TF32 156, BF16 312, FP16 312 TFLOPS (dense; 312/624/624 sparse).
    "a100-40gb": Hardware(
        "a100-40gb", 400.0, {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
        source="NVIDIA A100 datasheet (SXM, 40GB)", match=("a100", "40gb"),
    ),
    "a100-80gb": Hardware(
        "a100-80gb", 400.0, {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
        source="NVIDIA A100 datasheet (SXM, 80GB)", match=("a100", "80gb"),
    ),
    # NVIDIA H100 Tensor Core GPU datasheet: SXM max TDP up to 700 W; FP32 67, TF32 989*, BF16 1979*,
    # FP16 1979* TFLOPS, * = with sparsity -> dense 494.5, 989.5, 989.5.
    "h100-sxm": Hardware(
        "h100-sxm", 700.0, {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},
        source="NVIDIA H100 datasheet (SXM)", match=("h100", "hbm3"),
    ),
    # Same datasheet, H100 PCIe: FP32 51, TF32 756*, BF16 1513*, FP16 1513* -> dense 378, 756.5, 756.5.
    # Power: 350 W, checked 2026-11 against NVIDIA's H100 PCIe product brief (PB-11133-001_v02, Nov 2022:
    # "operates unconstrained up to its maximum thermal design power (TDP) level of 350 W"; mirrored at
    # manuals.plus/m/56b0c3ef7d0a1c470c0af8f05a0bd1f29a778007472ba941201fbbb185c9bccd).
    "h100-pcie": Hardware(
        "h100-pcie", 350.0, {"fp32": 51.0, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5},
        source="NVIDIA H100 datasheet (PCIe)", match=("h100", "pcie"),
    ),
    # NVIDIA L4 datasheet: max power 72 W; FP32 30.3, TF32 120*, BF16 242*, FP16 242* -> 60, 121, 121.
    "l4": Hardware(
        "l4", 72.0, {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
        source="NVIDIA L4 datasheet", match=("l4",),
    ),
    # NVIDIA T4 datasheet: 70 W; FP32 8.1, mixed precision (FP16/FP32) 65 TFLOPS. Turing: no TF32, no BF16.
    "t4": Hardware("t4", 70.0, {"fp32": 8.1, "fp16": 65.0}, source="NVIDIA T4 datasheet", match=("t4",)),
    # NVIDIA V100 datasheet, SXM2: 300 W; FP32 15.7, Tensor (FP16) 125 TFLOPS. Volta: no TF32, no BF16.
    "v100": Hardware("v100", 300.0, {"fp32": 15.7, "fp16": 125.0}, source="NVIDIA V100 datasheet (SXM2)",
                     match=("v100",)),
    # NVIDIA Ada Lovelace architecture whitepaper v2.1, Appendix A (GeForce RTX 4090): total graphics
    # power 450 W; FP32 82.6; TF32 tensor 82.6 (165.2 sparse); BF16 and FP16 tensor with FP32 accumulate
    # 165.2 (330.4 sparse; GeForce runs FP32 accumulate at half the FP16-accumulate rate of 330.3).
    # Checked 2026-11: waredb.com/processor/nvidia-geforce-rtx-4090 lists the same dense/sparse pairs
    # (FP16 and BF16 165.15/330.30, TF32 82.58/165.15), and 450 W is NVIDIA's total board power.
    "rtx-4090": Hardware(
        "rtx-4090", 450.0, {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2},
        source="NVIDIA Ada Lovelace architecture whitepaper v2.1 (RTX 4090)", match=("4090",),
    ),
    # NVIDIA publishes no A10G datasheet (it is AWS's variant of the A10, GA102). Power: 300 W, the limit
    # nvidia-smi reports on every AWS G5 size (AWS's EC2 GPU table, gist.github.com/shashankprasanna/
    # 10ebe6dc1ba1d8d93db17da4e2cc890e; checked 2026-11), not the A10's 150 W. Throughput: the NVIDIA A10
    # datasheet's figures (FP32 31.2, TF32 62.5, BF16/FP16 125 dense), as Lightning's table also uses;
    # Baseten (baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference) reports the A10G's tensor
    # throughput as LOWER than the A10's, with no vendor figure to cite: treat these peaks as an upper
    # bound (calibration from your own runs corrects the utilization), or pass peak_tflops=.
    "a10g": Hardware(
        "a10g", 300.0, {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0},
        source="A10 datasheet peaks (A10G has none: an upper bound); 300 W as nvidia-smi reports on AWS G5",
        match=("a10g",),
    ),
    # Generic CPU, per physical core (scaled by cpu_cores=): see CPU_W_PER_CORE and CPU_PEAK_FLOPS_PER_CORE.
    "cpu": Hardware(
        "cpu", CPU_W_PER_CORE,
        {p: CPU_PEAK_FLOPS_PER_CORE / 1e12 for p in PRECISIONS},
        kind="cpu",
        source="generic CPU: 8 W and 80 GFLOP/s (fp32, AVX2 FMA at 2.5 GHz) per core",
    ),
}


def hardware_names() -> list[str]:
    return list(HARDWARE)


@dataclass(frozen=True)
class Calibration:
    """Utilization and power fitted to past runs on one device (see ``fit_efficiency``)."""

    runs: int
    kind: str  # "gpu" or "cpu"
    utilization: float
    utilization_range: tuple[float, float] | None  # None with fewer than MIN_RUNS_FOR_RANGE runs
    power_w: float  # mean measured power per device (per GPU, or per logical CPU)
    run_utilizations: tuple[float, ...]
    runs_without_precision: int = 0  # their peak was taken at the precision asked for


MIN_RUNS_FOR_RANGE = 3
RANGE_CONFIDENCE = 0.9


def fit_efficiency(runs: list[Any], per_device_peak_flops: float | Callable[[Any], float]) -> Calibration:
    """Fit utilization and power to past training runs (``RunRecord``s with params and work).

    Example::

        >>> fit = fit_efficiency(registry.runs(complete_only=True), per_device_peak_flops=312e12)

    For run i: FLOPs_i = 6 x params_i x work_i (work = tokens, else samples: a sample counts as one
    token), and its capacity C_i = devices_i x peak_i x train_duration_s_i, where peak_i is the
    per-device peak at the run's own precision when ``per_device_peak_flops`` is a function of the
    run (so an fp32 run and a bf16 run calibrate the same utilization). Then::

        utilization = sum(FLOPs_i) / sum(C_i)                       (runs weighted by their capacity)
        power_w     = sum(device_energy_j_i) / sum(devices_i x duration_s_i)

    With three runs or more, the utilization range is a 90% prediction interval for one more run,
    in log space: exp(mean(log u_i) +- t(n-1) x sd(log u_i) x sqrt(1 + 1/n)), widened to hold the fit.
    """
    usable = [r for r in runs if r.params and (r.tokens or r.samples) and (r.train_duration_s or 0) > 0]
    if not usable:
        raise ValueError("runs: none has params, tokens or samples and a training duration")
    flops = [TRAIN_FLOPS_PER_PARAM_TOKEN * r.params * (r.tokens or r.samples) for r in usable]
    peak_for = per_device_peak_flops if callable(per_device_peak_flops) else lambda _run: per_device_peak_flops
    capacity = [r.devices * peak_for(r) * r.train_duration_s for r in usable]
    utilization = sum(flops) / sum(capacity)
    power_w = sum(r.device_energy_j for r in usable) / sum(r.devices * r.duration_s for r in usable)
    each = tuple(f / c for f, c in zip(flops, capacity, strict=True))
    u_range = None
    n = len(each)
    if n >= MIN_RUNS_FOR_RANGE:
        import statistics

        from .forecast import _t_quantile

        logs = [math.log(u) for u in each]
        spread = _t_quantile(RANGE_CONFIDENCE, n - 1) * statistics.stdev(logs) * math.sqrt(1 + 1 / n)
        centre = statistics.fmean(logs)
        u_range = (min(utilization, math.exp(centre - spread)), max(utilization, math.exp(centre + spread)))
    kind = usable[0].hardware_kind
    unknown = sum(1 for r in usable if not getattr(r, "precision", None))
    return Calibration(n, kind, utilization, u_range, power_w, each, unknown)


CALIBRATION_SCALE_FACTOR = 30.0  # a past run's model within this factor of the estimate's parameters
CALIBRATION_MIN_TRAIN_S = 20.0  # shorter runs measure start-up and overheads more than the model's work


def calibration_exclusion(run: Any, params: float | None) -> str | None:
    """Why a complete run on the right hardware is not used to calibrate an estimate of a ``params``
    model, or None when it is: runs far from the estimate's scale (a tiny model's utilization says
    little about a large one's) or too short (start-up dominates) would wreck the fit."""
    if not run.params or not (run.tokens or run.samples) or (run.train_duration_s or 0) <= 0:
        return "without params and tokens/samples"
    if params and not 1 / CALIBRATION_SCALE_FACTOR <= run.params / params <= CALIBRATION_SCALE_FACTOR:
        return f"model over {CALIBRATION_SCALE_FACTOR:g}x from {params:.3g} params"
    if run.train_duration_s < CALIBRATION_MIN_TRAIN_S:
        return f"trained under {CALIBRATION_MIN_TRAIN_S:g} s"
    return None


def calibrate_from_registry(
    hw: Hardware, per_device_peak_flops: float, registry: bool | str | os.PathLike | None = None,
    params: float | None = None,
) -> tuple[Calibration | None, str]:
    """The fit to the registry's complete runs on ``hw`` at the scale of a ``params`` model (or None),
    and a line saying which runs were used and why others were left out. Interrupted runs and runs
    stopped by their budget are never used."""
    from .registry import Registry

    reg = Registry.open(registry)
    if reg is None:
        return None, "no: the run registry is off"
    try:
        every = reg.runs(hardware_kind=hw.kind)
        runs = [r for r in every if not r.partial and not r.stopped_by_budget]
    except Exception as exc:  # a locked or damaged file: estimate without it, and say so
        return None, f"no: the run registry could not be read ({type(exc).__name__}: {exc})"
    if hw.kind == "cpu":
        from .sources.model import cpu_model_name

        here = cpu_model_name()
        matching = [r for r in runs if r.cpu_model == here]
        where = f"this machine's CPU ({here})"
    else:
        matching = [r for r in runs if _device_matches(hw, r.hardware)]
        where = hw.name
    reasons: dict[str, int] = {}
    unfinished = len(every) - len(runs)
    if hw.kind == "cpu":
        unfinished = sum(1 for r in every if r.cpu_model == here) - len(matching)
    else:
        unfinished = sum(1 for r in every if _device_matches(hw, r.hardware)) - len(matching)
    if unfinished:
        reasons["interrupted or stopped by a budget"] = unfinished
    usable = []
    for run in matching:
        why = calibration_exclusion(run, params)
        if why is None:
            usable.append(run)
        else:
            reasons[why] = reasons.get(why, 0) + 1
    left_out = "; left out: " + ", ".join(f"{n} {why}" for why, n in reasons.items()) if reasons else ""
    if not usable:
        found = f"no usable run on {where}" if matching or unfinished else f"no complete run on {where}"
        return None, f"no: {found} in {reg.path}{left_out}"

    def peak_for(run: Any) -> float:  # the device's peak at the precision the run trained in
        tflops = hw.peak_tflops_at(getattr(run, "precision", None))
        return tflops * 1e12 if tflops else per_device_peak_flops

    fit = fit_efficiency(usable, peak_for)
    return fit, (f"yes, from {fit.runs} past run{'s' * (fit.runs > 1)} on {where} in {reg.path}: "
                 f"utilization {fit.utilization:.3g}, {fit.power_w:.4g} W per {'GPU' if fit.kind == 'gpu' else 'CPU thread'}"
                 f"{left_out}")


def _device_matches(hw: Hardware, device_name: str) -> bool:
    words = set(re.split(r"[^a-z0-9]+", device_name.lower()))
    return bool(hw.match) and all(word in words for word in hw.match)


@dataclass
class Estimate:
    """A pre-run estimate: central figures, an interval from the utilization range, and its assumptions."""

    energy_j: float
    energy_low_j: float
    energy_high_j: float
    duration_s: float
    duration_low_s: float
    duration_high_s: float
    emissions_kg: float
    emissions_low_kg: float
    emissions_high_kg: float
    flops: float
    hardware: str
    precision: str
    mode: str
    params: int | None
    utilization: float
    utilization_range: tuple[float, float]
    power_w: float
    peak_flops: float
    devices: int
    carbon_intensity_g_per_kwh: float
    pue: float
    location: str
    formula: str
    assumptions: list[str] = field(default_factory=list)
    calibration_runs: int = 0  # past runs on this hardware that utilization and power were fitted to
    calibration: str = "none"  # how (or why not) the estimate was calibrated from the run registry

    @property
    def energy_kwh(self) -> float:
        return self.energy_j / J_PER_KWH

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A short readable block: energy with interval, time, CO2e, the formula and the assumptions."""
        from .records import format_energy, format_mass

        lines = [
            f"wattwise estimate: {self.mode} on {self.devices} x {self.hardware} ({self.precision})",
            f"  compute : {self.flops:.3g} FLOPs",
            f"  energy  : {format_energy(self.energy_j)} "
            f"(range {format_energy(self.energy_low_j)} - {format_energy(self.energy_high_j)})",
            f"  time    : {_format_duration(self.duration_s)} "
            f"(range {_format_duration(self.duration_low_s)} - {_format_duration(self.duration_high_s)})",
            f"  CO2e    : {format_mass(self.emissions_kg)} "
            f"(range {format_mass(self.emissions_low_kg)} - {format_mass(self.emissions_high_kg)}); "
            f"{self.location}, {self.carbon_intensity_g_per_kwh:.4g} g/kWh, PUE {self.pue:g}",
            f"  formula : {self.formula}",
            f"  calibrated: {self.calibration}",
            "  assumptions:",
        ]
        lines += [f"    - {a}" for a in self.assumptions]
        return "\n".join(lines)


def _format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    if seconds < 172800:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} days"


def count_params(model: Any) -> int:
    """Parameters of a Keras model (``count_params()``) or a PyTorch-like one (``parameters()``)."""
    counter = getattr(model, "count_params", None)
    if callable(counter):
        try:
            return int(counter())
        except ValueError as exc:  # Keras: a model that is not built yet
            raise ValueError(f"model: cannot count its parameters ({exc}); build it first") from exc
    params = getattr(model, "parameters", None)
    if callable(params):
        return int(sum(p.numel() for p in params()))
    raise ValueError(
        f"model: {type(model).__name__} has neither count_params() (Keras) nor parameters() (PyTorch); "
        "pass params= instead"
    )


def _positive(name: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    if integer and value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return float(value)


def _normalize_hardware(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def lookup_hardware(name: str) -> Hardware:
    """The table row for ``name`` (case, spaces and underscores ignored); ``ValueError`` if unknown."""
    if not isinstance(name, str) or _normalize_hardware(name) not in HARDWARE:
        raise ValueError(
            f"hardware {name!r} is unknown; accepted: {', '.join(HARDWARE)} "
            "(or leave hardware out and pass power_w= and peak_tflops=)"
        )
    return HARDWARE[_normalize_hardware(name)]


def estimate(
    *,
    params: int | None = None,
    model: Any = None,
    tokens: float | None = None,
    samples: float | None = None,
    flops_per_sample: float | None = None,
    epochs: float = 1,
    mode: str = "train",
    precision: str = "bf16",
    hardware: str | None = None,
    power_w: float | None = None,
    peak_tflops: float | None = None,
    devices: int = 1,
    cpu_cores: int | None = None,
    utilization: float | None = None,
    utilization_range: tuple[float, float] | None = None,
    pue: float = 1.0,
    country_iso_code: str | None = None,
    region: str | None = None,
    cloud_provider: str | None = None,
    cloud_region: str | None = None,
    carbon_intensity_g_per_kwh: float | None = None,
    calibrate: bool = True,
    registry: bool | str | os.PathLike | None = None,
) -> Estimate:
    """Estimate a run's energy, duration and CO2e from its size and hardware, before it runs.

    Give the work as ``params`` (or ``model``) with ``tokens`` (tokens per epoch; FLOPs = 6 x params x
    tokens for training, 2 x for inference), or as ``samples`` (per epoch) with ``flops_per_sample``
    (forward-pass FLOPs of one sample; training counts 3 x that). Give the hardware as a ``hardware``
    name from :data:`HARDWARE`, or as ``power_w`` + ``peak_tflops`` (dense TFLOP/s at ``precision``);
    ``power_w`` or ``peak_tflops`` next to a name overrides the table. Bad arguments raise
    ``ValueError`` naming the argument.

    With ``calibrate`` (the default), a training estimate from ``params`` and ``tokens`` on a table
    device, with no ``utilization=`` given, takes its utilization (and, unless ``power_w=`` is given,
    its power) from the complete runs on the same device in the run registry (``registry``: a path,
    False, or None for ``WATTWISE_REGISTRY`` / the per-user file); ``calibration_runs`` says how many.
    """
    assumptions: list[str] = []

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    epochs = _positive("epochs", epochs)
    devices = int(_positive("devices", devices, integer=True))

    # --- the work, in FLOPs --------------------------------------------------------------------
    if params is not None and model is not None:
        raise ValueError("params and model: give one, not both")
    if model is not None:
        params = count_params(model)
        assumptions.append(f"params = {params:,} counted from the model (all parameters, trainable or not)")
    if params is not None:
        params = int(_positive("params", params, integer=True))
    if tokens is not None and samples is not None:
        raise ValueError("tokens and samples: give one, not both")
    per_pass = TRAIN_FLOPS_PER_PARAM_TOKEN if mode == "train" else INFERENCE_FLOPS_PER_PARAM_TOKEN
    if tokens is not None:
        tokens = _positive("tokens", tokens)
        if flops_per_sample is not None:
            raise ValueError("flops_per_sample goes with samples=, not with tokens=")
        if params is None:
            raise ValueError("params (or model) is needed with tokens=")
        flops = per_pass * params * tokens * epochs
        formula = f"FLOPs = {per_pass:g} x params x tokens x epochs = {per_pass:g} x {params:.4g} x {tokens:.4g} x {epochs:g}"
        assumptions.append(
            f"{per_pass:g} FLOPs per parameter per token ({'forward + backward' if mode == 'train' else 'forward only'}; "
            "Kaplan et al. 2020); attention's extra FLOPs, activation recomputation and padding are not counted"
        )
    elif samples is not None:
        samples = _positive("samples", samples)
        if flops_per_sample is None:
            raise ValueError("flops_per_sample (forward-pass FLOPs of one sample) is needed with samples=")
        flops_per_sample = _positive("flops_per_sample", flops_per_sample)
        factor = per_pass / INFERENCE_FLOPS_PER_PARAM_TOKEN  # 3 for training, 1 for inference
        flops = factor * flops_per_sample * samples * epochs
        formula = (
            f"FLOPs = {factor:g} x flops_per_sample x samples x epochs = "
            f"{factor:g} x {flops_per_sample:.4g} x {samples:.4g} x {epochs:g}"
        )
        if mode == "train":
            assumptions.append("training = 3 x the forward FLOPs (the backward pass costs about twice the forward)")
    else:
        raise ValueError("tokens (with params or model) or samples (with flops_per_sample) is needed")

    # --- the hardware ----------------------------------------------------------------------------
    power_given = power_w is not None
    if power_w is not None:
        power_w = _positive("power_w", power_w)
    if peak_tflops is not None:
        peak_tflops = _positive("peak_tflops", peak_tflops)
    if hardware is not None:
        hw = lookup_hardware(hardware)
        if hw.kind == "cpu":
            if cpu_cores is None:
                cpu_cores = os.cpu_count() or 1
                assumptions.append(f"cpu_cores = {cpu_cores} (os.cpu_count() of this machine; pass cpu_cores=)")
            cpu_cores = int(_positive("cpu_cores", cpu_cores, integer=True))
            scale = float(cpu_cores)
        else:
            scale = 1.0
        board_power = hw.tdp_w * scale
        table_tflops = hw.peak_tflops_at(precision)
        if table_tflops is None:
            raise ValueError(
                f"precision {precision!r} is not supported by {hw.name}; accepted: "
                f"{', '.join(sorted(set(hw.peak_tflops) | {'tf32'}, key=PRECISIONS.index))}"
            )
        table_peak = table_tflops * scale
        if precision not in hw.peak_tflops:
            assumptions.append(f"{hw.name} has no TF32 tensor cores: tf32 runs at the fp32 rate")
        name = hw.name if hw.kind != "cpu" else f"cpu ({cpu_cores} cores)"
        if hw.kind == "cpu":
            assumptions.append(
                f"generic CPU: {CPU_W_PER_CORE:g} W and {CPU_PEAK_FLOPS_PER_CORE / 1e9:g} GFLOP/s per core "
                "(AVX2 FMA at 2.5 GHz; bf16/fp16 at the fp32 rate)"
            )
        else:
            assumptions.append(f"{hw.name}: {hw.tdp_w:g} W TDP, {table_peak:g} TFLOP/s dense {precision} ({hw.source})")
        peak = (peak_tflops if peak_tflops is not None else table_peak) * 1e12
        if peak_tflops is not None:
            assumptions.append(f"peak {peak_tflops:g} TFLOP/s given (peak_tflops=) instead of the table's")
        if power_w is None:
            power_w = board_power
            assumptions.append("power = TDP all the time: the board's maximum, so energy leans high")
        else:
            assumptions.append(f"power {power_w:g} W given (power_w=) instead of the table's TDP")
        default_util = DEFAULT_CPU_UTILIZATION if hw.kind == "cpu" else DEFAULT_GPU_UTILIZATION
    else:
        if cpu_cores is not None:
            raise ValueError("cpu_cores goes with hardware='cpu'")
        if power_w is None or peak_tflops is None:
            raise ValueError(
                f"hardware is needed (one of {', '.join(HARDWARE)}), or both power_w and peak_tflops "
                "for hardware not in the table"
            )
        name = f"custom ({power_w:g} W, {peak_tflops:g} TFLOP/s)"
        peak = peak_tflops * 1e12
        assumptions.append(f"hardware given as {power_w:g} W and {peak_tflops:g} TFLOP/s dense {precision}")
        default_util = DEFAULT_GPU_UTILIZATION

    # --- calibration from the run registry ------------------------------------------------------
    fit, calibration = None, "no (calibrate=False)"
    if calibrate:
        if hardware is None:
            calibration = "no: hardware not in the table"
        elif mode != "train" or tokens is None:
            calibration = "no: calibration covers training estimates from params and tokens"
        elif utilization is not None:
            calibration = "no: utilization given"
        else:
            per_device_peak = peak / scale  # per GPU, or per logical CPU for the cpu row
            fit, calibration = calibrate_from_registry(lookup_hardware(hardware), per_device_peak, registry,
                                                       params=params)
    if fit is not None:
        utilization = fit.utilization
        if not power_given:  # the measured mean power replaces the TDP
            assumptions.remove("power = TDP all the time: the board's maximum, so energy leans high")
            power_w = fit.power_w * scale
            assumptions.append(f"power {power_w:.4g} W: the mean {fit.kind} power measured in those runs")
        if fit.runs_without_precision:
            assumptions.append(
                f"{fit.runs_without_precision} of those runs did not record their precision: taken as {precision}"
            )

    # --- utilization and its range ----------------------------------------------------------------
    if utilization is None:
        utilization = default_util
        util_origin = f"default for {'CPUs' if default_util == DEFAULT_CPU_UTILIZATION else 'GPUs'}"
    elif fit is not None:
        util_origin = f"fitted to {fit.runs} past run{'s' * (fit.runs > 1)} on this hardware"
    else:
        util_origin = "given"
    utilization = _positive("utilization", utilization)
    if utilization > 1 and fit is None:
        raise ValueError(f"utilization must be in (0, 1], got {utilization!r}")
    if utilization_range is None and fit is not None and fit.utilization_range is not None:
        u_low, u_high = fit.utilization_range
        range_origin = f"90% prediction range of the {fit.runs} runs' utilizations"
    elif utilization_range is None:
        u_low = utilization * UTILIZATION_LOW_FACTOR
        u_high = utilization * UTILIZATION_HIGH_FACTOR
        if fit is None:  # a fitted utilization is an effective one (it absorbs the FLOPs model's error)
            u_high = min(1.0, u_high)
        range_origin = f"default: utilization x {UTILIZATION_LOW_FACTOR:g} to x {UTILIZATION_HIGH_FACTOR:g}"
    else:
        try:
            u_low, u_high = (float(u) for u in utilization_range)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"utilization_range must be a (low, high) pair, got {utilization_range!r}") from exc
        if not (0 < u_low <= utilization <= u_high <= 1):
            raise ValueError(
                f"utilization_range must satisfy 0 < low <= utilization ({utilization:g}) <= high <= 1, "
                f"got {utilization_range!r}"
            )
        range_origin = "given"
    assumptions.append(
        f"model FLOPs utilization {utilization:g} ({util_origin}); the range {u_low:.3g} - {u_high:.3g} "
        f"({range_origin}) is the only source of the interval"
    )

    # --- time, energy, carbon -------------------------------------------------------------------------
    pue = _positive("pue", pue)
    if pue < 1:
        raise ValueError(f"pue must be >= 1, got {pue!r}")
    if carbon_intensity_g_per_kwh is not None:
        _positive("carbon_intensity_g_per_kwh", carbon_intensity_g_per_kwh, allow_zero=True)
    grid = resolve_intensity(
        country_iso_code=country_iso_code, region=region, cloud_provider=cloud_provider,
        cloud_region=cloud_region, carbon_intensity_g_per_kwh=carbon_intensity_g_per_kwh, pue=pue,
    )
    if grid.is_default:
        assumptions.append(f"no location given: world average {grid.g_per_kwh:g} g CO2e/kWh")

    def seconds(u: float) -> float:
        return flops / (devices * peak * u)

    duration, duration_low, duration_high = seconds(utilization), seconds(u_high), seconds(u_low)
    total_power = devices * power_w
    energy, energy_low, energy_high = (total_power * t for t in (duration, duration_low, duration_high))
    if devices > 1:
        assumptions.append(f"{devices} devices with perfect scaling (no communication overhead)")
    if hardware is not None and lookup_hardware(hardware).kind == "cpu":
        assumptions.append("CPU energy only: RAM, network and idle time are not counted")
    else:
        assumptions.append("accelerator energy only: host CPU, RAM, network and idle time are not counted")
    formula += (
        f"; time = FLOPs / ({devices} x {peak / 1e12:g} TFLOP/s x {utilization:g}); "
        f"energy = {devices} x {power_w:g} W x time; CO2e = energy x PUE {pue:g} x {grid.g_per_kwh:.4g} g/kWh"
    )

    return Estimate(
        energy_j=energy, energy_low_j=energy_low, energy_high_j=energy_high,
        duration_s=duration, duration_low_s=duration_low, duration_high_s=duration_high,
        emissions_kg=grid.kg_for_j(energy), emissions_low_kg=grid.kg_for_j(energy_low),
        emissions_high_kg=grid.kg_for_j(energy_high),
        flops=flops, hardware=name, precision=precision, mode=mode, params=params,
        utilization=utilization, utilization_range=(u_low, u_high), power_w=power_w, peak_flops=peak,
        devices=devices, carbon_intensity_g_per_kwh=grid.g_per_kwh, pue=pue, location=grid.location,
        formula=formula, assumptions=assumptions, calibration_runs=fit.runs if fit is not None else 0,
        calibration=calibration,
    )
