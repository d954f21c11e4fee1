"""fmre: the score equals the brute-force removal error of the next layer's output (docs/methods/fmre.md)."""

from __future__ import annotations

import torch
from torch import nn

from dropout_lab.dropout.fmre import FMREDropout
from dropout_lab.models.lenet import LeNet5


def test_fmre_equals_brute_force_removal_error():
    torch.manual_seed(0)
    lenet = LeNet5()
    x = torch.randn(5, 1, 28, 28)
    feats = {"drop_conv1": lenet.pool(lenet.act(lenet.conv1(x)))}
    feats["drop_conv2"] = lenet.pool(lenet.act(lenet.conv2(feats["drop_conv1"])))
    feats["drop_fc1"] = lenet.act(lenet.fc1(feats["drop_conv2"].flatten(1)))
    for name, a in feats.items():
        spec = getattr(lenet, name).spec(lenet)
        m = FMREDropout.spec.build(spec, p=0.3, sub_batch=5)
        nxt = lambda t: spec.next(t.flatten(1) if isinstance(spec.next, nn.Linear) else t)  # noqa: E731
        brute = []
        for j in range(spec.num_features):
            cut = a.clone()
            cut[:, j] = 0
            brute.append((nxt(a) - nxt(cut)).flatten(1).square().sum(1).mean())
        with torch.no_grad():
            assert torch.allclose(m.score_input(a), torch.stack(brute).detach(), rtol=1e-4, atol=1e-6), name
