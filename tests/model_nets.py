"""A small network and a smoke run shared by the sparse_mask, lrp and shapley tests."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from conftest import SMOKE, make_cfg
from dropout_lab.config import attach
from dropout_lab.dropout.sites import Site


class Net(nn.Module):
    """Linear(6, 8) - BN - ReLU - site (8 units) - Linear(8, 3)."""

    def __init__(self, bn: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8, bias=bias)
        self.bn = nn.BatchNorm1d(8) if bn else nn.Identity()
        self.drop = Site("fc", 8, prev="fc1", next="fc2")
        self.fc2 = nn.Linear(8, 3, bias=bias)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def _attach(model, **node):
    return attach(model, {"sites": "fc", "_partial_": True, **node})


def _grads_and_bn_unchanged(model: nn.Module, run) -> None:
    model.train()
    model(torch.randn(32, 6)).sum().backward()  # BN stats moved, grads present
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    bn = {k: v.clone() for k, v in model.bn.state_dict().items()}
    run()
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())
    assert all(torch.equal(v, bn[k]) for k, v in model.bn.state_dict().items())
    assert model.training and model.drop.method.training


def smoke(key: str, extra: list[str], tmp_path: Path) -> tuple[dict, object]:
    """Train on a real MNIST subset (N = 512) with ``dropout=key``; returns (metrics, cfg)."""
    from dropout_lab.train import train

    cfg = make_cfg(SMOKE + [f"dropout={key}", *extra], tmp_path)
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["test/loss"])
    assert 0.0 < metrics["dropout/drop_fraction"] < 1.0
    return metrics, cfg
