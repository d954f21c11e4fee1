"""Small networks and helpers shared by the tests of the score-driven methods (tests/test_scored.py and the per-method files)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from dropout_lab.config import attach
from dropout_lab.dropout.base import DropoutContext
from dropout_lab.dropout.fmre import FMREDropout
from dropout_lab.dropout.grad_dynamic import GradDynamicDropout
from dropout_lab.dropout.l2_dynamic import L2DynamicDropout
from dropout_lab.dropout.obd import OBDDropout
from dropout_lab.dropout.sites import Site
from dropout_lab.dropout.taylor import TaylorDropout

KEYS = ["grad_dynamic", "l2_dynamic", "taylor", "obd", "fmre"]


CLASSES = {
    "grad_dynamic": GradDynamicDropout,
    "l2_dynamic": L2DynamicDropout,
    "taylor": TaylorDropout,
    "obd": OBDDropout,
    "fmre": FMREDropout,
}


class Net(nn.Module):
    """4 -> 6 hidden (fc site) -> 3; hidden unit 0 has zero outgoing weights, unit 5 the largest incoming ones."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)
        self.drop = Site("fc", 6, prev="fc1", next="fc2")
        with torch.no_grad():
            self.fc2.weight[:, 0] = 0
            self.fc1.weight[5] *= 10

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def install(key, net=None, **kwargs):
    net = net or Net()
    (method,) = attach(
        net,
        {
            "_target_": f"{CLASSES[key].__module__}.{CLASSES[key].__name__}",
            "_partial_": True,
            "name": key,
            "p": 0.3,
            "sites": "fc",
            "ema": 0.0,
            **kwargs,
        },
    )
    return net, method


def step(net, method, x, y):
    """One training step's worth of scoring: controller hook (obd), forward, backward."""
    ctx = DropoutContext(
        global_step=0, epoch=0, max_steps=1, dataset_size=len(x), module=SimpleNamespace(model=net), batch=(x, y)
    )
    method.on_train_batch_start(ctx)
    F.cross_entropy(net(x), y).backward()
    net.zero_grad()


def batch(n=64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
