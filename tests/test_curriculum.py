"""Curriculum dropout (Morerio et al. 2017): the exponential schedule, relative to the planned run."""

from __future__ import annotations

import math

import pytest
import torch

from dropout_lab.dropout.curriculum import CurriculumDropout
from layer_helpers import P, ctx, spec
from tolerance import binomial_tol, mean_tol


def test_curriculum_drop_fraction_follows_schedule():
    """t = 0: no dropout, and a drop fraction of 0 is recorded; mid-run the realised fraction is
    p(t) = p (1 - exp(-decay t / T)) and E[y] = x."""
    torch.manual_seed(0)
    method, x = CurriculumDropout.spec.build(spec(), p=P, decay=64.0).train(), torch.ones(256, 64)
    assert method(x) is x and method.stats()["drop_fraction"] == 0.0
    method.on_train_batch_start(ctx(10, max_steps=1000))
    p_t = P * (1 - math.exp(-0.64))
    ys = torch.stack([method(x) for _ in range(20)])
    recorded = (method.stats()["drop_fraction"] * 21) / 20  # 21 recorded forwards, the first at rate 0
    assert abs(recorded - p_t) < binomial_tol(p_t, x.numel() * 20)
    assert abs(ys.mean().item() - 1.0) < mean_tol(math.sqrt(p_t / (1 - p_t)), x.numel() * 20)


@pytest.mark.parametrize("step", [0, 1, 250, 1000])
def test_curriculum_schedule_is_morerio_formula(step):
    """theta(t) = (1 - theta_bar) exp(-gamma t) + theta_bar, theta_bar = 1 - p, gamma = decay / T."""
    method, theta_bar, max_steps = CurriculumDropout.spec.build(spec(), p=0.5, decay=8.0), 0.5, 1000
    method.on_train_batch_start(ctx(step, max_steps))
    gamma = 8.0 / max_steps
    assert 1 - method.rate() == pytest.approx((1 - theta_bar) * math.exp(-gamma * step) + theta_bar, abs=1e-12)


@pytest.mark.parametrize("max_steps", [100, 1_000, 64_000])
def test_curriculum_reaches_p_in_every_run_length(max_steps):
    """Defect 6: the rate is within 1 % of p by 10 % of any run (the old per-step gamma = 1e-3 gave
    p(T) = 0.095 p after a 100-step run), and the schedule is the same function of t / T."""
    method = CurriculumDropout.spec.build(spec(), p=0.5)
    method.on_train_batch_start(ctx(max_steps // 10, max_steps))
    assert method.rate() > 0.99 * 0.5
    method.on_train_batch_start(ctx(max_steps // 100, max_steps))
    assert method.rate() == pytest.approx(0.5 * (1 - math.exp(-0.64)), rel=1e-9)


def test_curriculum_rejects_bad_decay():
    with pytest.raises(ValueError, match="dropout.decay"):
        CurriculumDropout.spec.build(spec(), p=P, decay=0.0)
