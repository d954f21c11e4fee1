"""Helpers shared by the layer-method tests: a bare :class:`SiteSpec`, a :class:`DropoutContext` at a
given step, and a LeNet5 with a configured method attached."""

from __future__ import annotations

from torch import nn

from conftest import make_cfg
from dropout_lab.config import attach
from dropout_lab.dropout import DropoutContext, SiteSpec
from dropout_lab.models import LeNet5

P = 0.3


def spec(kind: str = "fc", num_features: int = 64, next: nn.Module | None = None) -> SiteSpec:
    return SiteSpec("site", kind, num_features, None, next)


def ctx(step: int, max_steps: int = 1000) -> DropoutContext:
    return DropoutContext(global_step=step, epoch=0, max_steps=max_steps, dataset_size=1000, module=None)


def lenet_with(key: str, **kw) -> tuple[LeNet5, list]:
    model = LeNet5()
    overrides = [f"dropout={key}", *(f"dropout.{k}={v}" for k, v in kw.items())]
    return model, attach(model, make_cfg(overrides, "unused").dropout)
