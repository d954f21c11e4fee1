"""Score-driven seed-000 methods: grad_dynamic, l2_dynamic, taylor, obd, fmre."""

from __future__ import annotations

import gc
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import SMOKE, make_cfg
from torch import nn

from dropout_lab.dropout.base import DropoutContext, SiteSpec
from dropout_lab.dropout.fmre import FMREDropout
from dropout_lab.dropout.grad_dynamic import GradDynamicDropout
from dropout_lab.dropout.l2_dynamic import L2DynamicDropout
from dropout_lab.dropout.obd import OBDDropout, hessian_saliency
from dropout_lab.config import attach
from dropout_lab.dropout.sites import Site
from dropout_lab.dropout.taylor import TaylorDropout
from dropout_lab.models.lenet import LeNet5
from tolerance import binomial_tol

KEYS = ["grad_dynamic", "l2_dynamic", "taylor", "obd", "fmre"]
CLASSES = {"grad_dynamic": GradDynamicDropout, "l2_dynamic": L2DynamicDropout, "taylor": TaylorDropout, "obd": OBDDropout, "fmre": FMREDropout}


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
    (method,) = attach(net, {"_target_": f"{CLASSES[key].__module__}.{CLASSES[key].__name__}", "_partial_": True, "name": key, "p": 0.3, "sites": "fc", "ema": 0.0, **kwargs})
    return net, method


def step(net, method, x, y):
    """One training step's worth of scoring: controller hook (obd), forward, backward."""
    ctx = DropoutContext(global_step=0, epoch=0, max_steps=1, dataset_size=len(x), module=SimpleNamespace(model=net), batch=(x, y))
    method.on_train_batch_start(ctx)
    F.cross_entropy(net(x), y).backward()
    net.zero_grad()


def batch(n=64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("key", ["taylor", "obd", "fmre"])
def test_unit_without_outgoing_weights_scores_zero(key):
    net, m = install(key, **({"probes": 64} if key == "obd" else {}))
    step(net.train(), m, *batch())
    assert bool(m.scored)
    assert float(m.score[0]) == 0.0
    assert torch.all(m.score[1:] > 0)
    assert float(m.rates[0]) == pytest.approx(m.hi)  # drop_target=low: the useless unit is dropped most


def test_l2_larger_incoming_weights_larger_score():
    net, m = install("l2_dynamic")
    net.train()(batch()[0])
    assert torch.allclose(m.score, net.fc1.weight.norm(dim=1))
    assert int(m.score.argmax()) == 5 and float(m.rates[5]) == pytest.approx(m.lo)


@pytest.mark.parametrize("target", ["low", "high"])
def test_drop_target_reverses_which_unit_is_dropped_more(target):
    torch.manual_seed(0)
    net, m = install("l2_dynamic", drop_target=target)
    m.train()
    m(torch.ones(1, 6))  # score from the weights
    n = 20000
    dropped = (m(torch.ones(n, 6)) == 0).float().mean(0)
    lo, hi = float(m.rates.min()), float(m.rates.max())
    big = float(dropped[5])  # unit with the largest incoming weights
    expected = lo if target == "low" else hi
    assert abs(big - expected) < binomial_tol(expected, n)


def test_fmre_equals_brute_force_removal_error():
    torch.manual_seed(0)
    lenet = LeNet5()
    x = torch.randn(5, 1, 28, 28)
    feats = {"drop_conv1": lenet.pool(lenet.act(lenet.conv1(x)))}
    feats["drop_conv2"] = lenet.pool(lenet.act(lenet.conv2(feats["drop_conv1"])))
    feats["drop_fc1"] = lenet.act(lenet.fc1(feats["drop_conv2"].flatten(1)))
    for name, a in feats.items():
        spec = getattr(lenet, name).spec(lenet)
        m = FMREDropout(0.3, spec, sub_batch=5)
        nxt = lambda t: spec.next(t.flatten(1) if isinstance(spec.next, nn.Linear) else t)  # noqa: E731
        brute = []
        for j in range(spec.num_features):
            cut = a.clone()
            cut[:, j] = 0
            brute.append((nxt(a) - nxt(cut)).flatten(1).square().sum(1).mean())
        with torch.no_grad():
            assert torch.allclose(m.score_input(a), torch.stack(brute).detach(), rtol=1e-4, atol=1e-6), name


def test_obd_saliency_matches_exact_hessian_diagonal():
    """Hutchinson's E[v * Hv] converges to diag(H); checked on a 6x4 weight with 400 probes."""
    net = Net().eval()
    x, y = batch(32)
    w = net.fc1.weight

    def loss_of(wflat):
        h = torch.relu(F.linear(x, wflat.view(6, 4), net.fc1.bias))
        return F.cross_entropy(net.fc2(h), y)

    H = torch.autograd.functional.hessian(loss_of, w.detach().flatten())
    exact = (0.5 * H.diagonal().view(6, 4) * w.detach().square()).sum(1).clamp(min=0)
    torch.manual_seed(0)
    probes = 400
    (est,) = hessian_saliency(net, [w], x, y, probes)
    # per unit, the estimate is a mean of `probes` i.i.d. terms sum_k 0.5 w_k^2 v_k (Hv)_k, whose std is
    # bounded by sqrt(sum_k (0.5 w_k^2)^2 sum_{l != k} H_kl^2) (Cauchy-Schwarz on the covariance)
    off = H - torch.diag(H.diagonal())
    bound = torch.sqrt(((0.5 * w.detach().square().flatten()) ** 2).view(6, 4).sum(1) * off.square().sum(1).view(6, 4).sum(1))
    assert torch.all((est - exact).abs() <= 5 * bound / probes**0.5 + 1e-7)
    assert est[0] == 0.0


def test_obd_one_hessian_pass_for_all_sites_and_grads_untouched():
    torch.manual_seed(0)
    lenet = LeNet5()
    methods = attach(lenet, {"_target_": "dropout_lab.dropout.obd.OBDDropout", "_partial_": True, "name": "obd", "p": 0.3, "sites": "fc"})
    assert len(methods) == 2 and methods[1]._peers is methods
    lenet.train()
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    F.cross_entropy(lenet(x), y).backward()
    grads = [p.grad.clone() for p in lenet.parameters()]
    ctx = DropoutContext(global_step=0, epoch=0, max_steps=1, dataset_size=8, module=SimpleNamespace(model=lenet), batch=(x, y))
    for m in methods:
        m.on_train_batch_start(ctx)
    assert all(bool(m.scored) for m in methods) and lenet.training
    assert all(torch.equal(p.grad, g) for p, g in zip(lenet.parameters(), grads))


@pytest.mark.parametrize("key", KEYS)
def test_rates_in_range_eval_identity_and_buffers(key):
    net, m = install(key, drop_target="high")
    for _ in range(3):
        step(net.train(), m, *batch())
    assert torch.all((m.rates >= m.lo - 1e-7) & (m.rates <= m.hi + 1e-7))
    assert (m.lo, m.hi) == pytest.approx((0.1, 0.5))
    assert 0.0 < m.stats()["drop_fraction"] < 1.0
    x = torch.randn(5, 6)
    assert m.eval()(x) is x
    assert {"drop.method.score", "drop.method.rates", "drop.method.scored"} <= set(net.state_dict())


@pytest.mark.parametrize("key", ["grad_dynamic", "taylor"])
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_grad_capture_keeps_nothing_larger_than_per_unit(key):
    net, m = install(key)
    x, y = batch(37)  # a batch size no other tensor here has
    step(net.train(), m, x, y)
    del x, y
    gc.collect()
    assert not [t for t in gc.get_objects() if isinstance(t, torch.Tensor) and t.ndim and t.shape[0] == 37]
    assert all(b.numel() <= 6 for b in m.buffers())


def test_neighbour_errors_name_the_key():
    spec = SiteSpec("s", "fc", 6, prev=nn.ReLU(), next=nn.ReLU())
    for cls, key in [(L2DynamicDropout, "l2_dynamic"), (OBDDropout, "obd"), (FMREDropout, "fmre")]:
        with pytest.raises(ValueError, match=f"dropout={key}"):
            cls(0.3, spec)


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS)
def test_smoke_training_on_real_mnist(key, tmp_path):
    """8 batches of 64 on real MNIST: the run completes, every site is scored, and the realised drop
    fraction matches the mean rate p = 0.3 (rank normalisation keeps the mean rate at p exactly)."""
    from dropout_lab.train import train

    metrics = train(make_cfg([*SMOKE, f"dropout={key}"], tmp_path))
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"
    for site in ("drop_fc1", "drop_fc2"):
        assert metrics[f"dropout/{site}/rate_mean"] == pytest.approx(0.3, abs=1e-6)
        assert metrics[f"dropout/{site}/score_max"] > 0
        assert metrics[f"dropout/{site}/rate_max"] > metrics[f"dropout/{site}/rate_min"]
    assert abs(metrics["dropout/drop_fraction"] - 0.3) < binomial_tol(0.3, 8 * 64 * 84)
