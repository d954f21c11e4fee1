"""Every model trains with the defaults: each model x dataset of conf/ composes with nothing but ``model=`` and
``dataset=``, the data comes at the model's native input size, the model builds and runs a forward pass there, and
the default dropout method finds sites in it."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from conftest import make_cfg
from dropout_lab.config import attach, build_model
from dropout_lab.dropout.sites import Site, resolve_default
from dropout_lab.models.inputs import min_size
from dropout_lab.models.lenet import LeNet5
from dropout_lab.models.squeezenet import SqueezeNet
from dropout_lab.options import options


@pytest.mark.parametrize("dataset", options("dataset"))
@pytest.mark.parametrize("model", options("model"))
def test_model_dataset_defaults(model, dataset, tmp_path):
    cfg = make_cfg([f"model={model}", f"dataset={dataset}"], tmp_path)
    datamodule = instantiate(cfg.dataset)  # no files read before setup()
    assert datamodule.image_size == cfg.model.input_size >= min_size(cfg.model)
    net = build_model(cfg, datamodule)  # builds and checks the logits of a (2, C, side, side) batch
    methods = attach(net, cfg.dropout)
    filled = [site for site in net.modules() if isinstance(site, Site) and not isinstance(site.method, nn.Identity)]
    assert len(filled) == len(methods) > 0


def test_default_sites_fall_back_to_the_sites_a_model_has():
    squeezenet, lenet = SqueezeNet(num_classes=10, in_channels=1, image_size=28), LeNet5()
    assert resolve_default(squeezenet, "fc") == "all"  # its one site, torchvision's dropout slot, is a conv site
    assert resolve_default(lenet, "fc") == "fc" and resolve_default(lenet, "conv") == "conv"
    methods = attach(
        squeezenet,
        {
            "_target_": "dropout_lab.dropout.standard.StandardDropout",
            "_partial_": True,
            "name": "standard",
            "p": 0.5,
            "sites": "default",
        },
    )
    assert [m.site.name for m in methods] == ["classifier.0"]
    with pytest.raises(
        ValueError, match=r"dropout.sites='fc': model SqueezeNet has no such site"
    ):  # an explicit kind stays strict
        attach(
            squeezenet,
            {
                "_target_": "dropout_lab.dropout.standard.StandardDropout",
                "_partial_": True,
                "name": "standard",
                "p": 0.5,
                "sites": "fc",
            },
        )
    torch.manual_seed(0)
    x = torch.randn(4, 1, 28, 28)
    assert squeezenet.eval()(x).shape == (4, 10)
