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

from dropout_lab.dropout.base import DropoutMethod, check_p
from dropout_lab.dropout.sites import SITE_CHOICES, find_sites, resolve_default
from dropout_lab.errors import ConfigError
from dropout_lab.summary import target_name


def split_config(cfg: DictConfig | dict) -> tuple[str, str, dict[str, Any]]:
    """Split a ``dropout`` config node into (name, sites, constructor config).

    Raises:
        ValueError: if ``p`` is outside [0, 1) or ``sites`` is not one of fc, conv, all, default.
    """
    node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    name, sites = node.pop("name"), node.pop("sites", "default")
    check_p(node.get("p", 0.0))
    if sites not in SITE_CHOICES:
        raise ValueError(f"dropout.sites={sites!r} is not one of {', '.join(SITE_CHOICES)}")
    return name, sites, node


def attach(model: nn.Module, cfg: DictConfig | dict) -> list[DropoutMethod]:
    """Instantiate the configured method at the model's sites and return the method modules.

    Args:
        model: a network with :class:`~dropout_lab.dropout.sites.Site` modules.
        cfg: the ``dropout`` config node: ``name``, ``sites`` (fc|conv|all|default), ``_target_``
            (a :class:`DropoutMethod` subclass), ``_partial_: true``, ``p`` and method arguments.

    Raises:
        ValueError: on a bad ``p`` or ``sites``.
        ConfigError: on ``dropout``, for a model without such sites or a method whose constructor refuses
            its arguments or sites (the message names the key, e.g. ``dropout.sites``), so that it is
            printed in a few lines like every config error.
    """
    name, sites, node = split_config(cfg)
    factory = instantiate(node)
    cls = factory.func
    kind = resolve_default(model, cls.default_sites) if sites == "default" else sites
    try:
        return cls.attach(model, factory, find_sites(model, kind))
    except ConfigError:
        raise
    except ValueError as err:  # a method's own refusal (its message names the key): printed as a config error
        raise ConfigError("dropout", name, str(err)) from err


def instantiate_model(node: DictConfig, **kwargs: Any) -> nn.Module:
    """Instantiate a ``conf/model`` node; its ``input_size`` (the model's native input side, which
    ``dataset.image_size`` follows unless set) is not a constructor argument. ``kwargs`` override the node.

    Raises:
        hydra.errors.InstantiationException: wrapping the constructor's error (e.g. an input below the
            model's ``MIN_SIZE``).
    """
    return instantiate({key: node[key] for key in node if key != "input_size"}, **kwargs)


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
        model = instantiate_model(cfg.model, image_size=datamodule.image_size)
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *shape))
    except (RuntimeError, ValueError, InstantiationException) as err:  # Hydra wraps errors raised in constructors
        raise ConfigError("model", model_name, f"{what}: {err}") from err
    if tuple(out.shape) != (2, datamodule.num_classes):
        raise ConfigError("model", model_name, f"{what}: it returns logits of shape {tuple(out.shape)}")
    return model.train()
