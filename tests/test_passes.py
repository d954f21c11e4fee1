"""extra_pass: extra forwards/backwards that leave BatchNorm statistics, train/eval flags and optimizer gradients untouched."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dropout_lab.dropout import passes


def test_extra_pass_leaves_bn_modes_and_grads_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    model.train()
    model[3].eval()  # a mixed mode that must come back as found
    x = torch.randn(16, 4)
    F.cross_entropy(model(x), torch.zeros(16, dtype=torch.long)).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    bn = {k: v.clone() for k, v in model[1].state_dict().items()}
    for train in (None, True, False):
        with passes.extra_pass(model, train=train, grad=True):
            assert passes.active()
            loss = model(x).square().sum()
            loss.backward()  # even a stray backward must not leak
        with passes.extra_pass(model, train=train):
            assert not torch.is_grad_enabled()
            model(x)
    assert not passes.active()
    assert [m.training for m in model] == [True, True, True, False]
    for k, v in model[1].state_dict().items():
        assert torch.equal(v, bn[k]), k
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)
