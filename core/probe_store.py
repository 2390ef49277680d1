"""Probes kept next to the run registry, so that a later run of the same model on the same hardware is
advised from what its probe measured.

Example::

    >>> from wattwise.probe_store import save, latest
    >>> save(result, registry=None)          # <registry dir>/probes/<framework>-<params>-<hardware>.json
    >>> latest(None, framework="transformers", params=124_439_808, hardware="NVIDIA A100-SXM4-80GB")

A probe is found by its framework, the model's parameter count (what a run records of its model)
and the hardware that did the work (the GPUs' names, else the CPU's model, as in the registry): the
latest probe with that key replaces the one before. ``registry=False`` (or ``WATTWISE_REGISTRY=off``)
keeps none. Reading never raises: a missing or damaged file is no probe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .advisor import ProbeEvidence
    from .probe_result import ProbeResult
    from .records import ComponentEnergy

DIRECTORY = "probes"


def hardware_of(components: Iterable[ComponentEnergy], cpu_model: str | None) -> str:
    """The hardware that did the work: the GPUs' names (NVML), else the CPU's model name (as the registry says)."""
    gpus = [c for c in components if c.kind == "gpu"]
    if gpus:
        return " + ".join(sorted({c.detail.split(",")[0].strip() or c.name for c in gpus}))
    return str(cpu_model or "unknown CPU")


def directory(registry: bool | str | os.PathLike | None) -> Path | None:
    """``probes/`` beside the registry file that ``registry`` (or ``WATTWISE_REGISTRY``) names; None when off."""
    from .registry import resolve_path

    path = resolve_path(registry)
    return path.parent / DIRECTORY if path is not None else None


def path_for(registry: bool | str | os.PathLike | None, *, framework: str, params: int, hardware: str) -> Path | None:
    folder = directory(registry)
    if folder is None:
        return None
    digest = hashlib.sha1(hardware.encode()).hexdigest()[:10]
    name = re.sub(r"[^a-z0-9]+", "-", hardware.lower()).strip("-")[:40]
    return folder / f"{framework}-{int(params)}-{name}-{digest}.json"


def save(result: ProbeResult, registry: bool | str | os.PathLike | None) -> Path | None:
    """Keep ``result`` for the advisor; None when there is no registry or the model is not known."""
    params = result.model.get("params")
    path = path_for(registry, framework=result.framework, params=params, hardware=result.hardware) if params else None
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    result.write_json(path)
    return path


def latest(registry: bool | str | os.PathLike | None, *, framework: str | None, params: int | None,
           hardware: str) -> tuple[Path, dict[str, Any]] | None:
    """The latest probe of this model (``params``) in ``framework`` on ``hardware``, and its file; None if none."""
    if not framework or not params:
        return None
    try:
        path = path_for(registry, framework=framework, params=params, hardware=hardware)
        if path is None or not path.is_file():
            return None
        data = json.loads(path.read_text())
        return (path, data) if isinstance(data, dict) and data.get("hardware") == hardware else None
    except (OSError, ValueError):
        return None


def evidence_given(probe: ProbeResult | str, *, framework: str, params: int | None,
                   components: Iterable[ComponentEnergy], cpu_model: str | None) -> tuple[ProbeEvidence | None, str]:
    """What the advisor reads of a probe passed to the run (``probe=``: a ``ProbeResult`` or its
    ``probe.json``), and why it was left out if it was: another framework, model or hardware."""
    from .advisor import ProbeEvidence

    if isinstance(probe, str | os.PathLike):
        where = os.fspath(probe)
        try:
            data = json.loads(Path(where).read_text())
        except (OSError, ValueError) as exc:
            return None, f"the probe {where} could not be read ({exc})"
    else:
        data, where = probe.to_dict(), "the probe passed as probe="
    if not isinstance(data, dict):
        return None, f"{where} is not a probe.json"
    probed_params = (data.get("model") or {}).get("params")
    hardware = hardware_of(components, cpu_model)
    if data.get("framework") != framework:
        why = f"it probed a {data.get('framework')} set-up, this run is {framework}"
    elif params and probed_params and int(probed_params) != int(params):
        why = f"it probed a model of {int(probed_params):,} parameters, this run's has {int(params):,}"
    elif data.get("hardware") and data.get("hardware") != hardware:
        why = f"it ran on {data.get('hardware')}, this run on {hardware}"
    else:
        candidates = [c for c in data.get("candidates") or [] if isinstance(c, dict)]
        return ProbeEvidence(path=where, created_at=str(data.get("created_at", "")),
                             steps=int(data.get("steps") or 0), candidates=candidates), ""
    return None, f"{where} was not used for the advice: {why}"


def evidence_for(registry: bool | str | os.PathLike | None, *, framework: str, params: int,
                 components: Iterable[ComponentEnergy], cpu_model: str | None) -> ProbeEvidence | None:
    """What the advisor reads of the latest matching probe (``advisor.probed_configuration``)."""
    from .advisor import ProbeEvidence

    found = latest(registry, framework=framework, params=params, hardware=hardware_of(components, cpu_model))
    if found is None:
        return None
    path, data = found
    candidates = [c for c in data.get("candidates") or [] if isinstance(c, dict)]
    return ProbeEvidence(path=str(path), created_at=str(data.get("created_at", "")), steps=int(data.get("steps") or 0),
                         candidates=candidates)
