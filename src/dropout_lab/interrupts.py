"""Signals that report themselves: a job or a sweep stopped by SIGINT, SIGTERM, SIGUSR1 or SIGUSR2 writes
what it has (an ``interrupted`` summary, the last checkpoint) and exits with the shell's status for the
signal, 128 + its number (130 for Ctrl-C, 143 for ``kill`` and Slurm's time limit), never 0.

:func:`trap` turns those signals into :class:`Interrupted` in the main thread, where the running code
unwinds through its ``finally`` blocks; :func:`signal_of` recognises the other forms an interruption
takes (Lightning's ``SIGTERMException``, a ``KeyboardInterrupt``). A signal that another library
already handles is left to it: submitit's SIGTERM/SIGUSR2 (checkpoint and requeue) and, inside a Slurm
job, Lightning's SIGUSR1 requeue. See docs/faults.md and docs/sweeps.md.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: the signals a run or sweep turns into :class:`Interrupted`
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Interrupted(SystemExit):
    """A run or sweep stopped by signal ``signum``; as a ``SystemExit`` its exit status is 128 + ``signum``
    (Python exits with it, quietly, wherever it is not caught). Pickles with its signal, so a pool worker
    hands it back to the launcher intact."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}"

    def __reduce__(self) -> tuple:
        return type(self), (self.signum,)


def signal_of(err: BaseException) -> int | None:
    """The signal behind ``err`` or any exception in its chain (an interruption inside ``torch.save``'s write
    comes back as torch's ``RuntimeError``): :class:`Interrupted`, Lightning's ``SIGTERMException`` (SIGTERM),
    ``KeyboardInterrupt`` or the ``SystemExit(1)`` Lightning raises after one (SIGINT); None for anything else."""
    from dropout_lab.errors import chain

    for cause in chain(err):
        signum = _signal(cause)
        if signum is not None:
            return signum
    return None


def _signal(err: BaseException) -> int | None:
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    if isinstance(err, Interrupted):
        return err.signum
    if isinstance(err, SIGTERMException):
        return signal.SIGTERM
    if isinstance(err, KeyboardInterrupt) or (
        isinstance(err, SystemExit) and isinstance(err.__context__, KeyboardInterrupt)
    ):
        return signal.SIGINT
    return None


def _ours(handler: Any) -> bool:
    return getattr(handler, "__name__", "") == _raise.__name__ and getattr(handler, "__module__", "") == __name__


#: signals held by :func:`deferred` (None outside a deferred block)
_held: list[int] | None = None


def _raise(signum: int, frame: Any) -> None:
    for other in SIGNALS:  # a second Ctrl-C or SIGTERM must not interrupt the summary being written
        if _ours(signal.getsignal(other)):
            signal.signal(other, signal.SIG_IGN)
    if _held is not None:  # inside a write that must not be torn: raised when the block ends
        _held.append(signum)
        return
    raise Interrupted(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold an interruption (:func:`trap`'s handler) until the block ends, then raise it: for a write that a C++
    library makes through a Python file object (``torch.save``), where an exception raised inside the write
    aborts the process (``terminate called after throwing an instance of 'pybind11::error_already_set'``,
    exit -6, no summary). Nested blocks raise at the outermost end.

    Raises:
        Interrupted: at the end of the block, for the first signal that arrived inside it.
    """
    global _held
    outer = _held
    _held = [] if outer is None else outer
    try:
        yield
    finally:
        held, _held = _held, outer
        if outer is None and held:
            raise Interrupted(held[0])


def _free(signum: int) -> bool:
    """Whether ``signum`` is ours to handle: Python's default handling, not another library's handler."""
    current = signal.getsignal(signum)
    if signum == signal.SIGINT:
        return current is signal.default_int_handler
    if signum in (signal.SIGUSR1, signal.SIGUSR2) and "SLURM_JOB_ID" in os.environ:
        return False  # Lightning's / submitit's requeue signals inside a Slurm job
    return current in (signal.SIG_DFL, None)


def install() -> dict[int, Any]:
    """Make :data:`SIGNALS` with Python's default handling raise :class:`Interrupted` in the main thread
    (once: later ones are ignored, so that cleanup finishes); return the replaced handlers for
    :func:`restore` (none outside the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    saved = {s: signal.getsignal(s) for s in SIGNALS if _free(s)}
    for s in saved:
        signal.signal(s, _raise)
    return saved


def restore(saved: dict[int, Any]) -> None:
    """Put back the handlers :func:`install` replaced."""
    for s, handler in saved.items():
        signal.signal(s, handler)


@contextmanager
def trap() -> Iterator[None]:
    """:func:`install` for the block, :func:`restore` after it. Nested blocks (a job inside a sweep that
    trapped already) share the outer handler."""
    saved = install()
    try:
        yield
    finally:
        restore(saved)


#: whether this process is running a job (read by :func:`watch_parent`'s thread)
busy = threading.Event()


def watch_parent(parent: int, grace: float = 30.0, poll: float = 0.5) -> threading.Thread:
    """Stop this worker process when process ``parent`` (its launcher) is gone: a daemon thread polls
    ``os.getppid()``; when the process has been re-parented it sends itself SIGTERM (the running job
    writes an ``interrupted`` summary and keeps its last checkpoint: :func:`trap`), waits until no job
    is :data:`busy` (at most ``grace`` seconds) and exits with status 143, releasing its GPU-slot lock.
    Returns the started thread."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        if busy.is_set():
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + grace
            while busy.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
        os._exit(128 + signal.SIGTERM)

    thread = threading.Thread(target=watch, name="dropout-lab-parent-watch", daemon=True)
    thread.start()
    return thread
