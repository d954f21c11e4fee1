"""The one place where a job's composed Hydra config becomes objects (lightning-hydra-template's ``instantiate`` at
the top of ``train.py``): :func:`settings` reads the run's scalar settings into a typed :class:`Settings`,
:func:`build` instantiates the data, the network with its dropout methods (:func:`attach`), the Lightning module,
the loggers, the callbacks group and the trainer into :class:`Parts`. :mod:`dropout_lab.train` and ``eval.py``
call these once at the top of a job and hand the lower layers (checkpoints, summary, hparams, module, controller,
analysis, sites, methods, models) the objects they need, never the config. Models and methods never import
Hydra; this module does."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dropout_lab import compat
from dropout_lab.callbacks import instantiate_callbacks
from dropout_lab.dropout import spec
from dropout_lab.dropout.base import DropoutMethod
from dropout_lab.dropout.sites import SITE_CHOICES, find_sites, resolve_default
from dropout_lab.errors import ConfigError, reported
from dropout_lab.loggers import instantiate_loggers
from dropout_lab.module import Classifier
from dropout_lab.seeding import INIT, METHOD, ORDER, stream_seed
from dropout_lab.summary import target_name
from dropout_lab.validate import validates


@dataclass(frozen=True)
class Settings:
    """One job's run settings, read from its composed config once (:func:`settings`) and typed.

    Attributes:
        output_dir: the job's folder (``output_dir``): ``metrics.json``, ``checkpoints/``, the logs.
        seed: ``seed``; the job's random streams derive from it (:mod:`~dropout_lab.seeding`).
        resume: ``resume``: continue from ``<output_dir>/checkpoints/last.ckpt`` if one exists.
        checkpoint_every: ``checkpoint_every``, seconds between ``last.ckpt`` writes (0: every epoch).
        keep_checkpoint: ``keep_checkpoint``, the checkpoint a finished job keeps: none | last | best.
        test_on: ``eval.checkpoint``, the weights the test uses: last | best.
        validates: whether the run validates (``trainer.limit_val_batches`` is not 0).
        mc_samples: ``eval.mc_samples``, Monte-Carlo test passes (0: none).
        config: the resolved config as plain containers (the summary's ``config``; its HParams row is
            :func:`~dropout_lab.summary.flat_hparams` of it).
    """

    output_dir: Path
    seed: int
    resume: bool
    checkpoint_every: float
    keep_checkpoint: str
    test_on: str
    validates: bool
    mc_samples: int
    config: dict[str, Any]


def settings(cfg: DictConfig) -> Settings:
    """:class:`Settings` of a composed job config that passed :func:`~dropout_lab.validate.validate` (the defaults
    of ``conf/config.yaml`` for keys a hand-made config leaves out)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    evaluation = config.get("eval") or {}
    return Settings(
        output_dir=Path(config["output_dir"]),
        seed=int(config["seed"]),
        resume=bool(config.get("resume")),
        checkpoint_every=float(config.get("checkpoint_every") or 0),
        keep_checkpoint=config.get("keep_checkpoint", "none"),
        test_on=evaluation.get("checkpoint", "last"),
        validates=validates(cfg),
        mc_samples=int(evaluation.get("mc_samples", 0)),
        config=config,
    )


@dataclass
class Parts:
    """The objects one job is made of (:func:`build`).

    Attributes:
        datamodule: the ``dataset`` node's LightningDataModule (:mod:`dropout_lab.data`), set up for ``fit``.
        module: the :class:`~dropout_lab.module.Classifier` around the network, its optimizer and scheduler.
        methods: the dropout method modules attached at the network's sites (:func:`attach`).
        loggers: the ``logger`` group's Lightning loggers (:func:`~dropout_lab.loggers.instantiate_loggers`).
        callbacks: the ``callbacks`` group's Lightning callbacks
            (:func:`~dropout_lab.callbacks.instantiate_callbacks`); train.py adds those every run needs.
        trainer: the ``trainer`` node as a factory: ``trainer(logger=..., callbacks=...)`` is a ``pl.Trainer`` (with
            :func:`~dropout_lab.compat.null_profiler` unless ``trainer.profiler`` is set).
    """

    datamodule: Any
    module: Classifier
    methods: list[DropoutMethod]
    loggers: list[pl.loggers.Logger]
    callbacks: list[pl.Callback]
    trainer: Callable[..., pl.Trainer]


def build(cfg: DictConfig, timings: dict[str, float] | None = None) -> Parts:
    """Seed, then instantiate ``cfg``'s :class:`Parts`: the datamodule (set up for ``fit``), the model with its dropout
    methods attached, the :class:`~dropout_lab.module.Classifier`, the loggers, the callbacks group and the trainer
    factory. :func:`dropout_lab.train.train` and ``eval.py`` (from a job's own ``.hydra/config.yaml``) build the same
    objects, so a checkpoint's ``state_dict`` loads into them without constructor arguments.

    Common random numbers (:mod:`~dropout_lab.seeding`): the datamodule's batch order has its own
    generator (stream ``order``), the network is built from stream ``init`` and the method is attached
    and trains on stream ``method`` (torch's global generator from then on), so every method of one
    seed starts from the same weights and sees the same batches. ``timings`` receives ``setup_data``,
    ``setup_model`` and ``setup_trainer`` (seconds; the trainer's own construction adds to the last).

    Raises:
        ConfigError: from :func:`split_config`, :func:`build_model`, :func:`attach` or the logger group, before
            any training step.
    """
    timings = {} if timings is None else timings
    start = time.perf_counter()
    split_config(cfg.dropout)
    pl.seed_everything(stream_seed(cfg.seed, INIT), workers=True, verbose=False)
    datamodule = instantiate(cfg.dataset, order_seed=stream_seed(cfg.seed, ORDER))
    datamodule.setup("fit")
    timings["setup_data"], start = time.perf_counter() - start, time.perf_counter()
    model = build_model(cfg, datamodule)
    if cfg.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    pl.seed_everything(stream_seed(cfg.seed, METHOD), workers=True, verbose=False)
    methods = attach(model, cfg.dropout)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = Classifier(model, instantiate(cfg.optimizer), scheduler, datamodule.num_classes, datamodule.num_train)
    timings["setup_model"], start = time.perf_counter() - start, time.perf_counter()
    progress_bar = cfg.trainer.get("enable_progress_bar", True)
    trainer, quiet = OmegaConf.to_container(cfg.trainer, resolve=True), {"profiler": compat.null_profiler()}
    parts = Parts(
        datamodule,
        module,
        methods,
        loggers=instantiate_loggers(cfg.get("logger")),
        callbacks=instantiate_callbacks(cfg.get("callbacks"), progress_bar=progress_bar),
        trainer=functools.partial(instantiate, trainer, **({} if trainer.get("profiler") else quiet)),
    )
    timings["setup_trainer"] = time.perf_counter() - start
    return parts


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
