"""End-of-training recommendations: what to change next time, and what it would save.

Example::

    >>> from wattwise.advisor import Evidence, TrainingSetup, GpuUsage, advise
    >>> from wattwise.carbon import resolve_intensity
    >>> from wattwise.records import PhaseEnergy
    >>> evidence = Evidence(
    ...     energy_j=3.6e6, duration_s=3600.0, grid=resolve_intensity(country_iso_code="DEU"),
    ...     phases={"train": PhaseEnergy("train", energy_j=3.6e6, duration_s=3600.0, steps=1000)},
    ...     components={}, setup=TrainingSetup(framework="transformers", precision="fp32"),
    ...     gpus=[GpuUsage("gpu:0", "NVIDIA A100", samples=60, utilization_pct=90.0,
    ...                    memory_used_bytes=20e9, memory_total_bytes=80e9, compute_capability=(8, 0))])
    >>> [r.rule for r in advise(evidence)]
    ['lower_carbon_region', 'mixed_precision']

Every rule reads only ``Evidence`` (what the run measured and how it was set up) and fires only when
the evidence it needs is there: a rule whose evidence is missing (no GPU sampled, precision
unknown, no evaluation metric) stays silent. Each recommendation says what to change in each
framework, the evidence, the saving (J, kg CO2e, % of the run) with how it was estimated and its
source, and a confidence. Savings of different rules overlap: they do not add up.
See ``docs/recommendations.md`` for every rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .carbon import GridIntensity, lowest_intensity_cloud_region
from .records import ComponentEnergy, PhaseEnergy, Recommendation, format_energy

CONFIDENCES = ("high", "medium", "low")

# Thresholds and literature figures each rule uses (docs/recommendations.md gives the sources).
MIXED_PRECISION_SPEEDUP = 1.5  # conservative end of NVIDIA's "up to 3x" for AMP on tensor cores
UNDERUSED_UTILIZATION_PCT = 60.0  # mean NVML utilisation below which the GPU waits on something
BATCH_MEMORY_HEADROOM = 0.9  # a larger batch may use up to this fraction of the GPU's memory
MAX_BATCH_FACTOR = 4
LOADING_IDLE_SHARE = 0.5  # share of the GPU's idle time attributed to data loading (midpoint)
EVAL_SHARE = 0.15  # evaluation above this share of the run's energy
EARLY_STOPPING_PATIENCE = 2  # evaluations without improvement before stopping
POWER_CAP_FRACTION = 0.6  # McDonald et al. 2022: 150 W of a V100's 250 W
POWER_CAP_GPU_SAVING = 0.137  # ... 13.7% less GPU energy on average
POWER_CAP_TIME_INCREASE = 0.068  # ... for 6.8% more training time
REGION_FACTOR = 0.5  # suggest a region at most half as carbon-intensive as this one

SOURCES = {
    "mixed_precision": "NVIDIA, Automatic Mixed Precision for Deep Learning (up to 3x on Tensor Cores), "
    "https://developer.nvidia.com/automatic-mixed-precision; Micikevicius et al. 2018, arXiv:1710.03740",
    "batch_size": "Zeus (You, Chung, Chowdhury, NSDI'23, arXiv:2208.06102): batch size and power limit "
    "together improve training energy efficiency by 15.3-75.8%; Mavromatis et al. 2024, arXiv:2406.14328",
    "data_loading": "PyTorch DataLoader docs (num_workers, pin_memory), "
    "https://pytorch.org/docs/stable/data.html#multi-process-data-loading",
    "evaluation_share": "this run's measured evaluation energy (no external figure)",
    "early_stopping": "this run's measured energy and evaluation metric (no external figure)",
    "power_limit": "McDonald et al. 2022, Great Power, Great Responsibility, arXiv:2205.09646: a 150 W cap "
    "(of 250 W) on V100s gave 13.7% less energy for 6.8% more time; Zeus (NSDI'23) tunes the limit per job",
    "lower_carbon_region": "codecarbon data/cloud/impact.csv and global_energy_mix.json (the tables used "
    "for this run's carbon)",
    "cpu_threads": "PyTorch CPU performance tuning guide (use all physical cores), "
    "https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html",
    "probed_configuration": "this model's probe on this hardware (wattwise.probe; the file is named in the "
    "evidence); short profiling predicts a run's energy: Mavromatis et al. 2024, arXiv:2406.14328",
}


@dataclass
class TrainingSetup:
    """How the run was set up, as the integration saw it at train start (None: not known)."""

    framework: str | None = None
    device: str | None = None  # "cuda", "cpu", "mps", ...
    precision: str | None = None  # "fp32", "fp16", "bf16"
    batch_size: int | None = None  # per device and micro-batch
    grad_accumulation_steps: int | None = None
    num_workers: int | None = None
    pin_memory: bool | None = None
    torch_threads: int | None = None
    physical_cores: int | None = None
    eval_every_steps: int | None = None

    def probe_setup(self) -> dict[str, Any] | None:
        """Batch size and precision, what a probe's candidates are compared on; None when neither is known."""
        mine = {"batch_size": self.batch_size, "precision": self.precision}
        return mine if any(v is not None for v in mine.values()) else None


@dataclass
class GpuUsage:
    """One GPU over the training windows: NVML read at window boundaries, never per step."""

    name: str  # the component, "gpu:0"
    model: str
    samples: int
    utilization_pct: float  # mean share of time a kernel was running
    memory_used_bytes: float  # peak
    memory_total_bytes: float
    power_limit_w: float | None = None
    min_power_limit_w: float | None = None
    compute_capability: tuple[int, int] | None = None


@dataclass
class MetricPoint:
    """An evaluation: its metric value and the energy spent since the run began when it ended."""

    step: int
    value: float
    energy_j: float


@dataclass
class ProbeEvidence:
    """The latest ``wattwise.probe`` of the run's model (same parameter count, framework and hardware),
    as kept beside the run registry: its file and its candidates (``probe.json``'s, as dicts)."""

    path: str
    created_at: str
    steps: int
    candidates: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Evidence:
    """Everything the rules may read; the run builds it at the end (assemble.py), tests build it by hand."""

    energy_j: float
    duration_s: float
    phases: dict[str, PhaseEnergy]
    components: dict[str, ComponentEnergy]
    grid: GridIntensity
    setup: TrainingSetup = field(default_factory=TrainingSetup)
    gpus: list[GpuUsage] = field(default_factory=list)
    metric_name: str | None = None
    greater_is_better: bool = False
    metric_history: list[MetricPoint] = field(default_factory=list)
    probe: ProbeEvidence | None = None  # the latest probe of this model on this hardware, if any

    def phase_j(self, name: str) -> float:
        phase = self.phases.get(name)
        return phase.energy_j if phase is not None else 0.0

    @property
    def train_j(self) -> float:
        return self.phase_j("train")

    def kind_j(self, *kinds: str) -> float:
        return sum(c.energy_j for c in self.components.values() if c.kind in kinds)

    def train_share_of(self, *kinds: str) -> float:
        """Training energy of these component kinds: their total times training's share of the run."""
        if self.energy_j <= 0:
            return 0.0
        return self.kind_j(*kinds) * self.train_j / self.energy_j

    @property
    def gpu_utilization_pct(self) -> float | None:
        """Mean NVML utilisation over the GPUs' samples; None when no GPU was sampled."""
        samples = sum(g.samples for g in self.gpus)
        if not samples:
            return None
        return sum(g.utilization_pct * g.samples for g in self.gpus) / samples

    @property
    def on_gpu(self) -> bool:
        if self.setup.device is not None:
            return self.setup.device.startswith("cuda")
        return bool(self.gpus) and (self.gpu_utilization_pct or 0.0) > 0.0


def advise(evidence: Evidence) -> list[Recommendation]:
    """Every rule that fires on ``evidence``, ranked by kg CO2e saved (then joules), largest first."""
    found = [r for rule in RULES if (r := rule(evidence)) is not None]
    return sorted(found, key=lambda r: (r.saving_kg, r.saving_j), reverse=True)


def _energy_recommendation(ev: Evidence, saving_j: float, **fields: Any) -> Recommendation | None:
    """A recommendation whose saving is energy (carbon follows at this run's intensity); None if no saving."""
    if saving_j <= 0 or ev.energy_j <= 0:
        return None
    return Recommendation(
        saving_j=saving_j, saving_kg=ev.grid.kg_for_j(saving_j), saving_pct=100.0 * saving_j / ev.energy_j,
        source=SOURCES[fields["rule"]], **fields,
    )


def _kj(joules: float) -> str:
    return format_energy(joules)


# ---- the rules -----------------------------------------------------------------------------------


def mixed_precision(ev: Evidence) -> Recommendation | None:
    """fp32 on a GPU with tensor cores (compute capability 7.0+): bf16 (8.0+) or fp16 mixed precision."""
    util = ev.gpu_utilization_pct
    caps = [g.compute_capability for g in ev.gpus if g.compute_capability is not None]
    if ev.setup.precision != "fp32" or not ev.on_gpu or util is None or not caps or min(caps) < (7, 0):
        return None
    bf16 = min(caps) >= (8, 0)
    busy = util / 100.0
    saving_j = ev.train_j * busy * (1.0 - 1.0 / MIXED_PRECISION_SPEEDUP)
    return _energy_recommendation(
        ev, saving_j, rule="mixed_precision",
        title=f"Train in {'bf16' if bf16 else 'fp16'} mixed precision",
        change={
            "transformers": f"TrainingArguments({'bf16' if bf16 else 'fp16'}=True)",
            "lightning": f"Trainer(precision=\"{'bf16-mixed' if bf16 else '16-mixed'}\")",
            "keras": f"keras.mixed_precision.set_global_policy(\"{'mixed_bfloat16' if bf16 else 'mixed_float16'}\")",
        },
        evidence=f"trained in fp32 on {ev.gpus[0].model} (compute capability {min(caps)[0]}.{min(caps)[1]}, "
        f"tensor cores), GPU busy {util:.0f}% of the time",
        method=f"training energy {_kj(ev.train_j)} x busy share {busy:.2f} x (1 - 1/{MIXED_PRECISION_SPEEDUP:g}): "
        f"the busy time runs {MIXED_PRECISION_SPEEDUP:g}x faster at the same power",
        confidence="medium",
    )


def batch_size(ev: Evidence) -> Recommendation | None:
    """An under-used GPU with memory to spare: a larger micro-batch (less gradient accumulation)."""
    util = ev.gpu_utilization_pct
    if not ev.on_gpu or util is None or util >= UNDERUSED_UTILIZATION_PCT:
        return None
    used = max(g.memory_used_bytes / g.memory_total_bytes for g in ev.gpus if g.memory_total_bytes > 0)
    if used <= 0:
        return None
    factor = min(MAX_BATCH_FACTOR, 2 ** max(0, int(math.log2(BATCH_MEMORY_HEADROOM / used))))
    if factor < 2:
        return None
    idle = 1.0 - util / 100.0
    saving_j = ev.train_j * idle * (1.0 - 1.0 / factor)
    setup = ev.setup
    batch = f"{setup.batch_size * factor}" if setup.batch_size else f"{factor}x the current batch size"
    accumulation = setup.grad_accumulation_steps or 1
    if accumulation >= factor:
        fewer = accumulation // factor
        change = {
            "transformers": f"TrainingArguments(per_device_train_batch_size={batch}, gradient_accumulation_steps={fewer})",
            "lightning": f"DataLoader(batch_size={batch}) and Trainer(accumulate_grad_batches={fewer})",
            "keras": f"model.fit(batch_size={batch})",
        }
        note, confidence = "the same effective batch (accumulation lowered), so the same optimisation", "medium"
    else:
        change = {
            "transformers": f"TrainingArguments(per_device_train_batch_size={batch})",
            "lightning": f"DataLoader(batch_size={batch})",
            "keras": f"model.fit(batch_size={batch})",
        }
        note, confidence = "a larger effective batch: retune the learning rate", "low"
    return _energy_recommendation(
        ev, saving_j, rule="batch_size", title=f"Use a {factor}x larger batch per step",
        change=change,
        evidence=f"GPU busy {util:.0f}% of the time with {100 * used:.0f}% of its memory used at peak; {note}",
        method=f"per-sample time goes from 1 to busy + idle/{factor} (kernels scale with the batch, the per-step "
        f"overhead does not): training energy {_kj(ev.train_j)} x idle share {idle:.2f} x (1 - 1/{factor})",
        confidence=confidence,
    )


def data_loading(ev: Evidence) -> Recommendation | None:
    """The GPU idles between steps and the data is loaded in the training process or not pinned."""
    util = ev.gpu_utilization_pct
    setup = ev.setup
    serial = setup.num_workers == 0
    unpinned = setup.pin_memory is False
    if not ev.on_gpu or util is None or util >= UNDERUSED_UTILIZATION_PCT or not (serial or unpinned):
        return None
    workers = max(1, min(4, setup.physical_cores or 4))
    idle = 1.0 - util / 100.0
    saving_j = ev.train_j * idle * LOADING_IDLE_SHARE
    what = " and ".join(w for w, on in (("num_workers=0", serial), ("pin_memory=False", unpinned)) if on)
    return _energy_recommendation(
        ev, saving_j, rule="data_loading", title="Load data in worker processes, into pinned memory",
        change={
            "transformers": f"TrainingArguments(dataloader_num_workers={workers}, dataloader_pin_memory=True)",
            "lightning": f"DataLoader(num_workers={workers}, pin_memory=True, persistent_workers=True)",
            "keras": f"a keras.utils.PyDataset(workers={workers}, use_multiprocessing=True), or a torch "
            f"DataLoader(num_workers={workers}, pin_memory=True) passed to fit",
        },
        evidence=f"GPU idle {100 * idle:.0f}% of the training time with {what}",
        method=f"training energy {_kj(ev.train_j)} x GPU idle share {idle:.2f} x {LOADING_IDLE_SHARE:g} (half of "
        "the idle time assumed to be loading; at most all of it)",
        confidence="low",
    )


def evaluation_share(ev: Evidence) -> Recommendation | None:
    """Evaluation costs a large share of the run: evaluate half as often (or on a subset)."""
    phase = ev.phases.get("eval")
    if phase is None or phase.passes < 2 or ev.energy_j <= 0:
        return None
    share = phase.energy_j / ev.energy_j
    if share < EVAL_SHARE:
        return None
    every = ev.setup.eval_every_steps
    return _energy_recommendation(
        ev, phase.energy_j / 2.0, rule="evaluation_share", title="Evaluate half as often, or on a subset",
        change={
            "transformers": f"TrainingArguments(eval_steps={2 * every})" if every else
            "TrainingArguments(eval_steps=2x the current value)",
            "lightning": "Trainer(check_val_every_n_epoch=2) or Trainer(val_check_interval=2x, limit_val_batches=0.5)",
            "keras": "model.fit(validation_freq=2)",
        },
        evidence=f"{phase.passes} evaluation passes used {_kj(phase.energy_j)}, {100 * share:.0f}% of the run",
        method=f"half of the passes: evaluation energy {_kj(phase.energy_j)} / 2",
        confidence="high",
    )


def early_stopping(ev: Evidence) -> Recommendation | None:
    """The evaluation metric stopped improving: stopping after ``EARLY_STOPPING_PATIENCE`` evaluations
    without improvement would have saved the energy spent after that point."""
    history = ev.metric_history
    if len(history) < EARLY_STOPPING_PATIENCE + 2:
        return None
    sign = 1.0 if ev.greater_is_better else -1.0
    best = max(range(len(history)), key=lambda i: (sign * history[i].value, -i))
    stop = best + EARLY_STOPPING_PATIENCE
    if stop >= len(history) - 1:
        return None
    after_best_j = ev.energy_j - history[best].energy_j
    saving_j = ev.energy_j - history[stop].energy_j
    name = ev.metric_name or "the evaluation metric"
    p = EARLY_STOPPING_PATIENCE
    return _energy_recommendation(
        ev, saving_j, rule="early_stopping", title=f"Stop early on {name} (patience {p})",
        change={
            "transformers": f"callbacks=[EarlyStoppingCallback(early_stopping_patience={p})] with "
            f"TrainingArguments(load_best_model_at_end=True, metric_for_best_model=\"{name}\")",
            "lightning": f"Trainer(callbacks=[EarlyStopping(monitor=\"{name}\", patience={p}, "
            f"mode=\"{'max' if ev.greater_is_better else 'min'}\")])",
            "keras": f"keras.callbacks.EarlyStopping(monitor=\"{name}\", patience={p}, restore_best_weights=True)",
        },
        evidence=f"best {name} {history[best].value:.4g} at step {history[best].step} (evaluation {best + 1} of "
        f"{len(history)}); {_kj(after_best_j)} spent after it without improvement",
        method=f"energy after evaluation {stop + 1} (the {p}th without improvement): run total "
        f"{_kj(ev.energy_j)} - {_kj(history[stop].energy_j)}",
        confidence="medium",
    )


def power_limit(ev: Evidence) -> Recommendation | None:
    """GPUs drawing most of their power limit: cap them at 60% of it (McDonald et al. 2022)."""
    limits = [g for g in ev.gpus if g.power_limit_w]
    train = ev.phases.get("train")
    if not ev.on_gpu or not limits or train is None or train.duration_s <= 0:
        return None
    gpu_train_j = ev.train_share_of("gpu")
    mean_power_w = gpu_train_j / train.duration_s / len(ev.gpus)
    limit_w = min(g.power_limit_w for g in limits)
    cap_w = max(POWER_CAP_FRACTION * limit_w, max(g.min_power_limit_w or 0.0 for g in limits))
    if mean_power_w <= cap_w:
        return None  # the cap would not bind
    other_train_j = ev.train_j - gpu_train_j
    saving_j = gpu_train_j * POWER_CAP_GPU_SAVING - other_train_j * POWER_CAP_TIME_INCREASE
    util = ev.gpu_utilization_pct or 0.0
    indices = ",".join(g.name.split(":")[-1] for g in limits)
    return _energy_recommendation(
        ev, saving_j, rule="power_limit", title=f"Cap GPU power at {cap_w:.0f} W",
        change={"any": f"sudo nvidia-smi -i {indices} -pl {cap_w:.0f}   (reset: -pl {limit_w:.0f})"},
        evidence=f"GPUs drew {mean_power_w:.0f} W on average while training, {100 * mean_power_w / limit_w:.0f}% "
        f"of their {limit_w:.0f} W limit, busy {util:.0f}% of the time",
        method=f"GPU training energy {_kj(gpu_train_j)} x {POWER_CAP_GPU_SAVING:.1%} less, minus the other "
        f"components' {_kj(other_train_j)} x {POWER_CAP_TIME_INCREASE:.1%} longer run (figures measured on V100s)",
        confidence="medium" if util < 80.0 else "low",
    )


def lower_carbon_region(ev: Evidence) -> Recommendation | None:
    """The same run where the grid is much cleaner, from codecarbon's cloud table."""
    grid = ev.grid
    kg = grid.kg_for_j(ev.energy_j)
    if grid.is_default or kg <= 0 or grid.g_per_kwh <= 0:
        return None
    best = lowest_intensity_cloud_region(grid.cloud_provider)
    if best is None or best.g_per_kwh > REGION_FACTOR * grid.g_per_kwh:
        return None
    saving_kg = kg * (1.0 - best.g_per_kwh / grid.g_per_kwh)
    return Recommendation(
        rule="lower_carbon_region", title=f"Run in {best.provider} {best.region} ({best.place})",
        change={"any": f"rent {best.provider} {best.region}; then pass cloud_provider=\"{best.provider}\", "
                f"cloud_region=\"{best.region}\" to EnergyCallback(...) or wattwise.track(...)"},
        evidence=f"this run's grid: {grid.g_per_kwh:.0f} g CO2e/kWh ({grid.location}); {best.provider} "
        f"{best.region}: {best.g_per_kwh:g} g CO2e/kWh",
        saving_j=0.0, saving_kg=saving_kg, saving_pct=100.0 * saving_kg / kg,
        method=f"the same energy at the other grid's intensity: CO2e x (1 - {best.g_per_kwh:g}/{grid.g_per_kwh:.0f})",
        confidence="high", source=SOURCES["lower_carbon_region"],
    )


def cpu_threads(ev: Evidence) -> Recommendation | None:
    """CPU training with fewer torch threads than physical cores: the run takes longer than it needs,
    and the time-bound energy (RAM) with it."""
    setup = ev.setup
    threads, cores = setup.torch_threads, setup.physical_cores
    if ev.on_gpu or not threads or not cores or threads >= cores:
        return None
    ram_train_j = ev.train_share_of("ram", "dram")
    saving_j = ram_train_j * (1.0 - threads / cores)
    return _energy_recommendation(
        ev, saving_j, rule="cpu_threads", title=f"Use all {cores} physical cores",
        change={"any": f"torch.set_num_threads({cores}) before training (or OMP_NUM_THREADS={cores})"},
        evidence=f"trained on the CPU with {threads} torch threads on {cores} physical cores",
        method=f"ideal scaling shortens training by 1 - {threads}/{cores}; only the time-bound memory energy "
        f"{_kj(ram_train_j)} falls with it (CPU work stays the same)",
        confidence="low",
    )


def probed_configuration(ev: Evidence) -> Recommendation | None:
    """A probe of this model on this hardware measured a cheaper configuration than the run's: the
    saving is the probe's own measurement (its projections of the same planned run with both
    configurations when the run's was probed, else the run's measured joules per sample against
    the best candidate's)."""
    probe = ev.probe
    if probe is None:
        return None
    ran = [c for c in probe.candidates if not c.get("error") and c.get("projected_energy_j")
           and c.get("energy_per_sample_j")]
    mine = ev.setup.probe_setup()
    if not ran or mine is None:
        return None
    best = min(ran, key=lambda c: c["projected_energy_j"])
    if _same_setup(best.get("setup") or {}, mine):
        return None  # the run used the configuration the probe found cheapest
    current = next((c for c in ran if _same_setup(c.get("setup") or {}, mine)), None)
    best_eps = best["energy_per_sample_j"]
    cited = f"probe of {probe.created_at} ({probe.steps} steps per candidate, {probe.path})"
    if current is not None:
        fraction = 1.0 - best["projected_energy_j"] / current["projected_energy_j"]
        saving_j, confidence = ev.energy_j * fraction, "high"
        evidence = (f"the {cited} measured {_label(best)} at {best_eps:.3g} J/sample against {_label(current)} "
                    f"(this run's) at {current['energy_per_sample_j']:.3g} J/sample")
        method = (f"this run's {_kj(ev.energy_j)} x (1 - {_kj(best['projected_energy_j'])} / "
                  f"{_kj(current['projected_energy_j'])}): the probe's projections of the planned run with each")
    else:
        train = ev.phases.get("train")
        samples = train.samples if train is not None else 0
        if not samples:
            return None
        run_eps = ev.train_j / samples
        saving_j, confidence = (run_eps - best_eps) * samples, "medium"
        evidence = (f"the {cited} measured {_label(best)} at {best_eps:.3g} J/sample; this run (not among the "
                    f"candidates) used {run_eps:.3g} J/sample over its {samples:g} training samples")
        method = f"({run_eps:.3g} - {best_eps:.3g}) J/sample x {samples:g} training samples"
    return _energy_recommendation(
        ev, saving_j, rule="probed_configuration", title=f"Train with {_label(best)} (measured by a probe)",
        change=_probed_change(ev.setup.framework, best.get("config") or {}), evidence=evidence, method=method,
        confidence=confidence,
    )


def _same_setup(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two set-ups agree on everything both know (batch size, precision), and both know something."""
    shared = [k for k in ("batch_size", "precision") if a.get(k) is not None and b.get(k) is not None]
    return bool(shared) and all(a[k] == b[k] for k in shared)


def _label(candidate: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in (candidate.get("config") or {}).items()) or "(as configured)"


def _probed_change(framework: str | None, config: dict[str, Any]) -> dict[str, str]:
    """The probe's best configuration in the framework's own terms."""
    args = ", ".join(f"{k}={v!r}" for k, v in config.items())
    if framework == "transformers":
        return {"transformers": f"TrainingArguments({args})"}
    if framework in ("lightning", "keras"):
        precision_key = "precision" if framework == "lightning" else "dtype_policy"
        parts = [f"{k}={v!r}" for k, v in config.items() if k != precision_key]
        if framework == "lightning":
            where = [f"{', '.join(parts)} on the LightningModule or DataModule"] if parts else []
            where += [f"Trainer(precision={config[precision_key]!r})"] if precision_key in config else []
        else:
            where = [f"model.fit({', '.join(parts)})"] if parts else []
            where += [f"keras.config.set_dtype_policy({config[precision_key]!r}) before building the model"
                      ] if precision_key in config else []
        return {framework: "; ".join(where) or args}
    return {"any": args}


RULES: tuple[Callable[[Evidence], Recommendation | None], ...] = (
    mixed_precision, batch_size, data_loading, evaluation_share, early_stopping, power_limit,
    lower_carbon_region, cpu_threads, probed_configuration,
)
