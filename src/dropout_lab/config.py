"""Config-to-object code, in one place: the ``dropout`` node to method modules at a model's sites
(:func:`split_config`, :func:`attach`) and the ``model`` node to a checked network
(:func:`instantiate_model`, :func:`build_model`). Models and methods never import Hydra; this module does."""

from __future__ import annotations

from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dropout_lab.dropout import spec
from dropout_lab.dropout.base import DropoutMethod
from dropout_lab.dropout.sites import SITE_CHOICES, find_sites, resolve_default
from dropout_lab.errors import ConfigError, reported
from dropout_lab.summary import target_name


def split_config(cfg: DictConfig | dict) -> tuple[str, str, dict[str, Any]]:
    """Split a ``dropout`` config node into (name, sites, constructor config): the method's spec defaults
    (:meth:`~dropout_lab.dropout.spec.MethodSpec.defaults`) replaced by the node's values, each checked against the
    spec (:meth:`~dropout_lab.dropout.spec.MethodSpec.check`). A composed node holds every argument; a hand-written
    dict may hold only what it changes.

    Raises:
        ConfigError: for an unknown method, an argument value its spec refuses, or ``sites`` not one of fc, conv,
            all, default.
    """
    node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    name, sites = node.pop("name"), node.pop("sites", "default")
    with reported():
        method = spec.get(name)
        for key, value in node.items():
            if not key.startswith("_"):
                method.check(key, value)
    if sites not in SITE_CHOICES:
        raise ConfigError("dropout.sites", sites, f"must be one of {', '.join(SITE_CHOICES)}")
    return name, sites, {"_target_": method.target, "_partial_": True, **method.defaults(), **node}


def attach(model: nn.Module, cfg: DictConfig | dict) -> list[DropoutMethod]:
    """Instantiate the configured method at the model's sites and return the method modules.

    Args:
        model: a network with :class:`~dropout_lab.dropout.sites.Site` modules.
        cfg: the ``dropout`` config node: ``name``, ``sites`` (fc|conv|all|default), ``_target_``
            (a :class:`DropoutMethod` subclass), ``_partial_: true``, ``p`` and method arguments.

    Raises:
        ConfigError: from :func:`split_config`; on ``dropout``, for a model without such sites or a method whose constructor refuses
            its arguments or sites (the message names the key, e.g. ``dropout.sites``), so that it is
            printed in a few lines like every config error.
    """
    name, sites, node = split_config(cfg)
    factory = instantiate(node)
    cls = factory.func
    kind = resolve_default(model, cls.spec.default_sites) if sites == "default" else sites
    try:
        with reported():
            return cls.attach(model, factory, find_sites(model, kind))
    except ConfigError:
        raise
    except ValueError as err:  # a method's own refusal (its message names the key): printed as a config error
        raise ConfigError("dropout", name, str(err)) from err


def instantiate_model(cfg: DictConfig, **kwargs: Any) -> nn.Module:
    """Instantiate a job config's ``model`` node for inputs of side ``dataset.image_size`` (the one key for the
    side the model sees; it follows the model's native ``model.input_size`` unless set, and the data is
    resized to it). ``model.input_size`` is not a constructor argument. ``kwargs`` override the node.

    Raises:
        hydra.errors.InstantiationException: wrapping the constructor's error (e.g. an input below the
            model's ``MIN_SIZE``).
    """
    node = cfg.model
    return instantiate(
        {key: node[key] for key in node if key != "input_size"}, **({"image_size": cfg.dataset.image_size} | kwargs)
    )


def build_model(cfg: DictConfig, datamodule) -> nn.Module:
    """Instantiate ``cfg.model`` and check that it takes the dataset's input.

    A dummy batch of shape (2, in_channels, image_size, image_size) goes through the model in eval
    mode; it must give logits of shape (2, num_classes).

    Raises:
        ConfigError: on ``model``, naming the model and the dataset, if construction or the dummy
            forward fails or the output has the wrong shape.
    """
    model_name, shape = target_name(cfg.model), (datamodule.in_channels, datamodule.image_size, datamodule.image_size)
    what = f"cannot take dataset '{datamodule.name}' (inputs of shape (N, {', '.join(map(str, shape))}), {datamodule.num_classes} classes)"
    try:
        model = instantiate_model(cfg, image_size=datamodule.image_size)
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *shape))
    except (RuntimeError, ValueError, InstantiationException) as err:  # Hydra wraps errors raised in constructors
        raise ConfigError("model", model_name, f"{what}: {err}") from err
    if tuple(out.shape) != (2, datamodule.num_classes):
        raise ConfigError("model", model_name, f"{what}: it returns logits of shape {tuple(out.shape)}")
    return model.train()
