"""The notes of a run: what went wrong or was assumed, logged once and kept for the report.

Example::

    >>> run.note("no location given: using the world average")     # logged once, in report.notes
    >>> run.report_failure("EnergyCallback.on_log", exc)            # once per hook, with the traceback
"""

from __future__ import annotations

import logging

logger = logging.getLogger("wattwise")


class Notes:
    """``notes`` (a list, in order) and the messages already given."""

    notes: list[str]
    _noted: set[str]

    def note(self, message: str, *, level: int = logging.WARNING) -> None:
        """Record a message for the report and log it, once."""
        if message in self._noted:
            return
        self._noted.add(message)
        self.notes.append(message)
        logger.log(level, "wattwise: %s", message)

    def report_failure(self, where: str, exc: BaseException) -> None:
        """A hook failed: say so once per hook; tracking goes on with what still works."""
        key = f"{where} failed"
        if key in self._noted:
            return
        self._noted.add(key)
        message = f"{where} failed ({type(exc).__name__}: {exc}); training continues, figures may be incomplete"
        self.notes.append(message)
        logger.warning("wattwise: %s", message, exc_info=exc)
