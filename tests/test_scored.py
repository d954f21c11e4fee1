"""ScoredDropout (score -> per-unit rate machinery, output-gradient capture) and what every score-driven method shares (docs/methods/scored.md)."""

from __future__ import annotations

import gc
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import SMOKE, make_cfg
from dropout_lab.config import attach
from dropout_lab.dropout import passes
from dropout_lab.dropout.base import DropoutContext, SiteSpec
from dropout_lab.dropout.fmre import FMREDropout
from dropout_lab.dropout.l2_dynamic import L2DynamicDropout
from dropout_lab.dropout.obd import OBDDropout
from dropout_lab.dropout.scored import SCORED_ARGS, ScoredDropout, normalise_scores, rate_range
from dropout_lab.models.mlp import MLP
from scored_nets import CLASSES, KEYS, batch, install, step
from tolerance import binomial_tol


class FixedScore(ScoredDropout):
    """Scores unit j with j (unit F-1 is the most important)."""

    def score_input(self, x):
        return torch.arange(x.shape[1], dtype=x.dtype)


class GradSum(ScoredDropout):
    """Scores with sum |g| per unit (a test double for output-gradient capture)."""

    uses_output_grad = True

    def score_grad(self, a, g):
        return g.abs().flatten(2).sum((0, 2)) if g.ndim > 2 else g.abs().sum(0)


def make(cls, p, site, **kwargs):
    """A test double of ScoredDropout with the shared arguments' declared defaults (``SCORED_ARGS``), each given
    value checked against that declaration first."""
    for key, value in kwargs.items():
        if not SCORED_ARGS[key].accepts.ok(value):
            raise ValueError(f"dropout.{key}={value!r}: must be {SCORED_ARGS[key].accepts.wants}")
    return cls(p, site, **({key: arg.default for key, arg in SCORED_ARGS.items()} | kwargs))


def site(F=8, kind="fc"):
    return SiteSpec("s", kind, F)


def test_rate_range_centred_on_p():
    assert rate_range(0.3, None, None) == pytest.approx((0.1, 0.5))
    assert rate_range(0.3, 0.1, 0.5) == pytest.approx((0.1, 0.5))
    assert rate_range(0.3, 0.2, None) == pytest.approx((0.2, 0.4))
    with pytest.raises(ValueError, match="dropout.p=0.3"):
        rate_range(0.3, 0.1, 0.3)
    with pytest.raises(ValueError, match="dropout.max_rate"):
        rate_range(0.6, None, None)


def test_bad_keys_fail_with_key_name():
    for kwargs, key in [
        ({"drop_target": "mid"}, "drop_target"),
        ({"normalise": "z"}, "normalise"),
        ({"ema": 1.0}, "ema"),
        ({"update_every": 0}, "update_every"),
    ]:
        with pytest.raises(ValueError, match=f"dropout.{key}"):
            make(FixedScore, 0.3, site(), **kwargs)


def test_rank_normalisation_mean_half_and_minmax():
    u = normalise_scores(torch.tensor([3.0, -1.0, 10.0, 0.5]), "rank")
    assert u.tolist() == pytest.approx([2 / 3, 0, 1, 1 / 3])
    assert normalise_scores(torch.tensor([2.0, 2.0]), "minmax").tolist() == [0.5, 0.5]
    assert normalise_scores(torch.tensor([0.0, 1.0, 4.0]), "minmax").tolist() == pytest.approx([0, 0.25, 1])


@pytest.mark.parametrize("target", ["low", "high"])
def test_rates_in_range_mean_p_and_target_direction(target):
    m = make(FixedScore, 0.3, site(), drop_target=target).train()
    assert torch.all(m.rates == 0.3)  # warm-up at the mean rate until a score exists
    m(torch.ones(4, 8))
    assert torch.all((m.rates >= 0.1 - 1e-7) & (m.rates <= 0.5 + 1e-7))
    assert float(m.rates.mean()) == pytest.approx(0.3)
    assert (m.rates[0] > m.rates[-1]) == (target == "low")
    assert float(m.rates.min()) == pytest.approx(0.1) and float(m.rates.max()) == pytest.approx(0.5)


@pytest.mark.parametrize("kind,shape", [("fc", (4000, 8)), ("conv", (4000, 8, 3, 3))])
def test_masks_per_unit_unbiased_and_drop_fraction_recorded(kind, shape):
    torch.manual_seed(0)
    m = make(FixedScore, 0.3, site(8, kind)).train()
    x = torch.ones(shape)
    y = m(x)
    kept = (y != 0).float()
    if kind == "conv":  # one draw per channel: the whole map is kept or dropped
        assert torch.all(kept.amin((2, 3)) == kept.amax((2, 3)))
        kept = kept[:, :, 0, 0]
    n = shape[0]
    drop = 1 - kept.mean(0)
    for j in range(8):
        r = float(m.rates[j])
        assert abs(float(drop[j]) - r) < binomial_tol(r, n)
    # unbiased: E[y] = x per unit
    mean = y.flatten(2).mean(2) if kind == "conv" else y
    std = torch.sqrt(m.rates / (1 - m.rates))
    assert torch.all((mean.mean(0) - 1).abs() < 5 * std / n**0.5)
    stats = m.stats()
    assert stats["drop_fraction"] == pytest.approx(float(1 - kept.mean()))
    assert abs(stats["drop_fraction"] - 0.3) < binomial_tol(0.3, n * 8)
    assert {"rate_mean", "rate_min", "rate_max", "score_mean", "score_max"} <= set(stats)


def test_eval_identity_and_buffers_in_state_dict():
    m = make(FixedScore, 0.3, site())
    m.train()(torch.ones(3, 8))
    x = torch.randn(5, 8)
    assert m.eval()(x) is x
    sd = m.state_dict()
    assert {"score", "rates", "scored"} <= set(sd) and bool(sd["scored"])
    fresh = make(FixedScore, 0.3, site())
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.rates, m.rates)


def test_ema_and_update_every():
    m = make(FixedScore, 0.3, site(), ema=0.5, update_every=3).train()
    m.update_scores(torch.full((8,), 2.0))
    assert torch.all(m.score == 2.0)  # first score initialises the EMA
    m.update_scores(torch.zeros(8))
    assert torch.all(m.score == 1.0)
    m = make(FixedScore, 0.3, site(), ema=0.0, update_every=3).train()
    calls = []
    m.score_input = lambda x: calls.append(1) or torch.arange(8.0)
    for i in range(7):
        m.on_train_batch_start(DropoutContext(i, 0, 7, 2, None))
        m(torch.ones(2, 8))
    assert len(calls) == 3  # steps 0, 3, 6 (ctx.due)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_grad_capture_uses_output_gradient_and_keeps_nothing_large():
    torch.manual_seed(0)
    m = make(GradSum, 0.3, site(6), ema=0.0).train()
    x = torch.randn(7, 6, requires_grad=True)
    y = m(x)
    g_out = torch.randn(7, 6)
    y.backward(g_out)
    # every unit is scored from dL/dy, also the ones dropped for some samples
    assert torch.allclose(m.score, g_out.abs().sum(0))
    del x, y, g_out
    gc.collect()
    big = [t for t in gc.get_objects() if isinstance(t, torch.Tensor) and t.shape[:1] == (7,)]
    assert not big, "an activation or gradient outlived the step"
    assert all(b.numel() <= 6 for b in m.buffers())


def test_extra_pass_is_not_recorded_or_scored():
    m = make(FixedScore, 0.3, site()).train()
    with passes.extra_pass(m):
        m(torch.ones(4, 8))
    assert not bool(m.scored) and "drop_fraction" not in m.stats()


@pytest.mark.parametrize("key", ["taylor", "obd", "fmre"])
def test_unit_without_outgoing_weights_scores_zero(key):
    net, m = install(key, **({"probes": 64} if key == "obd" else {}))
    step(net.train(), m, *batch())
    assert bool(m.scored)
    assert float(m.score[0]) == 0.0
    assert torch.all(m.score[1:] > 0)
    assert float(m.rates[0]) == pytest.approx(m.hi)  # drop_target=low: the useless unit is dropped most


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
    site = SiteSpec("s", "fc", 6, prev=nn.ReLU(), next=nn.ReLU())
    for cls, key in [(L2DynamicDropout, "l2_dynamic"), (OBDDropout, "obd"), (FMREDropout, "fmre")]:
        with pytest.raises(ValueError, match=f"dropout={key}"):
            cls.spec.build(site)


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


@pytest.mark.parametrize("key", ["grad_dynamic", "taylor"])
def test_output_gradient_methods_score_a_site_on_the_input_data(key):
    """The MLP's input site (model.input_dropout=true) receives data that needs no gradient; its units
    must still be scored from dL/dy (no silent fallback to the uniform rate p)."""
    torch.manual_seed(0)
    mlp = MLP(hidden_sizes=[16], input_dropout=True)
    (inp, hidden) = attach(
        mlp,
        {
            "_target_": f"{CLASSES[key].__module__}.{CLASSES[key].__name__}",
            "_partial_": True,
            "name": key,
            "p": 0.3,
            "sites": "fc",
            "ema": 0.0,
        },
    )
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    x[:, :, :4] = 0  # blank rows (as MNIST's border): for taylor, a * dL/dy = 0 there
    F.cross_entropy(mlp.train()(x), y).backward()
    assert bool(inp.scored) and bool(hidden.scored)
    assert float(inp.rates.max()) > float(inp.rates.min())
    assert float(inp.rates.mean()) == pytest.approx(0.3, abs=1e-6)
    if key == "taylor":
        assert torch.all(inp.score.view(28, 28)[:4] == 0) and float(inp.score.max()) > 0


def test_score_driven_specs_share_one_declaration(cfg_factory):
    """The arguments the six score-driven methods share are declared once (scored.SCORED_ARGS); each method's
    composed node has every shared key, with its own spec's replacements (obd's ema)."""
    from dropout_lab.dropout import spec
    from dropout_lab.dropout.scored import SCORED_ARGS

    for key in [*KEYS, "shapley"]:
        node = cfg_factory([f"dropout={key}"]).dropout
        assert node.name == key and set(SCORED_ARGS) <= set(node)
        assert {k: node[k] for k in SCORED_ARGS} == {
            k: a.default for k, a in spec.get(key).args.items() if k in SCORED_ARGS
        }
    assert cfg_factory(["dropout=obd"]).dropout.ema == 0.98 and cfg_factory(["dropout=taylor"]).dropout.ema == 0.9
