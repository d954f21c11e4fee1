"""Backbones: every model x dataset composes and trains a step (or fails clearly), torchvision parity,
site shapes, and every conv-site dropout method on every backbone."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from conftest import CONF, SMOKE, run_cli
from dropout_lab.config import attach, build_model
from dropout_lab.dropout.sites import Site
from dropout_lab.models.inputs import min_size
from dropout_lab.options import options

# the torchvision backbones (LeNet5 and the MLP are the seed models of test_train.py / test_configs.py)
MODELS = [m for m in options("model") if m not in ("lenet5", "mlp")]
DATASETS = options("dataset")
# one dataset per input geometry (channels, side, classes) trains a step with the light models; the deeper
# ResNets (same blocks and sites as ResNet-18/50) build and run build_model's forward; test_deep_resnets_train
# trains them (CPU budget)
GEOMETRY_REPS = {"kmnist", "cifar100", "flowers102"}
LIGHT = {"resnet18", "alexnet", "squeezenet1_1"}
DROPOUTS = options("dropout")


def cheap_side(model: str, dataset: str) -> int:
    """A small input side that runs the same code as the dataset's own (CPU budget): the model's minimum
    (:func:`~dropout_lab.models.inputs.min_size`: AlexNet 63, SqueezeNet 17), 8 px for ResNets on the
    small-input stem (<= 64 px; stage 4 at 1x1), 65 px on the ImageNet stem (Flowers-102)."""
    smallest = min_size(OmegaConf.load(CONF / "model" / f"{model}.yaml"))
    return smallest if smallest > 1 else 65 if dataset == "flowers102" else 8


def stand_in(cfg) -> SimpleNamespace:
    """What build_model reads from a datamodule, taken from the composed dataset config (no files needed)."""
    d = cfg.dataset
    return SimpleNamespace(name=d.name, num_classes=d.num_classes, in_channels=d.in_channels, image_size=d.image_size)


def train_step(model: nn.Module, cfg) -> None:
    """One forward/backward on a batch of 2: every parameter gets a finite gradient, and the first conv a
    non-zero one (the signal flows back through every site)."""
    d = cfg.dataset
    x = torch.randn(2, d.in_channels, d.image_size, d.image_size)
    loss = F.cross_entropy(model.train()(x), torch.tensor([0, d.num_classes - 1]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("model", MODELS)
def test_model_dataset(model, dataset, cfg_factory):
    cfg = cfg_factory([f"model={model}", f"dataset={dataset}"])
    assert cfg.model.num_classes == cfg.dataset.num_classes and cfg.model.in_channels == cfg.dataset.in_channels
    cfg = cfg_factory([f"model={model}", f"dataset={dataset}", f"dataset.image_size={cheap_side(model, dataset)}"])
    net = build_model(cfg, stand_in(cfg))
    if model.startswith("resnet"):
        assert net.stem == ("imagenet" if dataset == "flowers102" else "cifar")
    if dataset in GEOMETRY_REPS and model in LIGHT:
        train_step(net, cfg)


@pytest.mark.parametrize("model", ["resnet34", "resnet50", "resnet101"])
def test_deep_resnets_train(model, cfg_factory):
    cfg = cfg_factory([f"model={model}", "dataset=cifar100", "dataset.image_size=8"])
    train_step(build_model(cfg, stand_in(cfg)), cfg)


@pytest.mark.parametrize("model", MODELS)
def test_wrong_channels_fail_clearly(model, cfg_factory):
    cfg = cfg_factory([f"model={model}", "dataset=kmnist", "dataset.image_size=64", "model.in_channels=3"])
    with pytest.raises(
        ValueError, match=rf"model='{model}': cannot take dataset 'kmnist' \(inputs of shape \(N, 1, 64, 64\)"
    ):
        build_model(cfg, stand_in(cfg))


def test_too_small_and_bad_stem_fail_clearly(cfg_factory):
    cfg = cfg_factory(["model=squeezenet1_1", "dataset=cifar10", "dataset.image_size=16"])
    with pytest.raises(ValueError, match=r"(?s)model='squeezenet1_1': cannot take dataset 'cifar10'.*at least 17x17"):
        build_model(cfg, stand_in(cfg))
    cfg = cfg_factory(["model=resnet18", "model.stem=tiny"])
    with pytest.raises(
        ValueError,
        match=r"(?s)model='resnet18': cannot take dataset 'mnist'.*model.stem='tiny' is not one of auto, cifar, imagenet",
    ):
        build_model(cfg, stand_in(cfg))


def shapes(model: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101"])
@pytest.mark.parametrize("stem,in_channels", [("cifar", 1), ("imagenet", 3)])
def test_resnet_matches_torchvision(name, stem, in_channels):
    ours = getattr(__import__("dropout_lab.models.resnet", fromlist=[name]), name)(
        num_classes=7, in_channels=in_channels, stem=stem
    )
    ref = getattr(torchvision.models, name)(num_classes=7)
    if stem == "cifar":  # the same surgery, done by hand on torchvision's model
        ref.conv1, ref.maxpool = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.Identity()
    assert shapes(ours) == shapes(ref)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    if name in ("resnet18", "resnet50"):  # same weights -> same function (sites are identities until filled)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(2, in_channels, 8, 8)
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x))


@pytest.mark.parametrize("name,side", [("alexnet", 63), ("squeezenet1_1", 17)])
def test_alexnet_squeezenet_match_torchvision(name, side):
    ours = getattr(__import__(f"dropout_lab.models.{name.split('1')[0]}", fromlist=[name]), name)(
        num_classes=7, image_size=side
    )
    ref = getattr(torchvision.models, name)(num_classes=7)
    assert shapes(ours) == shapes(ref)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, side, side)
    torch.testing.assert_close(ours.eval()(x), ref.eval()(x))
    assert not any(isinstance(m, nn.Dropout) for m in ours.modules())  # every native dropout became a site


def site_inputs(model: nn.Module, side: int, in_channels: int = 3) -> dict[str, tuple]:
    """Shape of the tensor reaching each Site in one forward pass."""
    seen, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, Site):
            hooks.append(
                m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, tuple(inp[0].shape)))
            )
    model.eval()(torch.zeros(1, in_channels, side, side))
    for h in hooks:
        h.remove()
    return seen


def test_sites_see_their_declared_shapes():
    from dropout_lab.models.alexnet import alexnet
    from dropout_lab.models.resnet import resnet18, resnet50
    from dropout_lab.models.squeezenet import squeezenet1_1

    assert site_inputs(resnet18(in_channels=1, image_size=28), 28, 1) == {
        "drop_layer3": (1, 256, 7, 7),
        "drop_layer4": (1, 512, 4, 4),
        "drop_fc": (1, 512),
    }
    assert site_inputs(resnet50(image_size=16), 16) == {
        "drop_layer3": (1, 1024, 4, 4),
        "drop_layer4": (1, 2048, 2, 2),
        "drop_fc": (1, 2048),
    }
    assert site_inputs(resnet18(image_size=224), 224) == {
        "drop_layer3": (1, 256, 14, 14),
        "drop_layer4": (1, 512, 7, 7),
        "drop_fc": (1, 512),
    }
    assert site_inputs(alexnet(image_size=63), 63) == {
        "drop_features": (1, 256, 1, 1),
        "classifier.0": (1, 9216),
        "classifier.3": (1, 4096),
    }
    assert site_inputs(squeezenet1_1(image_size=224), 224) == {"classifier.0": (1, 512, 13, 13)}
    for model in (resnet18(), alexnet(), squeezenet1_1()):  # prev/next paths resolve
        for site in (m for m in model.modules() if isinstance(m, Site)):
            spec = site.spec(model)
            assert spec.prev is not None and spec.next is not None


def test_resnet_stem_auto():
    stems = [
        instantiate({"_target_": "dropout_lab.models.resnet.resnet18", "image_size": s}) for s in (28, 64, 96, 224)
    ]
    assert [m.stem for m in stems] == ["cifar", "cifar", "imagenet", "imagenet"]
    assert (
        isinstance(stems[0].maxpool, nn.Identity)
        and stems[0].conv1.stride == (1, 1)
        and stems[2].conv1.kernel_size == (7, 7)
    )


@pytest.mark.parametrize("dropout", DROPOUTS)
@pytest.mark.parametrize("model", MODELS)
def test_conv_site_methods_on_every_backbone(model, dropout, cfg_factory):
    cfg = cfg_factory(
        [
            f"model={model}",
            "dataset=cifar10",
            f"dataset.image_size={cheap_side(model, 'cifar10')}",
            f"dropout={dropout}",
            "dropout.sites=conv",
        ]
    )
    net = build_model(cfg, stand_in(cfg))
    try:
        methods = attach(net, cfg.dropout)
    except ValueError as err:  # a method that declares itself fc-only must say so clearly
        assert "sites" in str(err) or "conv" in str(err), err
        pytest.skip(f"{dropout} does not occupy conv sites: {err}")
    conv_sites = [m for m in net.modules() if isinstance(m, Site) and m.kind == "conv"]
    assert len(methods) >= 1 and all(not isinstance(s.method, nn.Identity) for s in conv_sites)
    train_step(net, cfg)


def test_smoke_run_resnet18_fashion_mnist(tmp_path, monkeypatch):
    """The real CLI on a real Fashion-MNIST subset: trains, tests and writes its summary."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    res = run_cli(
        [
            "model=resnet18",
            "dataset=fashion_mnist",
            *SMOKE,
            "channels_last=true",
            "dataset.subset={train: 64, val: 32, test: 32}",
            "dataset.batch_size=16",
            "trainer.limit_train_batches=2",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    import json

    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert (
        summary["status"] == "ok"
        and summary["hparams"]["model"] == "resnet18"
        and summary["hparams"]["dataset"] == "fashion_mnist"
    )
    assert 0.0 <= summary["test_acc"] <= 1.0 and summary["config"]["channels_last"] is True


def test_presets_compose(cfg_factory):
    cfg = cfg_factory(["experiment=seed004_edropout", "dataset=kmnist"])
    assert cfg.model._target_.endswith("resnet18") and cfg.dataset.name == "kmnist" and cfg.dropout.name == "none"
    assert (
        cfg.optimizer._target_,
        cfg.optimizer.lr,
        cfg.optimizer.rho,
        cfg.optimizer.eps,
        cfg.optimizer.weight_decay,
    ) == ("torch.optim.Adadelta", 1.0, 0.9, 1e-6, 1e-5)
    assert (
        cfg.scheduler.step_size,
        cfg.scheduler.gamma,
        cfg.dataset.batch_size,
        cfg.dataset.val_fraction,
        cfg.trainer.max_epochs,
    ) == (50, 0.1, 128, 0.1, 200)
    assert (
        cfg_factory(["experiment=seed004_edropout", "dropout=standard"]).dropout.name == "standard"
    )  # the command line wins
    cfg = cfg_factory(["experiment=cifar_resnet", "trainer.max_epochs=30"])
    assert cfg.dataset.name == "cifar10" and cfg.model._target_.endswith("resnet18") and cfg.scheduler.T_max == 30
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.nesterov, cfg.optimizer.weight_decay) == (
        0.1,
        0.9,
        True,
        5e-4,
    )


@pytest.mark.parametrize("builder, name, pooled", [("resnet18", "drop_layer4", 1), ("alexnet", "drop_features", 6)])
def test_fmre_scores_through_the_pooling_before_a_linear(builder, name, pooled):
    """FMRE's s_c at a conv site followed by pooling + Linear equals the removal error of channel c computed
    with the model's own pooling (global for ResNet's fc, 6x6 for AlexNet's classifier.1)."""
    from dropout_lab.dropout.fmre import FMREDropout
    from dropout_lab.models import alexnet, resnet

    torch.manual_seed(0)
    net = resnet.resnet18() if builder == "resnet18" else alexnet.alexnet(image_size=63)
    site = net.get_submodule(name).spec(net)
    x = torch.randn(4, site.num_features, 3, 3)
    score = FMREDropout.spec.build(site, p=0.3, sub_batch=4).score_input(x)
    for c in (0, 7):
        x0 = x.clone()
        x0[:, c] = 0
        z = site.next(F.adaptive_avg_pool2d(x, pooled).flatten(1)) - site.next(
            F.adaptive_avg_pool2d(x0, pooled).flatten(1)
        )
        torch.testing.assert_close(score[c], z.square().sum(1).mean().detach())
