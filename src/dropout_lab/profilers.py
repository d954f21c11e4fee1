"""The Trainer's profiler when none is configured: Lightning's ``PassThroughProfiler`` without its per-hook cost."""

from __future__ import annotations

import contextlib

from pytorch_lightning.profilers import PassThroughProfiler

_NOTHING = contextlib.nullcontext()


class NullProfiler(PassThroughProfiler):
    """Lightning's ``PassThroughProfiler`` (the Trainer's default: profiles nothing) whose ``profile(action)``
    returns one shared ``contextlib.nullcontext`` instead of a fresh ``@contextmanager`` generator.

    Lightning enters ``trainer.profiler.profile(...)`` around every hook of every callback, the module and
    the strategy: about 48 times a training step with the harness's 5 callbacks. The generator costs about
    1.5 us each time on CPU, the shared null context 0.3 us, about 0.06 ms a step (docs/bench_harness.md,
    "speed"). Choosing a real profiler (``+trainer.profiler=simple``) replaces this one (:func:`trainer_profiler`).
    """

    def profile(self, action_name: str) -> contextlib.nullcontext:
        return _NOTHING


def trainer_profiler(trainer_cfg) -> object:
    """``trainer_cfg.profiler`` when the config sets one (``simple``, ``advanced``, ``pytorch`` or a node), else
    a :class:`NullProfiler`."""
    return trainer_cfg.get("profiler") or NullProfiler()
