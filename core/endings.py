"""How a run in progress ends when the process does: SIGTERM, SIGINT, or interpreter exit.

Example::

    >>> from wattwise import endings
    >>> endings.watch(run)        # at start: the run is finished (partial) if the process is ended
    >>> endings.forget(run)       # at finish

SLURM time limits, Kubernetes, ``docker stop`` and ``kill`` end a job with SIGTERM, which skips
``atexit``; Ctrl-C sends SIGINT. While at least one run is in progress, wattwise handles both
signals: it finishes every run in progress as partial (its files and registry row are written,
with the energy up to the signal), then hands the signal to the handler that was installed before
(Lightning's, SLURM's, Python's own) so the process ends, or goes on, exactly as it would have
without wattwise. With no run in progress the previous handlers are back in place. Handlers can
only be installed from the main thread: a run started in another thread is finished at
interpreter exit instead (``atexit``), as is any run left unfinished by a normal exit.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
from typing import Any, Protocol

SIGNALS = (signal.SIGTERM, signal.SIGINT)
logger = logging.getLogger("wattwise")


class Finishable(Protocol):
    def finish_interrupted(self, why: str, *, at_last_reading: bool) -> Any: ...


_runs: list[Finishable] = []
_previous: dict[int, Any] = {}  # signal -> the handler installed before ours
_lock = threading.RLock()


def watch(run: Finishable) -> None:
    """Finish ``run`` as partial if the process is ended by a signal or exits first."""
    with _lock:
        if not _runs:
            atexit.register(_at_exit)
        _runs.append(run)
        if threading.current_thread() is threading.main_thread():
            _install()


def forget(run: Finishable) -> None:
    """``run`` has finished: nothing to do for it at the end any more."""
    with _lock:
        with contextlib.suppress(ValueError):
            _runs.remove(run)
        if not _runs:
            atexit.unregister(_at_exit)
            if threading.current_thread() is threading.main_thread():
                _uninstall()


def in_progress() -> list[Finishable]:
    with _lock:
        return list(_runs)


def _install() -> None:
    for sig in SIGNALS:
        if sig in _previous:
            continue
        try:
            current = signal.getsignal(sig)
            signal.signal(sig, _on_signal)
        except (ValueError, OSError):  # not the main thread of the main interpreter, or not allowed
            continue
        _previous[sig] = current


def _uninstall() -> None:
    for sig, previous in list(_previous.items()):
        try:
            if signal.getsignal(sig) is _on_signal:  # someone installed theirs over ours: leave it
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        except (ValueError, OSError):
            continue
        del _previous[sig]


def _finish_all(why: str, *, at_last_reading: bool) -> None:
    for run in in_progress():
        try:
            run.finish_interrupted(why, at_last_reading=at_last_reading)
        except Exception as exc:  # the process is ending: say so, never stand in its way
            logger.warning("wattwise: could not finish a run (%s: %s)", type(exc).__name__, exc)


def _on_signal(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    previous = _previous.get(signum, signal.SIG_DFL)
    _finish_all(f"the process received {name}", at_last_reading=False)
    with _lock:
        _uninstall()
    if callable(previous):
        previous(signum, frame)  # Python's own SIGINT handler raises KeyboardInterrupt here
    elif previous == signal.SIG_IGN:
        return
    else:  # the default action: end the process as the signal would have
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _at_exit() -> None:
    # the interpreter is exiting: whatever ran after the last reading is not the run's
    _finish_all("the process exited before the run finished", at_last_reading=True)
