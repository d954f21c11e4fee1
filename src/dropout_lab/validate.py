"""Every config value checked once, before anything is built (docs: docs/faults.md).

:data:`RANGES` is the one table of what each harness key of ``conf/`` accepts (a number range, a set of
choices, null; :mod:`dropout_lab.checks`); a dropout method's ``p`` and arguments are declared in its spec
(:mod:`dropout_lab.dropout.spec`). :func:`validate` checks a composed config against both and checks the
MNIST-family data files, raising :class:`~dropout_lab.errors.ConfigError` (``key=value: allowed``) at the
first bad value. ``tests/test_validation.py`` fails when a numeric key in ``conf/`` has no entry here.

Checks that need built objects stay where those objects are made and raise ``ConfigError`` there:
a method argument against its site (``dropout.sector_size`` larger than a layer), the model against
the dataset (:func:`dropout_lab.config.build_model`), cross-key conditions of a method
(``rate_min <= p <= rate_max``) in the method's constructor.
"""

from __future__ import annotations

import difflib
import math
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from torchvision.datasets.mnist import SN3_PASCALVINCENT_TYPEMAP

from dropout_lab.checks import (
    BATCHES,
    BOOL,
    COUNT,
    EVERY_BATCH,
    FRACTION,
    NONNEGATIVE,
    POSITIVE,
    RATE,
    SIZE,
    Check,
    choice,
    exactly,
    integer,
    number,
)
from dropout_lab.data.base import SPLITS
from dropout_lab.dropout import spec
from dropout_lab.dropout.sites import SITE_CHOICES
from dropout_lab.errors import ConfigError, reported
from dropout_lab.models.activations import ACTIVATIONS
from dropout_lab.models.resnet import STEMS

#: what every key of ``conf/`` accepts; a list or dict value is checked element by element
#: (``model.hidden_sizes``, ``dataset.subset``); keys absent from a config are skipped
RANGES: dict[str, Check] = {
    # top level (conf/config.yaml, conf/experiment)
    "seed": integer(0, 2**32 - 1),  # numpy's / Lightning's seed range
    "deterministic": BOOL,
    "channels_last": BOOL,
    "resume": BOOL,
    "checkpoint_every": NONNEGATIVE,  # seconds between last.ckpt writes; 0: every epoch
    "keep_checkpoint": exactly("none", "delete both after the job")
    | exactly("last", "the final epoch's")
    | exactly("best", "the epoch with the highest val/acc's"),
    "eval.checkpoint": exactly("last", "the final epoch's weights")
    | exactly("best", "the weights of the epoch with the highest val/acc"),
    "threads": exactly(None, "cores // workers under gpu_pool, torch's default otherwise") | COUNT,
    "eval.mc_samples": integer(0),  # 0: no Monte-Carlo test; T: T stochastic passes
    "callbacks.activation_variance.samples": COUNT,
    # report (read by scripts/report.py; no effect on training)
    "report.tuning_seeds": exactly(None, "select and report on every seed") | integer(0, 2**32 - 1),
    "report.evaluation_seeds": exactly(None, "every seed that is not a tuning seed") | integer(0, 2**32 - 1),
    "report.rope": POSITIVE,
    "report.metric": choice("acc", "nll", "ece", "brier"),
    "report.selection": choice("last", "best"),
    "callbacks.early_stopping.patience": integer(0),
    "callbacks.early_stopping.min_delta": NONNEGATIVE,
    "callbacks.early_stopping.mode": choice("min", "max"),
    "callbacks.lr_monitor.logging_interval": exactly(None, "each optimizer step") | choice("step", "epoch"),
    "callbacks.progress_bar.refresh_rate": POSITIVE,
    "anchor": exactly(None, "no reference") | FRACTION,  # a source's reported test accuracy, as a fraction
    # dataset
    "dataset.num_classes": integer(2),
    "dataset.in_channels": COUNT,
    "dataset.image_size": SIZE,
    "dataset.mean": number(),
    "dataset.std": POSITIVE,
    "dataset.batch_size": COUNT,
    "dataset.eval_batch_size": COUNT,
    "dataset.val_fraction": RATE,
    "dataset.split_seed": integer(0, 2**32 - 1),
    "dataset.subset": exactly(None, "the whole split") | COUNT,
    "dataset.num_workers": integer(0),
    "dataset.download": BOOL,
    "dataset.augment.flip": BOOL,
    "dataset.augment.crop_padding": integer(0),
    "dataset.augment.cutout": integer(0),
    # model
    "model.num_classes": integer(2),
    "model.in_channels": COUNT,
    "model.input_size": COUNT,
    "model.hidden_sizes": COUNT,
    "model.activation": choice(*ACTIVATIONS),
    "model.pool": choice("max", "avg"),
    "model.stem": choice(*STEMS),
    "model.input_dropout": BOOL,
    "model.hidden_dropout": choice("all", "first"),
    # optimizer, scheduler
    "optimizer.lr": POSITIVE,
    "optimizer.weight_decay": NONNEGATIVE,
    "optimizer.momentum": number(0, 1, high_open=True),
    "optimizer.nesterov": BOOL,
    "optimizer.rho": FRACTION,
    "optimizer.eps": POSITIVE,
    "scheduler.T_max": COUNT,
    "scheduler.eta_min": NONNEGATIVE,
    "scheduler.step_size": COUNT,
    "scheduler.gamma": POSITIVE,
    # trainer (pytorch_lightning.Trainer arguments)
    "trainer.max_epochs": exactly(-1, "no epoch limit: trainer.max_steps bounds training") | COUNT,
    "trainer.max_steps": exactly(-1, "no step limit") | COUNT,
    "trainer.limit_train_batches": EVERY_BATCH | BATCHES,
    "trainer.limit_val_batches": EVERY_BATCH | number(0, 1) | COUNT,  # 0 turns validation off
    "trainer.limit_test_batches": EVERY_BATCH | BATCHES,
    "trainer.devices": exactly("auto", "Lightning's choice")
    | exactly(-1, "every GPU")
    | integer(0),  # a list: those GPU indices
    "trainer.num_nodes": COUNT,
    "trainer.log_every_n_steps": COUNT,
    "trainer.num_sanity_val_steps": integer(-1),
    "trainer.check_val_every_n_epoch": exactly(None, "validate by steps") | COUNT,
    "trainer.accumulate_grad_batches": COUNT,
    "trainer.gradient_clip_val": exactly(None, "no clipping") | NONNEGATIVE,
    # dropout: the keys every method has; ``p`` and a method's arguments are checked against its spec
    # (:class:`~dropout_lab.dropout.spec.MethodSpec`, :func:`range_for`)
    "dropout.sites": choice(*SITE_CHOICES),
}


def range_for(key: str, method: str | None = None) -> Check | None:
    """What the dotted leaf ``key`` of a config accepts: for ``dropout.<arg>`` of method ``method``, the
    method's spec (:meth:`~dropout_lab.dropout.spec.MethodSpec.arguments`); else the :data:`RANGES` entry of the
    key itself with list indices dropped (``model.hidden_sizes.1`` -> ``model.hidden_sizes``), else of its
    nearest listed parent (``dataset.subset.train`` -> ``dataset.subset``); None if there is none.

    Raises:
        ConfigError: on ``dropout``, for an unknown ``method``.
    """
    parts = [part for part in key.split(".") if not part.isdigit()]
    if method is not None and len(parts) >= 2 and parts[0] == "dropout":
        with reported():
            arg = spec.get(method).arguments().get(parts[1])
        if arg is not None:
            return arg.accepts
    while parts:
        check = RANGES.get(".".join(parts))
        if check is not None:
            return check
        parts.pop()
    return None


def leaves(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every scalar in ``node`` (nested dicts and lists; list items as ``key.i``)."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from leaves(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from leaves(value, f"{key}.{i}")
    else:
        yield key, node


def check_idx_files(root: str, torchvision_class: str) -> None:
    """Check that every IDX file (``*-ubyte``) under ``<root>/<torchvision_class>/raw`` is as long as
    its header says (magic 0 0 type ndim, ndim big-endian 32-bit sizes, then the data; LeCun's MNIST
    page). Missing files are left to the datamodule (which downloads them or says where it looked).

    Raises:
        ConfigError: on ``data_root``, naming the truncated or corrupt file and its sizes.
    """
    for path in sorted((Path(root).expanduser() / torchvision_class / "raw").glob("*-ubyte")):
        with path.open("rb") as f:
            head = f.read(4)
            dtype = SN3_PASCALVINCENT_TYPEMAP.get(head[2]) if len(head) == 4 and head[:2] == b"\0\0" else None
            ndim = head[3] if dtype is not None else 0
            dims = f.read(4 * ndim)
        size, header = path.stat().st_size, 4 + 4 * ndim
        if dtype is None:
            what = "is not an IDX file"
        elif len(dims) < 4 * ndim:
            what = f"holds {size} bytes, less than its {header}-byte header"
        else:
            shape = struct.unpack(f">{ndim}I", dims)
            need = header + math.prod(shape) * dtype.itemsize
            if size == need:
                continue
            what = f"holds {size} bytes, its header ({'x'.join(map(str, shape))}) needs {need}"
        raise ConfigError(
            "data_root",
            root,
            f"{path} {what}: the file is truncated or corrupt; delete it and "
            "re-run with dataset.download=true, or copy it again",
        )


def check_value(key: str, value: Any, method: str | None = None) -> None:
    """Check one config value (a scalar, or a list/dict checked element by element) against :func:`range_for`
    (``method``: the ``dropout.name`` whose spec checks ``dropout.*``).

    Raises:
        ConfigError: as ``key=value: must be <what the key accepts>``.
    """
    for leaf, item in leaves(value, key):
        check = range_for(leaf, method)
        if check is not None and not check.ok(item):
            raise ConfigError(leaf, item, f"must be {check.wants}")


#: keys :func:`check_combinations` and the data-file check read together: a config where one of them changes
#: is validated whole, not value by value (:func:`dropout_lab.dedup.plan`)
JOINT_KEYS = (
    "dataset.subset",
    "dataset.root",
    "dataset.torchvision_class",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.limit_val_batches",
    "keep_checkpoint",
    "eval.checkpoint",
    "data_root",
)


def validates(cfg: DictConfig) -> bool:
    """Whether the run validates (``trainer.limit_val_batches`` is not 0): only then is there a best-validation
    checkpoint (kept during training and tested beside the last epoch as ``test_best/*``)."""
    limit = (cfg.get("trainer") or {}).get("limit_val_batches")
    return limit is None or isinstance(limit, bool) or float(limit) > 0


def check_combinations(cfg: DictConfig) -> None:
    """Conditions between keys and the keys of mapping values, checked before training.

    Raises:
        ConfigError: for ``dataset.subset`` with a key other than train, val, test (naming the closest);
            ``trainer.max_epochs=-1`` without ``trainer.max_steps``; a best checkpoint (``keep_checkpoint=best``
            or ``eval.checkpoint=best``) with validation off (``trainer.limit_val_batches=0``).
    """
    subset = (cfg.get("dataset") or {}).get("subset")
    if isinstance(subset, Mapping):
        for key in subset:
            if key not in SPLITS:
                close = difflib.get_close_matches(str(key), SPLITS, n=1)
                hint = f"did you mean dataset.subset.{close[0]}? " if close else ""
                raise ConfigError(
                    f"dataset.subset.{key}", subset[key], f"unknown split; {hint}the splits are {', '.join(SPLITS)}"
                )
    trainer = cfg.get("trainer") or {}
    if trainer.get("max_epochs") == -1 and trainer.get("max_steps", -1) == -1:
        raise ConfigError(
            "trainer.max_epochs",
            -1,
            "with trainer.max_steps=-1 training would never end: set trainer.max_steps=N "
            "(a fixed number of updates) or trainer.max_epochs=N",
        )
    if not validates(cfg):
        for key, value in (
            ("keep_checkpoint", cfg.get("keep_checkpoint")),
            ("eval.checkpoint", (cfg.get("eval") or {}).get("checkpoint")),
        ):
            if value == "best":
                raise ConfigError(
                    key,
                    "best",
                    "the best checkpoint is the epoch with the highest val/acc, and "
                    "trainer.limit_val_batches=0 turns validation off: use last, or validate",
                )


def validate(cfg: DictConfig) -> None:
    """Check ``cfg`` (a composed ``conf/config.yaml``) before anything is built: every leaf with a
    :data:`RANGES` entry (top-level keys first), the conditions between keys (:func:`check_combinations`), then the MNIST-family data files (:func:`check_idx_files`).

    Raises:
        ConfigError: at the first bad value, as ``key=value: must be <what the key accepts>``.
    """
    # shallower keys first: a bad ``seed`` is named as itself, not as ``dataset.split_seed`` that interpolates it
    node = OmegaConf.to_container(cfg, resolve=True)
    method = (node.get("dropout") or {}).get("name")
    if method is not None:
        with reported():
            spec.get(method)  # an unknown method is named before its arguments
    for key, value in sorted(leaves(node), key=lambda kv: kv[0].count(".")):
        check_value(key, value, method)
    check_combinations(cfg)
    dataset = cfg.get("dataset") or {}
    if str(dataset.get("torchvision_class", "")) in ("MNIST", "FashionMNIST", "KMNIST"):
        check_idx_files(str(dataset.root), str(dataset.torchvision_class))


def check_keys(cfg: DictConfig, overrides: list[str]) -> None:
    """Refuse a ``key=value`` override whose key ``cfg`` does not have (``eval.mc_sample=5``), naming the
    closest key it has (``difflib``); ``+key=value`` (an addition) and ``hydra.*`` keys are not checked.

    Raises:
        ConfigError: on the unknown key, as ``key=value: unknown key; did you mean <closest>? ...``.
    """
    known = None
    for override in overrides:
        key, _, value = override.partition("=")
        if key.startswith(("+", "~", "hydra.", "hydra/")) or OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT:
            continue
        known = known or [k for k, _ in leaves(OmegaConf.to_container(cfg, resolve=False))]
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        raise ConfigError(
            key,
            yaml.safe_load(value) if value else value,
            f"unknown key; did you mean {close[0]}?"
            if close
            else "unknown key (python train.py --cfg job lists every key)",
        )


_ABSENT = object()


def preflight(argv: list[str], config_dir: Path) -> None:
    """Before Hydra runs ``train.py`` with command-line ``argv``: compose ``config_dir``'s ``config`` with the
    config-group choices of ``argv`` (the first value of a sweep) and :func:`check_keys` its plain
    ``key=value`` overrides, so that a typo'd key is refused naming the closest valid key (Hydra's own
    message says only that the key is not in the config). Anything this cannot compose is left to Hydra.

    Raises:
        ConfigError: for an unknown key.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:  # noqa: BLE001 - a malformed override: Hydra's parser says why
        return
    first = lambda o: next(iter(o.sweep_string_iterator())) if o.is_sweep_override() else o.get_value_element_as_str()  # noqa: E731
    groups = [o for o in parsed if (config_dir / o.key_or_group).is_dir() or o.key_or_group.startswith("hydra")]
    plain = [
        f"{o.key_or_group}={first(o)}"
        for o in parsed
        if o not in groups and o.type.name == "CHANGE" and o.package is None
    ]
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(
                "config",
                overrides=[f"{o.key_or_group}={first(o)}" for o in groups if not o.key_or_group.startswith("hydra")],
            )
    except Exception:  # noqa: BLE001 - left to Hydra, which reports it in full
        return
    check_keys(cfg, plain)
