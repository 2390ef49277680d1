"""Helpers every integration shares: hooks that never raise, finding the framework's objects on the
call stack, counting a batch's samples (and a Keras epoch's steps and samples) and naming its precision.

Example::

    class EnergyCallback(SomeFrameworkCallback):
        @guarded
        def on_step_end(self, *args, **kwargs):
            self.runs.run.step()          # any exception is reported once, training goes on
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def guarded(method: F) -> F:
    """Run a hook; on failure, tell the current run (``self.runs.run``) once per hook and return None.

    The hooks that run at every training step do the same inline (``try`` / ``hook_failed``): the
    wrapper's extra call costs 1-2 us there, with the caches cold from the step (docs/overhead.md)."""

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            hook_failed(self, method.__name__, exc)
            return None

    return wrapper  # type: ignore[return-value]


def hook_failed(callback: Any, hook: str, exc: Exception) -> None:
    """Tell the callback's current run that its ``hook`` failed (once per hook; ``guarded``)."""
    callback.runs.run.report_failure(f"{type(callback).__name__}.{hook}", exc)


def find_caller(kind: type, max_depth: int = 8) -> Any | None:
    """The nearest ``self`` of type ``kind`` among the calling frames (the framework's callback list
    object that is dispatching this hook), or None."""
    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, kind):
            return candidate
        frame = frame.f_back
    return None


def move_to_front(callbacks: list, item: Any, *, after: type | None = None) -> bool:
    """Put ``item`` first in ``callbacks`` (in place), or right after the leading ``after`` instances,
    so loggers that run after it see what it adds. False when ``item`` is not in the list."""
    if not any(candidate is item for candidate in callbacks):
        return False
    callbacks[:] = [c for c in callbacks if c is not item]
    position = 0
    while after is not None and position < len(callbacks) and isinstance(callbacks[position], after):
        position += 1
    callbacks.insert(position, item)
    return True


def find_local(name: str, max_depth: int = 8) -> Any | None:
    """The nearest calling frame's local variable ``name`` (a framework loop's own count), or None."""
    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        if name in frame.f_locals:
            return frame.f_locals[name]
        frame = frame.f_back
    return None


PRECISIONS = (("bf16", "bf16"), ("bfloat16", "bf16"), ("fp16", "fp16"), ("float16", "fp16"), ("16", "fp16"),
              ("fp32", "fp32"), ("float32", "fp32"), ("32", "fp32"))


def precision_name(value: object) -> str | None:
    """``fp32``, ``bf16`` or ``fp16`` from any framework's name for it (Lightning ``"bf16-mixed"``,
    ``"32-true"``; Keras ``"mixed_bfloat16"``; ``torch.float32``), else None."""
    text = str(value).lower()
    for key, name in PRECISIONS:
        if key in text:
            return name
    return None


def count_samples(batch: Any) -> int:
    """Samples in a batch: the leading dimension of its first tensor or array (depth first), the length
    of a list of plain values, else 0 (unknown)."""
    shape = getattr(batch, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) else 1
    if isinstance(batch, Mapping):
        return next((n for n in map(count_samples, batch.values()) if n), 0)
    if isinstance(batch, list | tuple) and batch:
        if isinstance(batch[0], str | bytes | int | float):
            return len(batch)
        return next((n for n in map(count_samples, batch) if n), 0)
    return 0


class BatchCount:
    """Where an epoch (or a pass) is: the last batch index its batch-end hooks gave and, from its
    batch sizes when known (``(size, batches per pass over the data, samples the pass's last batch
    is short)``, as Keras's data adapter says), the samples of the batches up to it."""

    def __init__(self, batches: int | None = None, sizes: tuple[int, int, int] | None = None) -> None:
        self.batches = batches if isinstance(batches, int) and batches > 0 else None
        self.sizes = sizes
        self.last = -1
        self.samples = 0

    def ended(self, batch: int) -> tuple[int, int]:
        """The steps and the samples a batch-end hook at ``batch`` stands for (one call per batch:
        this runs at every training step).

        ``batch`` is the last step of a ``steps_per_execution`` group, as Keras numbers it: the group's
        nominal end even where the data ran out first, hence the cap at the pass's ``batches``.
        """
        if self.batches is not None and batch >= self.batches:
            batch = self.batches - 1
        steps = batch - self.last if batch > self.last else 1
        through = 0
        if self.sizes is not None:
            size, per_pass, short = self.sizes
            through = (batch + 1) * size - ((batch + 1) // per_pass * short if per_pass and short else 0)
        samples, self.last, self.samples = through - self.samples, batch, through
        return steps, samples


def samples_in(sizes: tuple[int, int, int] | None, batches: int) -> int:
    """Samples in the first ``batches`` batches of an epoch of ``sizes`` (``BatchCount``); 0 when unknown."""
    return BatchCount(sizes=sizes).ended(batches - 1)[1] if batches > 0 else 0
