"""Progress of a long sweep: one line per finished job with what is done, failed and left and an ETA."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def clock(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS``."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts a sweep's finished jobs and logs, per job, ``[done/total] N ok, M failed, L left; S s/job, ETA H:MM:SS``.

    The ETA is the remaining jobs times the measured wall time per finished job since the sweep started
    (so it already accounts for jobs running in parallel); ``s/job`` is the mean duration of one job.

    Args:
        total: jobs in the sweep.
    """

    def __init__(self, total: int) -> None:
        self.total, self.ok, self.failed, self.job_seconds = total, 0, 0, 0.0
        self.start = time.monotonic()

    def update(self, ok: bool, seconds: float) -> str:
        """Count one finished job (``ok`` or failed, lasting ``seconds``); log and return the line."""
        self.ok += bool(ok)
        self.failed += not ok
        self.job_seconds += seconds
        done = self.ok + self.failed
        left = max(self.total - done, 0)
        eta = (time.monotonic() - self.start) / done * left
        line = (
            f"[{done}/{self.total}] {self.ok} ok, {self.failed} failed, {left} left; "
            f"{self.job_seconds / done:.1f} s/job, ETA {clock(eta)}"
        )
        log.info(line)
        return line
