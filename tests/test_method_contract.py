"""The method contract, checked for every registered method (a new method's spec gets these tests with no
list to edit; ``DROPOUT_LAB_METHODS`` adds methods kept outside the package): refusals name ``dropout.sites``, evaluation is deterministic (the identity unless the
method declares a test-time form), every training step is recorded at p = 0 and p > 0 with rates in
[0, 1], dropped units get zero gradient, the state_dict round trip restores the method, and a smoke
run at ``dataset.image_size=32`` writes drop_fraction, p_eq and method_info. A method refused at its
default sites (``variational`` on these models) is checked for the refusal only."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import SMOKE, make_cfg
from dropout_lab.config import attach, instantiate_model
from dropout_lab.controller import DropoutController
from dropout_lab.dropout import DropoutContext, DropoutMethod, Site, spec
from dropout_lab.dropout.curriculum import CurriculumDropout

METHODS = list(spec.specs())
STEPS, BATCH, TRAIN = 3, 16, 512


def build(key: str, *overrides: str, seed: int = 0) -> tuple[nn.Module, list[DropoutMethod]] | None:
    """LeNet5 with the method at its configured sites; None if it refuses them (the refusal must name
    ``dropout.sites``, or ``dropout.p`` when p is overridden)."""
    torch.manual_seed(seed)
    cfg = make_cfg([f"dropout={key}", *overrides], "unused")
    model = instantiate_model(cfg)
    try:
        return model, attach(model, cfg.dropout)
    except ValueError as err:
        assert "dropout.sites" in str(err) or (
            any(o.startswith("dropout.p=") for o in overrides) and "dropout.p" in str(err)
        ), err
        return None


class HeldOut:
    """The public datamodule interface a method may use during training (held-out batches)."""

    name, num_classes, in_channels, image_size, num_train = "mnist", 10, 1, 28, TRAIN

    def held_out_batch(self, n: int, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def train_steps(model: nn.Module, methods: list[DropoutMethod], steps: int = STEPS) -> DropoutController:
    """``steps`` optimizer steps, the hooks dispatched by the real controller as Lightning orders them
    (``global_step`` is incremented by the optimizer step, before ``on_train_batch_end``)."""
    controller = DropoutController(methods, TRAIN)
    controller.max_steps = 10
    trainer = SimpleNamespace(global_step=0, current_epoch=0, datamodule=HeldOut())
    module = SimpleNamespace(
        model=model,
        trainer=trainer,
        log_dict=lambda metrics, **kw: trainer.__dict__.setdefault("logged", {}).update(metrics),
    )
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    for step in range(steps):
        batch = torch.randn(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
        trainer.global_step = step
        controller.on_train_batch_start(trainer, module, batch, step)
        loss = F.cross_entropy(model(batch[0]), batch[1])
        loss = loss + sum(r for m in methods if (r := m.extra_loss(TRAIN)) is not None)
        optimizer.zero_grad()
        loss.backward()
        controller.on_after_backward(trainer, module)
        controller.on_before_optimizer_step(trainer, module, optimizer)
        optimizer.step()
        trainer.global_step = step + 1
        controller.on_train_batch_end(trainer, module, {"loss": loss}, batch, step)
    controller.on_train_epoch_end(trainer, module)
    controller.logged = trainer.logged
    return controller


@pytest.mark.parametrize("key", METHODS)
@pytest.mark.parametrize("sites", ["fc", "conv"])
def test_fc_and_conv_sites_or_a_refusal_naming_dropout_sites(key, sites):
    built = build(key, f"dropout.sites={sites}")
    if built is not None:
        model, methods = built
        assert methods and all(isinstance(m, DropoutMethod) for m in methods)
        assert model.train()(torch.randn(4, 1, 28, 28)).shape == (4, 10)


@pytest.mark.parametrize("key", METHODS)
def test_eval_is_deterministic_and_the_identity_unless_declared(key):
    """After training steps: eval forwards repeat exactly, and equal the bare network with the same
    weights unless the method's spec declares a test-time form (``eval_identity=False``)."""
    built = build(key)
    if built is None:
        return
    model, methods = built
    train_steps(model, methods)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        out = model.eval()(x)
        assert torch.equal(out, model(x))
        if all(m.spec.eval_identity for m in methods):
            bare = instantiate_model(make_cfg([], "unused"))
            bare.load_state_dict({k: v for k, v in model.state_dict().items() if k in bare.state_dict()})
            assert torch.equal(out, bare.eval()(x))


@pytest.mark.parametrize("key", METHODS)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_every_training_step_is_recorded(key, p):
    """One record per training forward (also at p = 0: drop fraction and p_eq exactly 0), rates in
    [0, 1], and the controller logs the per-site and mean keys (docs/methods/README.md)."""
    built = build(key, f"dropout.p={p}")
    if built is None:
        return
    model, methods = built
    logged = train_steps(model, methods).logged
    for m in methods:
        stats = m.stats()
        assert int(m.recorded) == STEPS, m.site.name
        assert 0.0 <= stats["drop_fraction"] <= 1.0 and 0.0 <= stats["p_eq"] <= 1.0, stats
        if p == 0.0:
            assert stats["drop_fraction"] == 0.0 and stats["p_eq"] == 0.0, stats
        assert logged[f"dropout/{m.site.name}/drop_fraction"] == stats["drop_fraction"]
    assert {"dropout/drop_fraction", "dropout/p_eq"} <= set(logged)


@pytest.mark.parametrize("key", METHODS)
def test_dropped_units_get_zero_gradient(key):
    """At every occupied site, an input element whose output is 0 gets gradient 0 (the mask is a
    constant for autograd; DropConnect masks weights, tested in tests/test_dropconnect.py)."""
    built = build(key)
    if built is None:
        return
    model, methods = built
    train_steps(model, methods)
    model.train()
    for site in (s for s in model.modules() if isinstance(s, Site) and not isinstance(s.method, nn.Identity)):
        shape = (BATCH, site.num_features) if site.kind == "fc" else (BATCH, site.num_features, 6, 6)
        x = (torch.rand(shape) + 0.1).requires_grad_()
        y = site(x)
        y.sum().backward()
        dropped = y.detach() == 0
        assert torch.all(x.grad[dropped] == 0), site


@pytest.mark.parametrize("key", METHODS)
def test_state_dict_round_trip(key):
    """A fresh model loading the state_dict (strict) has the same method state (scores, populations,
    learned rates, the recorded sums), the same recorded rates and the same eval function."""
    built, fresh = build(key), build(key, seed=1)
    if built is None:
        return
    (model, methods), (other, others) = built, fresh
    train_steps(model, methods)
    other.load_state_dict(copy.deepcopy(model.state_dict()))
    for key_, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key_], value), key_
    for a, b in zip(methods, others):
        assert {k: a.stats()[k] for k in ("drop_fraction", "p_eq")} == {
            k: b.stats()[k] for k in ("drop_fraction", "p_eq")
        }
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), other.eval()(x))


@pytest.mark.parametrize("key", METHODS)
def test_smoke_run_at_32_pixels(key, tmp_path):
    """A real training job (MNIST resized to 32 px) writes the comparable rates and the meaning of p."""
    from dropout_lab.train import train

    cfg = make_cfg([*SMOKE, f"dropout={key}", "dataset.image_size=32"], tmp_path)
    if build(key) is None:
        with pytest.raises(ValueError, match="dropout.sites"):
            train(cfg)
        return
    metrics = train(cfg)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    method = spec.get(key)
    assert summary["status"] == "ok"
    assert 0.0 <= summary["drop_fraction"] <= 1.0 and 0.0 <= summary["p_eq"] <= 1.0
    assert summary["method_info"] == {"p_meaning": method.p_meaning, "p_is_rate": method.p_is_rate}
    assert metrics["dropout/drop_fraction"] == summary["drop_fraction"]


def test_logged_rate_is_the_mean_over_all_training_steps():
    """The controller logs the run's mean, not the last epoch's: curriculum at rate 0 in epoch 1 and
    at ~p in epoch 2 logs ~p / 2 after epoch 2 (the old per-epoch reset logged ~p)."""
    torch.manual_seed(0)
    method = CurriculumDropout.spec.build(
        SimpleNamespace(name="s", kind="fc", num_features=64, next=None), p=0.5
    ).train()
    controller = DropoutController([method], TRAIN)
    controller.max_steps = 100
    logged = {}
    module = SimpleNamespace(log_dict=lambda metrics, **kw: logged.update(metrics))
    x = torch.ones(256, 64)
    for step in (0, 100):
        trainer = SimpleNamespace(global_step=step, current_epoch=step // 100)
        controller.on_train_batch_start(trainer, module, None, 0)
        method(x)
        controller.on_train_epoch_end(trainer, module)
    assert logged["dropout/drop_fraction"] == pytest.approx(0.25, abs=0.02)
    assert logged["dropout/p_eq"] == pytest.approx(0.25, abs=0.02)


def test_models_declare_sites_without_importing_hydra():
    """The backbones and the dropout package import no Hydra (config-to-object code is in
    dropout_lab.config); the old sites.py pulled Hydra into every model."""
    import subprocess
    import sys

    from conftest import ROOT

    code = "import sys, dropout_lab.models, dropout_lab.dropout; print(sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'omegaconf'}))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""},
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("step", "every", "warmup", "due"),
    [
        (0, 1, 0, True),
        (5, 1, 0, True),
        (0, 10, 0, True),
        (5, 10, 0, False),
        (20, 10, 0, True),
        (3, 10, 5, False),
        (5, 10, 5, True),
        (15, 10, 5, True),
        (16, 10, 5, False),
        (7, 0, 0, False),
    ],
)
def test_context_due_is_every_n_steps_after_warmup(step, every, warmup, due):
    ctx = DropoutContext(global_step=step, epoch=0, max_steps=40, dataset_size=1, module=None)
    assert ctx.due(every=every, warmup=warmup) is due
    assert ctx.every(every) is (every > 0 and step % every == 0)
    assert ctx.progress == step / 40
