"""The one place where dropout-lab reaches into a library's private internals. Each shim says why, with the
measurement where it exists for speed, and has its test in tests/test_compat.py; a library upgrade that moves
one of these names breaks here and in that test, nowhere else.

Speed (flagship regime, docs/bench_harness.md "flagship regime"):

* :func:`fast_result_to`: Lightning's ``self.log`` moves the logged metric's stored state to the value's
  device on every call (``_ResultMetric.to``: ``apply_to_collection`` over its ``__dict__``, recursing into
  its metadata dataclasses), about 0.5 ms a call on CPU even when nothing moves. A flagship job logs 14
  epoch-level values per epoch: 0.35 s of a 7.7-s job (7.67 -> 7.28 s, medians of 5 alternating rounds).
* :class:`FastHookName`: Lightning sets ``_current_fx_name`` on the module before and after every hook,
  about 45 times a training step, through ``nn.Module.__setattr__`` (2.8 us) instead of 0.25 us: 28,800 calls
  and ~0.07 s (1 %) of a flagship job (640 steps).
* :func:`null_profiler`: Lightning wraps every hook call (of each callback, the module, the strategy) in
  ``trainer.profiler.profile(name)``, and its default ``PassThroughProfiler`` builds a generator-based context
  manager for each, about 110 a training step. Counted in the flagship regime (``sys.setprofile``, steps 10-50):
  1,520 -> 1,255 Python and 789 -> 630 C calls a step (18 % fewer); 8 alternating rounds of the 40-epoch job:
  median 8.64 -> 8.44 s CPU, per-round ratio median 1.049 (single rounds varied by up to 30 % on this VM). It is public
  API (a ``Profiler`` subclass), kept here beside the other speed shims with its number.

Function (no public API offers them):

* :func:`rng_states`, :func:`set_rng_states`: Lightning's collection of the Python, NumPy, torch and CUDA
  generator states (``lightning_fabric.utilities.seed``), for exact resume.
* :func:`tb_file_writer`: the event-file writer of a ``SummaryWriter``, to write HParams protobufs.
* :func:`fused_devices`, :func:`foreach_devices`: the devices with torch's fused / foreach optimizer kernels.
* :data:`NORM_LAYERS`: the base class of every BatchNorm/InstanceNorm layer (running statistics).
* :func:`optuna_params`: the Optuna sweeper's parser of ``hydra.sweeper.params`` into distributions.
* :func:`suggest`: Optuna's ``Trial._suggest``, a value drawn from a distribution object (the sweeper's own call).
* :func:`grid`: the jobs of a sweep's parsed overrides, as Hydra's BasicSweeper expands them (``hydra._internal``).
* :func:`execute_job`: hydra-joblib-launcher's job runner (``_core``), which the ``gpu_pool`` workers call.

Only torch is imported at module level: the dropout methods use :data:`NORM_LAYERS` without Lightning or Hydra.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch
from torch import nn

__all__ = [
    "NORM_LAYERS",
    "FastHookName",
    "execute_job",
    "fast_result_to",
    "foreach_devices",
    "fused_devices",
    "install",
    "null_profiler",
    "optuna_params",
    "rng_states",
    "set_rng_states",
    "suggest",
    "tb_file_writer",
]

_lightning_to = None  # Lightning's own ``_ResultMetric.to``, kept by :func:`install`
_NULL_CONTEXT = contextlib.nullcontext()  # what :func:`null_profiler`'s ``profile`` returns for every hook

#: every normalisation layer with running statistics (BatchNorm*d, InstanceNorm*d, SyncBatchNorm)
NORM_LAYERS = nn.modules.batchnorm._NormBase


def _on(value: Any, device: torch.device) -> bool:
    return isinstance(value, torch.Tensor) and value.device == device


def fast_result_to(self: Any, *args: Any, **kwargs: Any) -> Any:
    """``_ResultMetric.to(device)``, skipped when the metric's tensors are all on ``device`` already (only plain
    tensors: a metric holding a torchmetrics ``Metric``, or any other call form, goes to Lightning's own)."""
    device = args[0] if len(args) == 1 and not kwargs else None
    if isinstance(device, (str, torch.device)):
        device = torch.device(device)
        held = [v for v in self.__dict__.values() if isinstance(v, (torch.Tensor, nn.Module))]
        if held and all(_on(v, device) for v in held):
            return self
    return _lightning_to(self, *args, **kwargs)


def install() -> None:
    """Install the shims that patch a library (idempotent); ``dropout_lab.module`` calls it on import."""
    global _lightning_to
    from pytorch_lightning.trainer.connectors.logger_connector.result import _ResultMetric

    if _ResultMetric.to is not fast_result_to:
        _lightning_to = _ResultMetric.to
        _ResultMetric.to = fast_result_to


class FastHookName(nn.Module):
    """Mixin for a LightningModule: ``_current_fx_name`` (the running hook's name, a str or None, never a tensor
    or module) is stored directly instead of through ``nn.Module.__setattr__``'s parameter/buffer checks."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


def null_profiler() -> Any:
    """A Lightning ``Profiler`` that records nothing, at no cost: its ``profile(name)`` returns one shared
    ``contextlib.nullcontext`` instead of a new generator-based context manager per hook call
    (``PassThroughProfiler``, the Trainer's default). train.py passes it unless ``trainer.profiler`` is set.
    (Lightning is imported here, not at module level: see above.)"""
    return _null_profiler_class()()


@functools.cache
def _null_profiler_class() -> type:
    from pytorch_lightning.profilers import Profiler

    class NullProfiler(Profiler):
        def start(self, action_name: str) -> None:
            pass

        def stop(self, action_name: str) -> None:
            pass

        def profile(self, action_name: str) -> contextlib.nullcontext:
            return _NULL_CONTEXT

    return NullProfiler


def rng_states(include_cuda: bool) -> dict[str, Any]:
    """The global generator states (Python ``random``, NumPy, torch CPU and, with ``include_cuda``, CUDA)."""
    from lightning_fabric.utilities.seed import _collect_rng_states

    return _collect_rng_states(include_cuda=include_cuda)


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore the states :func:`rng_states` returned."""
    from lightning_fabric.utilities.seed import _set_rng_states

    _set_rng_states(states)


def tb_file_writer(writer: Any) -> Any:
    """The ``FileWriter`` of a ``torch.utils.tensorboard.SummaryWriter`` (``add_summary`` of raw protobufs)."""
    return writer._get_file_writer()


def fused_devices() -> list[str]:
    """Device types with torch's fused optimizer kernels (``fused=True``)."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    return _get_fused_kernels_supported_devices()


def foreach_devices() -> list[str]:
    """Device types with torch's foreach optimizer kernels (``foreach=True``)."""
    from torch.optim.optimizer import _get_foreach_kernels_supported_devices

    return _get_foreach_kernels_supported_devices()


def optuna_params(overrides: list[str]) -> tuple[dict, dict]:
    """The Optuna sweeper's reading of ``hydra.sweeper.params`` overrides: (search space of distributions,
    fixed values)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    return create_params_from_overrides(overrides)


def suggest(trial: Any, name: str, distribution: Any) -> Any:
    """Suggest ``name`` in Optuna ``trial`` from ``distribution`` (one of the objects :func:`optuna_params` returns)
    and return the value, as hydra-optuna-sweeper does for ``hydra.sweeper.params``: Optuna's public
    ``suggest_float``/``suggest_int``/``suggest_categorical`` take bounds, not distribution objects."""
    return trial._suggest(name, distribution)


def grid(overrides: list) -> list[list[str]]:
    """The jobs of a sweep's parsed overrides (``OverridesParser.parse_overrides``): the Cartesian product of its
    comma lists (``sweep``, ``range``, ``glob``), one ``key=value`` list per job, in the order and spelling of Hydra's
    BasicSweeper, whose static ``split_arguments`` this calls (imported here: the dropout methods import this module
    and stay free of Hydra).

    Raises:
        hydra.errors.HydraException: for a sweep BasicSweeper cannot expand (an ``interval``)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    (jobs,) = BasicSweeper.split_arguments(overrides, None)
    return jobs


def execute_job(
    idx: int, overrides: Any, hydra_context: Any, config: Any, task_function: Any, singleton_state: Any
) -> Any:
    """Run job ``idx`` with ``overrides`` in this process as hydra-joblib-launcher's workers do (its private
    ``_core.execute_job``: restore Hydra's ``singleton_state``, compose the job's config from ``config``, then
    Hydra's ``run_job`` of ``task_function``); returns its ``JobReturn``. The ``gpu_pool`` launcher submits this to
    its per-slot worker processes (:mod:`dropout_lab.pool`); the plugin offers no public runner."""
    from hydra_plugins.hydra_joblib_launcher._core import execute_job as run

    return run(idx, overrides, hydra_context, config, task_function, singleton_state)
