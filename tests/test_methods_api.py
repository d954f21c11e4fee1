"""dropout_lab.methods: the layer methods as plain nn.Modules, trained in a plain PyTorch loop (no Lightning)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from dropout_lab.methods import create, layer_methods

EXPECTED = {"standard", "gaussian", "spatial", "flipover", "maxdropout", "biased", "sector", "none"}


def test_the_layer_methods_are_those_without_hooks_or_loss_terms():
    found = set(layer_methods())
    assert EXPECTED <= found and not found & {"dropblock", "concrete", "curriculum", "taylor", "edropout", "lrp"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_layer_drops_in_training_and_is_the_identity_in_eval(name):
    layer = create(name, num_features=64)
    x = torch.randn(256, 64) + 3.0
    assert torch.equal(layer.eval()(x), x)
    y = layer.train()(x)
    assert y.shape == x.shape and (name == "none") == torch.equal(y, x)
    stats = layer.stats()
    assert int(layer.recorded) == 1 and 0.0 <= stats["drop_fraction"] <= 1.0 and 0.0 <= stats["p_eq"] <= 1.0


def test_arguments_replace_the_yaml_defaults_and_bad_keys_are_refused():
    assert create("standard", p=0.2).p == 0.2 and create("flipover", flip_factor=0.5).flip_factor == 0.5
    with pytest.raises(
        ValueError, match="'taylor' needs the harness's training hooks or loss term.*the layer methods are"
    ):
        create("taylor", num_features=8)
    with pytest.raises(ValueError, match="'flipper': unknown"):
        create("flipper")


def test_a_plain_pytorch_loop_trains_with_the_layers_without_lightning():
    code = """
import sys, torch
from torch import nn
from dropout_lab.methods import create
torch.manual_seed(0)
x = torch.randn(512, 20); y = (x[:, :5].sum(1) > 0).long()
net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), create("flipover", p=0.2, num_features=64), nn.Linear(64, 64), nn.ReLU(),
                    create("standard", p=0.3, num_features=64), nn.Linear(64, 2))
opt = torch.optim.Adam(net.parameters(), 1e-2)
def loss():
    return nn.functional.cross_entropy(net(x), y)
net.eval(); before = loss().item(); net.train()
for _ in range(100):
    opt.zero_grad(); l = loss(); l.backward(); opt.step()
net.eval(); after = loss().item()
acc = (net(x).argmax(1) == y).float().mean().item()
print(before, after, acc, "pytorch_lightning" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after, acc, lightning = out.stdout.split()
    assert float(after) < 0.5 * float(before) and float(acc) > 0.9 and lightning == "False"
