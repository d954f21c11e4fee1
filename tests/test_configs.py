"""Every dataset x model option composes through Hydra and instantiates."""

from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from conftest import make_cfg
from dropout_lab.config import instantiate_model
from dropout_lab.options import options

DATASETS = options("dataset")
MODELS = options("model")
GROUPS = {group: options(group) for group in ("dropout", "optimizer", "scheduler", "trainer", "logger", "callbacks")}


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("model", MODELS)
def test_dataset_model_compose_and_instantiate(dataset, model, tmp_path):
    cfg = make_cfg([f"dataset={dataset}", f"model={model}"], tmp_path)
    datamodule = instantiate(cfg.dataset)
    assert datamodule.name == dataset
    assert cfg.model.num_classes == cfg.dataset.num_classes
    try:
        net = instantiate_model(cfg)
    except InstantiationException as err:  # e.g. AlexNet below 63 px: refused with a clear message (test_backbones.py)
        assert "needs inputs of at least" in str(err), err
        return
    assert sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_group_option_composes(group, option, tmp_path):
    cfg = make_cfg([f"{group}={option}"], tmp_path)
    node = cfg[group]
    if node and "_target_" in node and group in ("optimizer", "scheduler"):
        assert callable(instantiate(node))


def test_defaults_are_lenet5_standard_mnist(tmp_path):
    cfg = make_cfg([], tmp_path)
    assert (cfg.dataset.name, cfg.model._target_.rsplit(".", 1)[-1], cfg.dropout.name) == (
        "mnist",
        "LeNet5",
        "standard",
    )
    assert cfg.dataset.batch_size == 128 and cfg.optimizer.lr == 1e-3
    assert Path(cfg.output_dir) == tmp_path


def test_shared_bases_are_not_offered_as_choices():
    """The bases that options include (conf/base/<group>/) are not listed as options of their group."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import MissingConfigException

    from conftest import CONF

    for group in ("dataset", "dropout", "model"):
        with (
            initialize_config_dir(config_dir=str(CONF), version_base="1.3"),
            pytest.raises(MissingConfigException) as err,
        ):
            compose("config", overrides=[f"{group}=bogus"])
        listed = {
            line.strip() for line in str(err.value).split("Available options")[1].splitlines()[1:] if line.strip()
        }
        assert listed and not any(o.startswith("_") or o in ("mnist_family", "scored", "resnet") for o in listed), (
            listed
        )
