"""Layer-level methods without a file of their own, grouped per method: standard, spatial, gaussian,
none, adaptive, maxdropout, biased, flipover, sector (and the source-003 variants), against their
papers: unbiasedness, realised drop fraction and p_eq, structure, eval identity, gradients.
Tolerances come from tests/tolerance.py (binomial / normal standard errors at fixed seeds)."""

from __future__ import annotations

import math

import pytest
import torch

from dropout_lab.dropout import NoDropout
from dropout_lab.dropout.adaptive import AdaptiveDropout
from dropout_lab.dropout.base import SiteSpec
from dropout_lab.dropout.biased import BiasedDropout, BiasedSeed003
from dropout_lab.dropout.flipover import Flipover
from dropout_lab.dropout.gaussian import GaussianDropout
from dropout_lab.dropout.maxdropout import MaxDropout, MaxKeepSeed003
from dropout_lab.dropout.sector import SectorDropout
from dropout_lab.dropout.spatial import SpatialDropout
from dropout_lab.dropout.standard import StandardDropout
from dropout_lab.dropout.variational import VariationalDropout
from layer_helpers import P, spec
from tolerance import binomial_tol, mean_tol

BERNOULLI = {
    "standard": (lambda: StandardDropout(P, spec()), (256, 64), 256 * 64),
    "spatial": (lambda: SpatialDropout(P, spec("conv", 16)), (64, 16, 6, 6), 64 * 16),
    "variational_seq": (lambda: VariationalDropout(P, spec(), shared_dims=[1]), (64, 12, 32), 64 * 32),
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


@pytest.mark.parametrize(
    "make",
    [
        lambda: StandardDropout(P, spec()),
        lambda: SpatialDropout(P, spec("conv", 8)),
        lambda: VariationalDropout(P, spec("conv", 8), shared_dims=[2]),
    ],
)
def test_bernoulli_dropped_units_get_zero_gradient(make):
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


def test_gaussian_mean_and_noise_variance():
    """y = x * N(1, p/(1-p)): mean x, and the realised noise variance gives p_eq = p (the old code
    recorded only a drop fraction of 0)."""
    torch.manual_seed(0)
    method, x, reps = GaussianDropout(P, spec()).train(), torch.ones(256, 64), 10
    ys = torch.stack([method(x) for _ in range(reps)])
    alpha, n = P / (1 - P), x.numel() * reps
    assert abs(ys.mean().item() - 1.0) < mean_tol(math.sqrt(alpha), n)
    assert abs(ys.var().item() - alpha) < mean_tol(
        math.sqrt(2) * alpha, n
    )  # var of a normal sample variance: 2 s^4 / n
    stats = method.stats()
    assert stats["drop_fraction"] == 0.0  # no unit is zeroed
    # equivalent_p = v / (1 + v) is monotone in v: map the variance tolerance through it
    tol = mean_tol(math.sqrt(2) * alpha, n)
    assert (alpha - tol) / (1 + alpha - tol) < stats["p_eq"] < (alpha + tol) / (1 + alpha + tol)


def test_none_is_identity_in_training():
    method, x = NoDropout(0.0, spec()).train(), torch.randn(4, 64)
    assert method(x) is x and method.stats()["drop_fraction"] == 0.0


def make(cls, p, features=40, kind="fc", **kwargs):
    """``cls`` at an ``kind`` site of ``features`` units, built through its spec (defaults, checked values)."""
    return cls.spec.build(SiteSpec("s", kind, features), p=p, **kwargs).train()


def positive(n, features, seed=0):
    """(n, features) activations without zeros (a zero is indistinguishable from a dropped unit)."""
    return torch.rand(n, features, generator=torch.Generator().manual_seed(seed)) + 0.1


ALL = [AdaptiveDropout, MaxDropout, MaxKeepSeed003, BiasedDropout, BiasedSeed003, Flipover, SectorDropout]


UNBIASED = [(AdaptiveDropout, 0.5), (BiasedDropout, 0.5), (BiasedSeed003, 0.5), (Flipover, 0.3), (SectorDropout, 0.3)]


@pytest.mark.parametrize("cls,p", UNBIASED)
def test_unbiased_per_unit(cls, p):
    """E[y] = x unit by unit: the mean of 4000 draws of one input is within 5 standard errors."""
    torch.manual_seed(0)
    rows = 4000
    x0 = torch.randn(40, generator=torch.Generator().manual_seed(1)) * 2 + 1
    y = make(cls, p)(x0.expand(rows, -1).contiguous()).double()  # exact sums of float32 values
    assert ((y.mean(0) - x0).abs() <= mean_tol(y.std(0), rows)).all()


@pytest.mark.parametrize("cls,p", [(AdaptiveDropout, 0.5), (BiasedDropout, 0.5)])
def test_realised_fraction_matches_p(cls, p):
    """Realised drop fraction = p, and p_eq = drop fraction for these Bernoulli masks (the group or
    unit rates differ, so p_eq = 1 - E[m]^2 / E[m^2] is near, not equal to, p)."""
    torch.manual_seed(0)
    x = positive(500, 40)
    method = make(cls, p)
    method(x)
    stats = method.stats()
    assert abs(stats["drop_fraction"] - p) <= binomial_tol(p, x.numel())
    assert abs(stats["p_eq"] - p) <= 0.05


@pytest.mark.parametrize("cls", ALL)
def test_eval_is_identity_and_mc_sampling_samples(cls):
    x = positive(16, 40)
    method = make(cls, 0.3).eval()
    assert torch.equal(method(x), x)
    assert method.stats().get("drop_fraction") is None
    method.mc_sampling = True
    torch.manual_seed(0)
    assert not torch.equal(method(x), x)


@pytest.mark.parametrize(
    "cls", [AdaptiveDropout, MaxDropout, MaxKeepSeed003, BiasedDropout, BiasedSeed003, SectorDropout]
)
def test_dropped_units_get_zero_gradient(cls):
    torch.manual_seed(0)
    x = positive(64, 40).requires_grad_()
    y = make(cls, 0.3)(x)
    y.backward(torch.ones_like(y))
    dropped = y.detach() == 0
    assert dropped.any() and (~dropped).any()
    assert (x.grad[dropped] == 0).all() and (x.grad[~dropped] > 0).all()


def test_sector_drops_exactly_m_per_sector_and_rescales():
    torch.manual_seed(0)
    x = positive(2000, 84)  # 8 sectors of 10 (m = 3) and a last one of 4 (m = round(1.2) = 1)
    method = make(SectorDropout, 0.3, features=84, sector_size=10)
    y = method(x)
    dropped = y == 0
    assert (dropped[:, :80].view(-1, 8, 10).sum(2) == 3).all()
    assert (dropped[:, 80:].sum(1) == 1).all()
    torch.testing.assert_close(y[:, :80][~dropped[:, :80]], (x[:, :80] * 10 / 7)[~dropped[:, :80]])
    torch.testing.assert_close(y[:, 80:][~dropped[:, 80:]], (x[:, 80:] * 4 / 3)[~dropped[:, 80:]])
    assert method.stats()["drop_fraction"] == pytest.approx(25 / 84)
    # the m units are chosen uniformly: every unit is dropped with probability m_s / s
    rate = torch.tensor([0.3] * 80 + [0.25] * 4)
    freq = dropped.float().mean(0)
    assert ((freq - rate).abs() <= torch.tensor([binomial_tol(float(r), 2000) for r in rate])).all()


def test_sector_conv_drops_whole_channels():
    torch.manual_seed(0)
    x = positive(32, 16 * 9).view(32, 16, 3, 3)
    y = make(SectorDropout, 0.5, features=16, kind="conv", sector_size=4)(x)
    dropped = (y == 0).flatten(2)
    assert (dropped.all(2) | ~dropped.any(2)).all()  # a channel is dropped as a whole
    assert (dropped.all(2).view(32, 4, 4).sum(2) == 2).all()


@pytest.mark.parametrize("p,n", [(0.9, 2), (0.04, 10)])
def test_sector_rejects_degenerate_sectors(p, n):
    with pytest.raises(ValueError, match="dropout.sector_size"):
        make(SectorDropout, p, features=84, sector_size=n)


def normalised(x, dims):
    lo, hi = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
    return (x - lo) / (hi - lo)


@pytest.mark.parametrize("per_sample", [True, False])
def test_maxdropout_fixed_rate_drops_exactly_the_top_of_the_range(per_sample):
    torch.manual_seed(0)
    x = torch.randn(64, 40)
    method = make(MaxDropout, 0.3, sample_rate=False, per_sample=per_sample)
    y = method(x)
    above = normalised(x, 1 if per_sample else (0, 1)) > 0.7
    assert torch.equal(y == 0, above)
    assert torch.equal(y[~above], x[~above])  # no rescaling (as published)
    assert method.stats()["drop_fraction"] == pytest.approx(above.float().mean().item())


def test_maxdropout_sampled_rate_drops_the_largest_normalised_values():
    torch.manual_seed(0)
    x = torch.randn(64, 40)
    z = normalised(x, 1)
    for _ in range(20):
        dropped = make(MaxDropout, 0.3)(x) == 0
        assert dropped[z == 1].all()  # the maximum goes (rate > 0)
        assert not dropped[z <= 0.7].any()  # rate <= p
        assert z[dropped].min() > z[~dropped].max()  # one threshold for the batch


def test_maxkeep_seed003_keeps_only_the_maximum_of_chosen_samples():
    torch.manual_seed(0)
    x = torch.randn(2000, 40)
    method = make(MaxKeepSeed003, 0.5)
    y = method(x)
    reduced = (y == 0).any(1)
    is_max = x == x.amax(1, keepdim=True)
    assert torch.equal((y != 0)[reduced], is_max[reduced])
    assert torch.equal(y[~reduced], x[~reduced])
    assert abs(reduced.float().mean().item() - 0.5) <= binomial_tol(0.5, 2000)
    assert method.stats()["drop_fraction"] == pytest.approx(reduced.float().mean().item() * 39 / 40)


def test_biased_drops_the_low_group_at_the_higher_rate():
    torch.manual_seed(0)
    rows, features, p, delta = 2000, 40, 0.5, 0.2
    x = torch.randn(rows, features)
    y = make(BiasedDropout, p, delta=delta)(x)
    high = torch.zeros_like(x, dtype=torch.bool).scatter_(1, x.abs().topk(features // 2, 1).indices, True)
    # the split is at the per-sample median of |a|: exactly the floor(F/2) largest for distinct values
    dropped = y == 0
    n = rows * features // 2
    assert abs(dropped[high].float().mean().item() - (p - delta)) <= binomial_tol(p - delta, n)
    assert abs(dropped[~high].float().mean().item() - (p + delta)) <= binomial_tol(p + delta, n)
    kept = ~dropped
    torch.testing.assert_close(y[high & kept], x[high & kept] / (1 - p + delta))
    torch.testing.assert_close(y[~high & kept], x[~high & kept] / (1 - p - delta))


def test_biased_ties_at_the_median_join_the_low_group():
    torch.manual_seed(0)
    x = torch.cat([torch.zeros(4000, 30), torch.rand(4000, 10) + 0.1], 1)  # 3/4 ReLU zeros
    y = make(BiasedDropout, 0.5, delta=0.2)(x)
    dropped = (y == 0)[:, 30:]
    assert abs(dropped.float().mean().item() - 0.3) <= binomial_tol(0.3, dropped.numel())


def test_biased_conv_ranks_and_masks_channels():
    torch.manual_seed(0)
    x = torch.randn(64, 16, 3, 3)
    y = make(BiasedDropout, 0.5, features=16, kind="conv")(x)
    dropped = (y == 0).flatten(2)
    assert (dropped.all(2) | ~dropped.any(2)).all()


@pytest.mark.parametrize("p,delta", [(0.3, 0.4), (0.7, 0.3), (0.5, -0.1)])
def test_biased_rejects_rates_outside_0_1(p, delta):
    with pytest.raises(ValueError, match="dropout.delta"):
        make(BiasedDropout, p, delta=delta)


def test_biased_seed003_rates_fall_with_activation():
    torch.manual_seed(0)
    rows, p = 4000, 0.5
    x = torch.randn(rows, 20)
    method = make(BiasedSeed003, p)
    dropped = method(x) == 0
    smallest, largest = x.argmin(1, keepdim=True), x.argmax(1, keepdim=True)
    assert not dropped.gather(1, largest).any()
    assert abs(dropped.gather(1, smallest).float().mean().item() - p) <= binomial_tol(p, rows)
    expected = (p * (1 - normalised(x, 1))).mean().item()  # mean rate < p
    assert abs(method.stats()["drop_fraction"] - expected) <= binomial_tol(expected, x.numel())


def test_flipover_flips_signs_at_rate_p_without_zeros():
    torch.manual_seed(0)
    p = 0.3
    x = torch.randn(500, 40).requires_grad_()
    method = make(Flipover, p)
    y = method(x)
    y.backward(torch.ones_like(y))
    flipped = torch.sign(y) != torch.sign(x)
    scale = 1 / (1 - 2 * p)
    assert (y != 0).all()
    torch.testing.assert_close(y.abs(), x.abs() * scale)
    assert abs(flipped.float().mean().item() - p) <= binomial_tol(p, x.numel())
    # no zeros: drop fraction 0; p_eq from the multiplier m = +-scale: 1 - E[m]^2 / E[m^2] = 1 - (1 - 2 f)^2
    f = flipped.float().mean().item()
    assert method.stats()["drop_fraction"] == 0.0
    assert method.stats()["p_eq"] == pytest.approx(1 - (1 - 2 * f) ** 2, rel=1e-4)
    torch.testing.assert_close(x.grad, torch.where(flipped, -scale, scale))


@pytest.mark.parametrize("p,factor", [(0.5, 1.0), (0.34, 2.0)])
def test_flipover_rejects_p_that_cannot_be_rescaled(p, factor):
    with pytest.raises(ValueError, match="dropout.flip_factor"):
        make(Flipover, p, flip_factor=factor)


def test_adaptive_rates_follow_the_ema_within_their_range():
    torch.manual_seed(0)
    rows, features, p, momentum = 4000, 40, 0.5, 0.1
    x = positive(rows, features) * torch.linspace(0.1, 3.0, features)
    method = make(AdaptiveDropout, p, momentum=momentum, rate_min=0.2, rate_max=0.8)
    dropped = method(x) == 0
    torch.testing.assert_close(method.importance, (1 - momentum) + momentum * x.mean(0))
    rates = method.unit_rates()
    assert rates.min() >= 0.2 - 1e-6 and rates.max() <= 0.8 + 1e-6
    assert rates.mean().item() == pytest.approx(p, abs=1e-6)
    assert (rates.diff() <= 1e-6).all()  # more important (larger) units are dropped less
    assert rates[0] > rates[-1]
    tol = torch.tensor([binomial_tol(float(r), rows) for r in rates])
    assert ((dropped.float().mean(0) - rates).abs() <= tol).all()


def test_adaptive_clips_to_the_range_and_keeps_the_mean():
    method = make(AdaptiveDropout, 0.5, features=10, rate_max=0.6)
    method.importance.copy_(torch.tensor([1.0] * 9 + [0.01]))  # seed slope would give the dead unit ~0.95
    rates = method.unit_rates()
    assert rates.max().item() == pytest.approx(0.6) and rates.argmax() == 9 and rates.min() >= 0
    assert rates.mean().item() == pytest.approx(0.5)


def test_adaptive_conv_importance_and_mask_per_channel():
    torch.manual_seed(0)
    x = positive(64, 6 * 4).view(64, 6, 2, 2)
    method = make(AdaptiveDropout, 0.5, features=6, kind="conv", momentum=1.0)
    y = method(x)
    torch.testing.assert_close(method.importance, x.mean((0, 2, 3)))
    dropped = (y == 0).flatten(2)
    assert (dropped.all(2) | ~dropped.any(2)).all()


@pytest.mark.parametrize("kwargs", [{"rate_max": 0.4}, {"rate_min": 0.6}, {"rate_max": 1.0}, {"momentum": 0.0}])
def test_adaptive_rejects_bad_ranges(kwargs):
    with pytest.raises(ValueError, match="dropout"):
        make(AdaptiveDropout, 0.5, **kwargs)


def test_biased_records_live_units_only():
    """Units whose input is 0 (ReLU zeros) are not counted: with 24 of 40 units zero, the 16 live units
    form the high group and drop at p - delta = 0.3 (the old record counted the zeros, dropped at
    p + delta, and logged 0.54)."""
    torch.manual_seed(0)
    x = positive(2000, 40)
    x[:, :24] = 0
    method = make(BiasedDropout, 0.5, delta=0.2)
    method(x)
    stats = method.stats()
    assert abs(stats["drop_fraction"] - 0.3) <= binomial_tol(0.3, 2000 * 16)
    assert abs(stats["p_eq"] - 0.3) <= binomial_tol(0.3, 2000 * 16) * 2
