"""The one place where dropout-lab reaches into a library's private internals, each shim with the measurement
that justifies it and a test in tests/test_compat.py (docs/bench_harness.md, "flagship regime").

* :func:`fast_result_to`: Lightning's ``self.log`` moves the logged metric's stored state to the value's
  device on every call (``_ResultMetric.to``: ``apply_to_collection`` over its ``__dict__``, recursing into
  its metadata dataclasses), about 0.5 ms a call on CPU even when nothing moves. A flagship job logs 14
  epoch-level values per epoch (train, validation, the dropout statistics): 0.35 s of a 7.7-s job
  (7.67 -> 7.28 s, medians of 5 alternating rounds, this 2-core CPU). The shim returns at once when every
  tensor the metric holds is already on that device, and defers to Lightning otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.trainer.connectors.logger_connector.result import _ResultMetric

_lightning_to = _ResultMetric.to


def _on(value: Any, device: torch.device) -> bool:
    return isinstance(value, torch.Tensor) and value.device == device


def fast_result_to(self: _ResultMetric, *args: Any, **kwargs: Any) -> _ResultMetric:
    """``_ResultMetric.to(device)``, skipped when the metric's tensors are all on ``device`` already (only plain
    tensors: a metric holding a torchmetrics ``Metric``, or any other call form, goes to Lightning's own)."""
    device = args[0] if len(args) == 1 and not kwargs else None
    if isinstance(device, (str, torch.device)):
        device = torch.device(device)
        held = [v for v in self.__dict__.values() if isinstance(v, (torch.Tensor, torch.nn.Module))]
        if held and all(_on(v, device) for v in held):
            return self
    return _lightning_to(self, *args, **kwargs)


def install() -> None:
    """Install the shims (idempotent); ``dropout_lab.module`` calls it on import."""
    _ResultMetric.to = fast_result_to
