"""Every config value checked once, before anything is built (docs: docs/faults.md).

:data:`RANGES` is the one table of what each key of ``conf/`` accepts (a number range, a set of
choices, null); :func:`validate` checks a composed config against it and checks the MNIST-family
data files, raising :class:`~dropout_lab.errors.ConfigError` (``key=value: allowed``) at the first
bad value. ``tests/test_validation.py`` fails when a numeric key in ``conf/`` has no entry here.

Checks that need built objects stay where those objects are made and raise ``ConfigError`` there:
a method argument against its site (``dropout.sector_size`` larger than a layer), the model against
the dataset (:func:`dropout_lab.config.build_model`), cross-key conditions of a method
(``rate_min <= p <= rate_max``) in the method's constructor.
"""

from __future__ import annotations

import difflib
import math
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from torchvision.datasets.mnist import SN3_PASCALVINCENT_TYPEMAP

from dropout_lab.data.base import SPLITS
from dropout_lab.dropout.sites import SITE_CHOICES
from dropout_lab.errors import ConfigError
from dropout_lab.models.activations import ACTIVATIONS
from dropout_lab.models.resnet import STEMS


@dataclass(frozen=True)
class Check:
    """What one key accepts: ``ok(value)`` and the phrase ``wants`` for the error message
    (``"an integer >= 1"``). ``a | b`` accepts what either accepts."""

    ok: Callable[[Any], bool]
    wants: str

    def __or__(self, other: Check) -> Check:
        return Check(lambda v: self.ok(v) or other.ok(v), f"{self.wants} or {other.wants}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> Check:
    """A finite number (an ``int`` if ``integer``; no bools) between ``low`` and ``high``, ends
    included unless ``low_open``/``high_open``."""

    def ok(v: Any) -> bool:
        if not _is_number(v) or (integer and not isinstance(v, int)):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    what = "an integer" if integer else "a number"
    if math.isinf(high):
        bound = f" {'>' if low_open else '>='} {low}" if not math.isinf(low) else ""
    else:
        bound = f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return Check(ok, what + bound)


def integer(low: int, high: float = math.inf) -> Check:
    """An ``int`` in [low, high]."""
    return number(low, high, integer=True)


def choice(*values: str) -> Check:
    """One of the strings ``values``."""
    return Check(lambda v: v in values, f"one of {', '.join(values)}")


def exactly(value: Any, meaning: str) -> Check:
    """The one value ``value`` (of its type: ``-1`` is not ``-1.0`` or ``True``), which means ``meaning``;
    ``None`` is written ``null``."""
    return Check(lambda v: type(v) is type(value) and v == value, f"{'null' if value is None else value} ({meaning})")


BOOL = Check(lambda v: isinstance(v, bool), "true or false")
RATE = number(0, 1, high_open=True)  # a probability that must leave something: [0, 1)
FRACTION = number(0, 1)  # [0, 1]
POSITIVE = number(0, low_open=True)  # > 0
NONNEGATIVE = number(0)  # >= 0
COUNT = integer(1)  # a whole number >= 1
SIZE = exactly(None, "the files' size, or the model's native size") | COUNT
BATCHES = number(0, 1, low_open=True) | COUNT  # Lightning's limit_*_batches: a fraction of the epoch or a count
EVERY_BATCH = exactly(None, "every batch")

#: what every key of ``conf/`` accepts; a list or dict value is checked element by element
#: (``model.hidden_sizes``, ``dataset.subset``); keys absent from a config are skipped
RANGES: dict[str, Check] = {
    # top level (conf/config.yaml, conf/experiment)
    "seed": integer(0, 2**32 - 1),  # numpy's / Lightning's seed range
    "deterministic": BOOL,
    "channels_last": BOOL,
    "resume": BOOL,
    "checkpoint_every": NONNEGATIVE,  # seconds between last.ckpt writes; 0: every epoch
    "threads": exactly(None, "cores // workers under gpu_pool, torch's default otherwise") | COUNT,
    "eval.mc_samples": integer(0),  # 0: no Monte-Carlo test; T: T stochastic passes
    "callbacks.activation_variance": BOOL,
    "callbacks.activation_samples": COUNT,
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
    "model.image_size": SIZE,
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
    # dropout (conf/dropout/*.yaml): the type and the bounds that hold for every method using the key;
    # a method's own finer bounds and cross-key conditions are checked by its constructor
    "dropout.p": RATE,
    "dropout.sites": choice(*SITE_CHOICES),
    "dropout.block_size": Check(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v % 2 == 1, "an odd integer >= 1"
    ),
    "dropout.ramp_steps": exactly(None, "ramp over the whole run") | integer(0),
    "dropout.crossover": FRACTION,
    "dropout.mutation": FRACTION,
    "dropout.num_states": integer(4),
    "dropout.threshold": POSITIVE,
    "dropout.patience": COUNT,
    "dropout.warmup": NONNEGATIVE,  # edropout's warm-up (its constructor bounds it further)
    "dropout.update_every": COUNT,
    "dropout.ema": RATE,
    "dropout.initial_rate": exactly(None, "p/3") | RATE,
    "dropout.max_rate": exactly(None, "5p/3") | RATE,
    "dropout.eps": NONNEGATIVE,
    "dropout.flip_factor": POSITIVE,
    "dropout.decay": POSITIVE,  # curriculum: decay over the planned run (gamma x steps)
    "dropout.max_mask_elements": COUNT,
    "dropout.heldout": COUNT,
    "dropout.max_batch": COUNT,
    "dropout.permutations": COUNT,
    "dropout.truncation": NONNEGATIVE,
    "dropout.inference_samples": COUNT,
    "dropout.lam": NONNEGATIVE,
    "dropout.length_scale": POSITIVE,
    "dropout.temperature": POSITIVE,
    "dropout.momentum": number(0, 1, low_open=True),
    "dropout.rate_min": RATE,
    "dropout.rate_max": RATE,
    "dropout.sector_size": COUNT,
    "dropout.sub_batch": COUNT,
    "dropout.probes": COUNT,
    "dropout.delta": exactly(None, "0.4 p") | RATE,
    "dropout.shared_dims": exactly(None, "the method's default axes") | COUNT,
    "dropout.per_sample": BOOL,
    "dropout.sample_rate": BOOL,
    "dropout.group_weighted": BOOL,
}


def range_for(key: str) -> Check | None:
    """The :data:`RANGES` entry for a dotted leaf ``key`` of a config: the key itself with list
    indices dropped (``model.hidden_sizes.1`` -> ``model.hidden_sizes``), else its nearest listed
    parent (``dataset.subset.train`` -> ``dataset.subset``); None if there is none."""
    parts = [part for part in key.split(".") if not part.isdigit()]
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


def check_value(key: str, value: Any) -> None:
    """Check one config value (a scalar, or a list/dict checked element by element) against :data:`RANGES`.

    Raises:
        ConfigError: as ``key=value: must be <what the key accepts>``.
    """
    for leaf, item in leaves(value, key):
        check = range_for(leaf)
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
    for key, value in sorted(leaves(OmegaConf.to_container(cfg, resolve=True)), key=lambda kv: kv[0].count(".")):
        check_value(key, value)
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
