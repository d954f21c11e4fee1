"""Layer-level methods of part A: none, standard, gaussian, spatial, variational, dropconnect,
dropblock, curriculum, concrete. Each test checks a property of the paper's definition with
tolerances from :mod:`tolerance` (fixed seeds)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import SMOKE, make_cfg
from hydra.utils import instantiate
from tolerance import binomial_tol, mean_tol
from torch import nn

from dropout_lab.config import attach
from dropout_lab.dropout import DropoutContext, NoDropout, SiteSpec
from dropout_lab.dropout.concrete import ConcreteDropout
from dropout_lab.dropout.curriculum import CurriculumDropout
from dropout_lab.dropout.dropblock import DropBlock
from dropout_lab.dropout.dropconnect import DropConnect
from dropout_lab.dropout.gaussian import GaussianDropout
from dropout_lab.dropout.spatial import SpatialDropout
from dropout_lab.dropout.standard import StandardDropout
from dropout_lab.dropout.variational import VariationalDropout
from dropout_lab.models import LeNet5
from dropout_lab.module import Classifier

P = 0.3


def spec(kind: str = "fc", num_features: int = 64, next: nn.Module | None = None) -> SiteSpec:
    return SiteSpec("site", kind, num_features, None, next)


def ctx(step: int, max_steps: int = 1000) -> DropoutContext:
    return DropoutContext(global_step=step, epoch=0, max_steps=max_steps, dataset_size=1000, module=None)


# Unbiased Bernoulli methods: (method, input shape, number of independent mask values per forward).
BERNOULLI = {
    "standard": (lambda: StandardDropout(P, spec()), (256, 64), 256 * 64),
    "spatial": (lambda: SpatialDropout(P, spec("conv", 16)), (64, 16, 6, 6), 64 * 16),
    "variational_seq": (lambda: VariationalDropout(P, spec()), (64, 12, 32), 64 * 32),
    "variational_fc": (lambda: VariationalDropout(P, spec()), (256, 64), 256 * 64),
}


@pytest.mark.parametrize("key", BERNOULLI)
def test_bernoulli_methods_mean_and_drop_fraction(key):
    """E[y] = x (inverted scaling) and realised drop fraction = p, over many masks."""
    torch.manual_seed(0)
    make, shape, n_mask = BERNOULLI[key]
    method, x, reps = make().train(), torch.ones(shape), 20
    ys = torch.stack([method(x) for _ in range(reps)])
    assert abs(ys.mean().item() - 1.0) < mean_tol(math.sqrt(P / (1 - P)), n_mask * reps)
    assert abs(method.stats()["drop_fraction"] - P) < binomial_tol(P, n_mask * reps)
    values = ys.unique()
    assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(1 / (1 - P))


def test_curriculum_drop_fraction_follows_schedule():
    torch.manual_seed(0)
    method, x = CurriculumDropout(P, spec(), gamma=1e-3).train(), torch.ones(256, 64)
    assert method(x) is x and method.stats()["drop_fraction"] == 0.0  # t = 0: no dropout
    method.reset_stats()
    method.on_train_batch_start(ctx(700))
    p_t = P * (1 - math.exp(-0.7))
    ys = torch.stack([method(x) for _ in range(20)])
    assert abs(method.stats()["drop_fraction"] - p_t) < binomial_tol(p_t, x.numel() * 20)
    assert abs(ys.mean().item() - 1.0) < mean_tol(math.sqrt(p_t / (1 - p_t)), x.numel() * 20)


@pytest.mark.parametrize("step", [0, 1, 250, 1000, 10_000])
def test_curriculum_schedule_is_morerio_formula(step):
    """theta(t) = (1 - theta_bar) exp(-gamma t) + theta_bar, theta_bar = 1 - p."""
    method, gamma, theta_bar = CurriculumDropout(0.5, spec(), gamma=2e-3), 2e-3, 0.5
    method.on_train_batch_start(ctx(step))
    assert method.keep_prob(step) == pytest.approx((1 - theta_bar) * math.exp(-gamma * step) + theta_bar, abs=1e-12)
    assert method.current_p == pytest.approx(1 - method.keep_prob(step), abs=1e-12)


def test_curriculum_rejects_bad_gamma():
    with pytest.raises(ValueError, match="dropout.gamma"):
        CurriculumDropout(P, spec(), gamma=0.0)


def test_gaussian_mean_and_noise_variance():
    """y = x * N(1, p/(1-p)): mean x, and the realised noise variance gives equivalent_p = p."""
    torch.manual_seed(0)
    method, x, reps = GaussianDropout(P, spec()).train(), torch.ones(256, 64), 10
    ys = torch.stack([method(x) for _ in range(reps)])
    alpha, n = P / (1 - P), x.numel() * reps
    assert abs(ys.mean().item() - 1.0) < mean_tol(math.sqrt(alpha), n)
    assert abs(ys.var().item() - alpha) < mean_tol(math.sqrt(2) * alpha, n)  # var of a normal sample variance: 2 s^4 / n
    stats = method.stats()
    assert stats["drop_fraction"] == 0.0  # no unit is zeroed
    # equivalent_p = v / (1 + v) is monotone in v: map the variance tolerance through it
    tol = mean_tol(math.sqrt(2) * alpha, n)
    assert (alpha - tol) / (1 + alpha - tol) < stats["equivalent_p"] < (alpha + tol) / (1 + alpha + tol)


def lenet_with(key: str, **kw) -> tuple[LeNet5, list]:
    model = LeNet5()
    overrides = [f"dropout={key}", *(f"dropout.{k}={v}" for k, v in kw.items())]
    return model, attach(model, make_cfg(overrides, "unused").dropout)


ALL_KEYS = ["none", "standard", "gaussian", "spatial", "variational", "dropconnect", "dropblock", "curriculum", "concrete"]


@pytest.mark.parametrize("key", ALL_KEYS)
def test_eval_is_identity(key):
    """In eval mode every method leaves the network's function unchanged (inverted scaling)."""
    torch.manual_seed(0)
    model, methods = lenet_with(key)
    reference = LeNet5()
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if "method" not in k})
    x = torch.randn(8, 1, 28, 28)
    for m in methods:  # move schedules off their t = 0 value
        m.on_train_batch_start(ctx(500))
    assert torch.equal(model.eval()(x), reference.eval()(x))
    assert model.train()(x).shape == (8, 10)


def test_none_is_identity_in_training():
    method, x = NoDropout(0.0, spec()).train(), torch.randn(4, 64)
    assert method(x) is x and method.stats()["drop_fraction"] == 0.0


@pytest.mark.parametrize("make", [
    lambda: StandardDropout(P, spec()),
    lambda: SpatialDropout(P, spec("conv", 8)),
    lambda: VariationalDropout(P, spec()),
    lambda: DropBlock(P, spec("conv", 8), block_size=3, ramp_steps=0),
])
def test_dropped_units_get_zero_gradient(make):
    torch.manual_seed(0)
    method = make().train()
    x = torch.ones(16, 8, 7, 7, requires_grad=True)
    y = method(x)
    y.sum().backward()
    dropped = y == 0
    assert dropped.any() and (~dropped).any()
    assert torch.all(x.grad[dropped] == 0) and torch.all(x.grad[~dropped] > 0)
    assert torch.allclose(x.grad, y.detach())  # dy/dx = the scaled mask


def test_spatial_drops_whole_channels():
    torch.manual_seed(0)
    y = SpatialDropout(P, spec("conv", 16)).train()(torch.ones(32, 16, 5, 5))
    flat = y.flatten(2)
    assert torch.all(flat == flat[..., :1])  # constant over H x W in every (sample, channel)
    assert (flat[..., 0] == 0).any() and (flat[..., 0] != 0).any()
    assert not torch.all(y == y[:1])  # masks differ between samples


def test_variational_mask_constant_along_axis():
    torch.manual_seed(0)
    seq = VariationalDropout(P, spec()).train()(torch.ones(16, 10, 32))
    assert torch.all(seq == seq[:, :1]) and (seq == 0).any()  # (N, T, F): one mask per sequence, all T
    maps = VariationalDropout(P, spec("conv", 8)).train()(torch.ones(16, 8, 5, 5))
    assert torch.all(maps == maps[:, :, :1, :1])  # (N, C, H, W): shared over H, W
    across = VariationalDropout(P, spec("conv", 8), shared_dims=[1]).train()(torch.ones(16, 8, 5, 5))
    assert torch.all(across == across[:, :1]) and not torch.all(across == across[:, :, :1, :1])
    with pytest.raises(ValueError, match="dropout.shared_dims"):
        VariationalDropout(P, spec(), shared_dims=[0])
    with pytest.raises(ValueError, match="dropout.shared_dims"):
        VariationalDropout(P, spec(), shared_dims=[3]).train()(torch.ones(4, 8))


# ---------------------------------------------------------------- DropConnect


def dropconnect(in_features=64, out_features=32, **kw) -> tuple[DropConnect, nn.Linear]:
    linear = nn.Linear(in_features, out_features)
    return DropConnect(P, spec(num_features=in_features, next=linear), **kw), linear


def test_dropconnect_masks_weights_not_activations():
    """Site activations pass unchanged; the Linear's weights are masked inside autograd, so only kept
    weights get gradient, and the output is F.linear with the masked, rescaled weights."""
    torch.manual_seed(0)
    method, linear = dropconnect()
    method.train()
    x = torch.ones(16, 64)
    assert method(x) is x
    w0 = linear.weight.detach().clone()
    out = linear(method(x))
    out.sum().backward()
    assert torch.equal(linear.weight.detach(), w0)  # the parameter is never overwritten
    kept = linear.weight.grad != 0
    n = kept.numel()
    assert abs((~kept).float().mean().item() - P) < binomial_tol(P, n)
    assert torch.allclose(linear.weight.grad[kept], torch.full((int(kept.sum()),), 16 / (1 - P)))
    assert torch.allclose(out, F.linear(x, w0 * kept / (1 - P), linear.bias.detach()), atol=1e-5)
    assert method.stats()["drop_fraction"] == pytest.approx((~kept).float().mean().item())
    assert torch.all(out == out[:1])  # per-batch default: one mask for all samples


def test_dropconnect_per_sample_masks_are_unbiased():
    """Paper form: one mask per example; E[u] = W v + b over examples."""
    torch.manual_seed(0)
    method, linear = dropconnect(per_sample=True)
    method.train()
    nn.init.ones_(linear.weight), nn.init.zeros_(linear.bias)
    out = linear(torch.ones(512, 64))
    assert not torch.all(out == out[:1])
    # out_i = sum_j m_ij / q: mean 64, std sqrt(64 p / q), i.i.d. over 512 x 32 (sample, unit) pairs
    assert abs(out.mean().item() - 64) < mean_tol(math.sqrt(64 * P / (1 - P)), out.numel())
    assert abs(method.stats()["drop_fraction"] - P) < binomial_tol(P, 512 * 32 * 64)


def test_dropconnect_gaussian_inference_moment_matching():
    """Eval with inference=gaussian: E[relu(u)], u ~ N(mu, sigma^2), mu = W v + b,
    sigma^2 = p/(1-p) (W*W)(v*v) (Wan et al. Algorithm 2), against the closed form."""
    torch.manual_seed(0)
    method, linear = dropconnect(in_features=16, out_features=8, inference="gaussian", inference_samples=20000)
    method.eval()
    v = torch.randn(4, 16)
    out = linear(v)
    with torch.no_grad():
        mu = F.linear(v, linear.weight, linear.bias)
        sigma = (F.linear(v * v, linear.weight**2) * P / (1 - P)).sqrt()
        normal = torch.distributions.Normal(0.0, 1.0)
        expected = mu * normal.cdf(mu / sigma) + sigma * normal.log_prob(mu / sigma).exp()
        # std of relu(u) <= sigma
        assert torch.all((out - expected).abs() < mean_tol(1.0, 20000) * sigma)
    method.inference = "mean"
    assert torch.equal(linear(v), mu)


def test_dropconnect_needs_a_following_linear():
    with pytest.raises(ValueError, match="dropout.sites=fc"):
        DropConnect(P, spec("conv", 6, next=nn.Conv2d(6, 16, 5)))
    with pytest.raises(ValueError, match="followed by nothing"):
        DropConnect(P, spec())
    with pytest.raises(ValueError, match="dropout.inference"):
        dropconnect(inference="sample")


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="dropout.sites=fc"):
        lenet_with("dropconnect", sites="conv")  # drop_conv1 is followed by conv2
    with pytest.raises(ValueError, match="dropout.sites=conv"):
        lenet_with("dropblock", sites="fc")
    with pytest.raises(ValueError, match="dropout.block_size"):
        lenet_with("dropblock", block_size=4)


# ---------------------------------------------------------------- DropBlock


def expected_dropblock_fraction(p: float, size: int, bs: int) -> float:
    """Mean over pixels of P(dropped) = 1 - (1 - gamma)^k, k = valid centres whose block covers the
    pixel, gamma = p H W / (bs^2 (H - bs + 1)(W - bs + 1)) (Ghiasi et al. eq. 1)."""
    cells = size - bs + 1
    gamma = p * size * size / (bs * bs * cells * cells)
    cover = [min(i, cells - 1) - max(0, i - bs + 1) + 1 for i in range(size)]
    return sum(1 - (1 - gamma) ** (a * b) for a in cover for b in cover) / size**2


@pytest.mark.parametrize(("size", "block_size", "used"), [(14, 3, 3), (5, 7, 5), (4, 5, 3), (8, 5, 5), (2, 3, 1)])
def test_dropblock_block_size_rule_and_drop_fraction(size, block_size, used):
    """Largest odd block <= the map; realised mean drop fraction = the paper's gamma construction."""
    torch.manual_seed(0)
    method = DropBlock(P, spec("conv", 32), block_size=block_size, ramp_steps=0).train()
    assert method.block_for(size, size) == used
    x = torch.ones(32, 32, size, size)
    per_channel = torch.cat([(method(x) == 0).float().mean((2, 3)).flatten() for _ in range(5)])
    expected = expected_dropblock_fraction(P, size, used)
    assert abs(per_channel.mean().item() - expected) < mean_tol(per_channel.std().item(), per_channel.numel())
    assert method.stats()["drop_fraction"] == pytest.approx(per_channel.mean().item(), rel=1e-5)


def test_dropblock_drops_contiguous_square_blocks():
    """The dropped set of each channel is a union of whole bs x bs squares inside the map
    (morphological opening leaves it unchanged), and the output keeps the input's total."""
    torch.manual_seed(0)
    bs = 3
    x = torch.ones(64, 16, 14, 14)
    y = DropBlock(0.2, spec("conv", 16), block_size=bs, ramp_steps=0).train()(x)
    dropped = (y == 0).float()
    full = (F.avg_pool2d(dropped, bs, stride=1) > 1 - 1e-6).float()  # windows entirely dropped
    opened = F.max_pool2d(F.pad(full, [bs - 1] * 4), bs, stride=1)
    assert dropped.any() and torch.equal(opened, dropped)
    assert y.sum().item() == pytest.approx(x.sum().item(), rel=1e-4)  # normalised by the kept count
    # element-wise dropout would fail the same check
    std = (F.dropout(x, 0.2) == 0).float()
    full = (F.avg_pool2d(std, bs, stride=1) > 1 - 1e-6).float()
    assert not torch.equal(F.max_pool2d(F.pad(full, [bs - 1] * 4), bs, stride=1), std)


@pytest.mark.parametrize(("step", "max_steps", "ramp_steps"), [(0, 100, None), (25, 100, None), (100, 100, None), (150, 100, None), (10, 100, 40), (60, 100, 40), (5, 100, 0)])
def test_dropblock_linear_ramp(step, max_steps, ramp_steps):
    """p(t) = p min(1, t / T), T = ramp_steps or the run's max_steps (scheduled DropBlock)."""
    method = DropBlock(P, spec("conv", 8), ramp_steps=ramp_steps)
    method.on_train_batch_start(ctx(step, max_steps))
    total = max_steps if ramp_steps is None else ramp_steps
    assert method.current_p == pytest.approx(P if total == 0 else P * min(1.0, step / total), abs=1e-12)


# ---------------------------------------------------------------- Concrete dropout


def test_concrete_mask_and_learnable_p():
    """p = sigmoid(p_logit) is a parameter reached by the data gradient; the hard drop rate of the
    relaxed mask (z > 1/2, i.e. keep factor below 1/2 / (1 - p)) is p."""
    torch.manual_seed(0)
    linear = nn.Linear(64, 8)
    method = ConcreteDropout(P, spec(next=linear)).train()
    assert isinstance(method.p_logit, nn.Parameter) and method.drop_prob().item() == pytest.approx(P)
    x = torch.ones(512, 64)
    y = method(x)
    (y**2).sum().backward()
    assert method.p_logit.grad is not None and method.p_logit.grad != 0
    keep = y.detach() * (1 - P)  # = 1 - z
    hard = (keep < 0.5).float().mean().item()
    assert abs(hard - P) < binomial_tol(P, x.numel())
    assert method.stats()["drop_fraction"] == pytest.approx(1 - keep.mean().item(), abs=1e-5)
    assert "p_learned" in method.stats()
    conv = ConcreteDropout(P, spec("conv", 8, next=nn.Conv2d(8, 4, 3))).train()
    ym = conv(torch.ones(4, 8, 5, 5))
    assert torch.all(ym == ym[:, :, :1, :1])  # spatial variant: one mask value per channel


def test_concrete_regulariser_formula():
    torch.manual_seed(0)
    linear = nn.Linear(64, 8)
    method = ConcreteDropout(P, spec(next=linear), length_scale=0.5)
    n = 1000
    expected = (0.25 / 2 * linear.weight.detach().square().sum() / (1 - P) + 64 * (P * math.log(P) + (1 - P) * math.log(1 - P))) / n
    assert method.extra_loss(n).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(("weight_scale", "direction"), [(0.0, +1), (10.0, -1)])
def test_concrete_p_moves_under_regulariser(weight_scale, direction):
    """Toy problem, regulariser only: with near-zero weights the entropy term -K H(p) dominates and
    pushes p up towards 1/2; with large weights l^2/2 ||W||^2/(1 - p) dominates and pushes p down."""
    linear = nn.Linear(64, 8)
    nn.init.constant_(linear.weight, weight_scale)
    method = ConcreteDropout(0.2, spec(next=linear), length_scale=1.0)
    opt = torch.optim.SGD([method.p_logit], lr=1.0)
    for _ in range(20):
        opt.zero_grad()
        method.extra_loss(100).backward()
        opt.step()
    moved = method.drop_prob().item() - 0.2
    assert moved * direction > 0.01
    assert method.drop_prob().item() < 0.5 + 1e-3  # the entropy term alone cannot push past 1/2


def test_concrete_regulariser_is_in_the_training_loss(cfg_factory):
    torch.manual_seed(0)
    model, methods = lenet_with("concrete")
    module = Classifier(model, instantiate(cfg_factory([]).optimizer), None, 10, dataset_size=500)
    assert len(module.regularised) == 2
    batch = (torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,)))
    torch.manual_seed(1)
    loss = module.training_step(batch, 0)
    torch.manual_seed(1)
    ce = F.cross_entropy(model(batch[0]), batch[1])
    reg = sum(m.extra_loss(500) for m in methods)
    assert loss.item() == pytest.approx((ce + reg).item(), rel=1e-6) and reg.item() != 0
    loss.backward()
    assert all(m.p_logit.grad is not None for m in methods)


# ---------------------------------------------------------------- smoke training on real MNIST


@pytest.mark.parametrize("key", ALL_KEYS)
def test_smoke_training_records_drop_fraction(key, tmp_path):
    from dropout_lab.train import train

    metrics = train(make_cfg([*SMOKE, f"dropout={key}"], tmp_path))
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["status"] == "ok" and 0.0 <= summary["drop_fraction"] < 1.0
    assert metrics["test/acc"] > 0.1  # above chance after 8 batches
