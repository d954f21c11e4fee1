"""One job per effective configuration: what a sweep job computes, independent of the arguments its
dropout method ignores (``none`` ignores ``p``): :func:`dropout_lab.job.identity`.

Used by the default sweeper (``hydra_plugins.dropout_lab_sweeper.DedupSweeper``, which launches each
effective configuration once, planned by :func:`plan` without composing every job) and by the report
(which keeps one row per configuration and seed of older sweeps that trained duplicates).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dropout_lab.job import identity, neutral


@dataclass
class Planned:
    """One job of a sweep as :func:`plan` sees it: ``valid`` (its config passes
    :func:`~dropout_lab.validate.validate`), its :func:`~dropout_lab.job.identity` ``key`` and HParams ``row``
    (:func:`~dropout_lab.summary.flat_hparams`), both None when not valid, and the metric names it logs."""

    overrides: list[str]
    valid: bool
    key: str | None = None
    row: dict[str, Any] | None = None
    metrics: tuple[str, ...] = ()


def checked(cfg: DictConfig) -> dict[str, Any] | None:
    """``cfg`` resolved as plain containers (without ``hydra``, and ``output_dir``, which only the running job
    resolves, as ``.``) if it passes :func:`~dropout_lab.validate.validate`; None if it does not."""
    from dropout_lab.validate import validate

    node = OmegaConf.to_container(cfg, resolve=False)
    node.pop("hydra", None)
    node["output_dir"] = "."
    try:
        conf = OmegaConf.create(node)
        validate(conf)
        return OmegaConf.to_container(conf, resolve=True)
    except Exception:  # noqa: BLE001 - a bad value, or an interpolation only the job resolves: not trusted here
        return None


def composed(cfg: DictConfig, overrides: list[str]) -> Planned:
    """:class:`Planned` from a job's composed config (validated whole)."""
    from dropout_lab.hparams import metric_names
    from dropout_lab.summary import flat_hparams

    config = checked(cfg)
    if config is None:
        return Planned(list(overrides), False)
    return Planned(list(overrides), True, identity(cfg), flat_hparams(config), tuple(metric_names([config])))


class Structure:
    """The jobs of a sweep that share their config groups and structural overrides: one composed config
    (``cfg``, the first such job's), from which every other job follows by its plain ``key=value``
    overrides (:meth:`job`)."""

    _ABSENT = object()

    def __init__(self, cfg: DictConfig, overrides: list[str], values: dict[str, Any]) -> None:
        from dropout_lab.errors import ConfigError
        from dropout_lab.summary import COLUMNS
        from dropout_lab.validate import JOINT_KEYS, validate

        self.cfg, self.first, self.values = cfg, composed(cfg, overrides), values
        self.node = OmegaConf.to_container(cfg, resolve=False)
        self.node.pop("hydra", None)
        # keys whose change needs the whole config: cross-key conditions, the metrics a job logs
        self.joint = (*JOINT_KEYS, "eval.mc_samples")
        self.interpolated = any(
            isinstance(self.raw(source), str) and "${" in self.raw(source) for source, _, _ in COLUMNS.values()
        )
        # valid apart from the plain values (which each job checks on its own)?
        plain = OmegaConf.to_container(cfg, resolve=False)
        plain.pop("hydra", None)
        plain["output_dir"] = "."
        self.sound = self.first.valid
        if not self.sound:
            try:
                validate(OmegaConf.create(plain))
            except ConfigError as err:
                self.sound = None if any(err.key == k or err.key.startswith(k + ".") for k in values) else False
            except Exception:  # noqa: BLE001
                self.sound = False

    def raw(self, key: str) -> Any:
        node: Any = self.node
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return self._ABSENT
            node = node[part]
        return node

    def job(self, overrides: list[str], values: dict[str, Any], load: Callable[[list[str]], DictConfig]) -> Planned:
        """The job with plain override ``values`` (dotted key -> value as Hydra parsed it)."""
        from dropout_lab.errors import ConfigError
        from dropout_lab.summary import hparam_cell, hparam_column
        from dropout_lab.validate import check_value

        if self.sound is False:
            return Planned(list(overrides), False)
        changed = [k for k, v in values.items() if self.values.get(k, self._ABSENT) != v]
        if (
            self.sound is None
            or self.interpolated
            or any(k == j or k.startswith(j + ".") for k in changed for j in self.joint)
            or any(OmegaConf.select(self.cfg, k, default=self._ABSENT) is self._ABSENT for k in values)
        ):
            return composed(load(overrides), overrides)  # composed whole (and Hydra names a key it cannot set)
        try:
            for key, value in values.items():
                check_value(key, value, self.cfg.dropout.name)
            row = dict(self.first.row)
            row.update({hparam_column(k): hparam_cell(k, v) for k, v in values.items() if hparam_column(k)})
        except (ConfigError, TypeError, ValueError):
            return Planned(list(overrides), False)
        node = json.loads(json.dumps(self.node, default=str))
        for key, value in values.items():
            if not neutral(key):
                *parents, leaf = key.split(".")
                target = node
                for part in parents:
                    target = target[part]
                target[leaf] = value
        return Planned(list(overrides), True, identity(node), row, self.first.metrics)


def plan(load: Callable[[list[str]], DictConfig], jobs: Sequence[Sequence[str]]) -> list[Planned]:
    """Every job of ``jobs`` (override lists) planned without composing each: ``load(overrides)`` (Hydra's
    ``load_sweep_config``) composes one config per :class:`Structure` (the same config groups and structural
    overrides: ``+key``, ``~key``, a dict or list value, ``hydra.*``), and each job follows from it by its
    plain ``key=value`` overrides, as Hydra's config loader applies them after the defaults list
    (``OmegaConf.update``): its values checked one by one (:func:`~dropout_lab.validate.check_value`), its
    :func:`~dropout_lab.job.identity` and HParams row derived. A job whose plain keys meet a cross-key condition
    (:data:`~dropout_lab.validate.JOINT_KEYS`) or an interpolated column is composed and validated whole.
    Composing 1,000 jobs one by one took ~0.1 s each; this takes one composition per structure."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not jobs:
        return []
    parser, structures, planned = OverridesParser.create(), {}, []
    first = load(list(jobs[0]))
    groups = set(first.hydra.runtime.choices.keys())
    for job in jobs:
        parsed = parser.parse_overrides(list(job))
        plain = [
            o
            for o in parsed
            if o.type.name == "CHANGE"
            and o.package is None
            and o.key_or_group not in groups
            and not o.key_or_group.startswith("hydra")
            and not isinstance(o.value(), (dict, list))
        ]
        values = {o.key_or_group: o.value() for o in plain}
        shape = tuple(o.input_line for o in parsed if o not in plain) + tuple(values)
        if shape not in structures:
            cfg, first = (first if first is not None else load(list(job))), None
            structures[shape] = Structure(cfg, list(job), values)
            planned.append(structures[shape].first)
            continue
        planned.append(structures[shape].job(list(job), values, load))
    return planned
