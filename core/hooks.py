"""Helpers every integration shares: hooks that never raise, and finding the framework's callback list.

Example::

    class EnergyCallback(SomeFrameworkCallback):
        @guarded
        def on_step_end(self, *args, **kwargs):
            self._session.step()          # any exception is reported once, training goes on
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def guarded(method: F) -> F:
    """Run a hook; on failure, tell ``self._session`` once per hook and return None instead of raising."""

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            self._session.report_failure(f"{type(self).__name__}.{method.__name__}", exc)
            return None

    return wrapper  # type: ignore[return-value]


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
