"""lrp: LRP-epsilon relevance and the top-p relevance cut (docs/methods/lrp.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dropout_lab.config import attach
from dropout_lab.dropout.lrp import site_relevance
from dropout_lab.models.lenet import LeNet5
from model_nets import Net, _attach, _grads_and_bn_unchanged, smoke


def test_lrp_relevance_conserved_layer_to_layer():
    """Bias-free LeNet5, eps ~ 0: the relevance at every site sums to the target logits (Bach et al. 2015, eq. 2)."""
    torch.manual_seed(0)
    model = LeNet5()
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            nn.init.zeros_(mod.bias)
    methods = attach(
        model,
        {"_target_": "dropout_lab.dropout.lrp.LRPDropout", "_partial_": True, "name": "lrp", "p": 0.5, "sites": "all"},
    )
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    total = model.eval()(x).gather(1, y.view(-1, 1)).sum()
    rel = site_relevance(model, methods, x, y, eps=1e-9)
    assert [r.shape[0] for r in rel] == [6, 16, 120, 84]
    for r in rel:
        assert torch.allclose(r.sum(), total, rtol=1e-4), (r.sum(), total)


def test_lrp_epsilon_rule_matches_explicit_formula():
    torch.manual_seed(0)
    model = Net()
    (m,) = _attach(model, _target_="dropout_lab.dropout.lrp.LRPDropout", name="lrp", p=0.25)
    x, y, eps = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1]), 0.1
    rel = site_relevance(model, [m], x, y, eps)[0]
    a = torch.relu(model.fc1(x))
    z = model.fc2(a)
    out = torch.zeros_like(z).scatter(1, y.view(-1, 1), z.gather(1, y.view(-1, 1)))  # R at the logits
    s = out / (z + eps * torch.where(z >= 0, 1.0, -1.0))
    expected = (a * (s @ model.fc2.weight)).sum(0)  # R_i = sum_j a_i w_ji R_j / (z_j + eps sign z_j)
    assert torch.allclose(rel, expected, atol=1e-5)


def test_lrp_drops_top_p_by_absolute_relevance_and_eval_identity():
    model = Net()
    (m,) = _attach(model, _target_="dropout_lab.dropout.lrp.LRPDropout", name="lrp", p=0.25)
    m.set_mask(torch.tensor([0.1, -5.0, 0.2, 3.0, -0.3, 0.0, 1.0, 0.5]))
    assert m.mask.tolist() == [1, 0, 1, 0, 1, 1, 1, 1]
    x = torch.rand(3, 8)
    assert torch.allclose(m.train()(x), x * m.mask * 8 / 6)
    assert m.stats()["drop_fraction"] == pytest.approx(0.25)
    assert torch.equal(m.eval()(x), x)


def test_lrp_pass_leaves_batchnorm_stats_and_grads_unchanged():
    model = Net(bn=True)
    methods = _attach(model, _target_="dropout_lab.dropout.lrp.LRPDropout", name="lrp", p=0.25)
    _grads_and_bn_unchanged(
        model, lambda: site_relevance(model, methods, torch.randn(7, 6), torch.zeros(7, dtype=torch.long), 1e-2)
    )


@pytest.mark.slow
def test_smoke_training(tmp_path):
    metrics, cfg = smoke("lrp", [], tmp_path)
    # 7 of 8 steps (none before the first relevance pass) drop exactly p * 120 units
    assert metrics["dropout/drop_fc1/drop_fraction"] == pytest.approx(cfg.dropout.p * 7 / 8)
