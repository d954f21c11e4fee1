"""A sweep job, declared once: its folder name, what it computes (its identity), its overrides and its summary
file. The sweeper (folder names, dedup), the resume check (:mod:`dropout_lab.sweeplock`), the sweep's closing
line (:mod:`dropout_lab.callbacks`), the worker pool and the report read and write jobs through this module
(docs/sweeps.md, "Resuming and failures").

Three questions, one answer each:

* **Which folder?** :func:`folder_name`, from the job's overrides (before any config is composed).
* **Which computation?** :func:`identity`: the composed config without what cannot change the result
  (:data:`NEUTRAL_KEYS` and the arguments its dropout method ignores). Two jobs with one identity run once
  (:mod:`dropout_lab.dedup`); :func:`changed_keys` names what differs between a stored and a new config,
  also leaving out where a job ran (:data:`PLACEMENT_KEYS`).
* **What happened?** :class:`Job`: the folder's ``metrics.json`` read once, its status, its overrides.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from dropout_lab.dropout import spec

#: a job's summary (written by :func:`dropout_lab.train.train`, read by everything that asks what a job did)
SUMMARY_FILE = "metrics.json"
#: the list of a sweep's job folders, written at its root by dropout-lab's sweeper (read by its closing line)
JOBS_FILE = "jobs.json"
#: overrides that do not change what a job computes, so that adding them (``resume=true``) or moving
#: the data keeps the job's folder, and with it its checkpoint and summary
NEUTRAL_KEYS = ("resume", "data_root", "output_dir", "report")
#: keys set per worker by :func:`~dropout_lab.launch.place_job` (the GPU slot a job ran on), not by the user
PLACEMENT_KEYS = ("trainer.devices", "trainer.accelerator")
#: keys named first in a job folder (then the others, sorted), so a cut name still says what ran
LEADING_KEYS = ("dropout", "dropout.p", "dataset", "model", "seed")
#: longest readable part of a job folder name before the hash
MAX_NAME = 120


def neutral(key: str) -> bool:
    """Whether the dotted config key (``report.rope``) is or lies under one of :data:`NEUTRAL_KEYS`."""
    return key.split(".")[0] in NEUTRAL_KEYS


def override_key(override: str) -> str:
    """The config key of a command-line override: ``+dropout.p=0.5`` -> ``dropout.p``."""
    return override.split("=", 1)[0].lstrip("+~")


def folder_name(overrides: list[str], exclude_keys: list[str] = ()) -> str:
    """A readable, unique and re-run-stable folder name for one sweep job.

    ``key=value`` pairs of the job's overrides without ``exclude_keys`` and :data:`NEUTRAL_KEYS`,
    :data:`LEADING_KEYS` first and the rest sorted, joined by ``,``; characters other than letters, digits and ``=.,_+-``
    (``/`` in ``experiment/seed003=...`` or ``{}: `` in dict values) become ``_``; cut at
    :data:`MAX_NAME` characters; then ``-`` and 8 hex digits of the SHA-1 of every non-neutral
    override. The name does not depend on ``hydra.job.num`` (so a re-run with a changed job list finds
    the same folders) and two jobs that differ only in an excluded key still get different names.

    Example: ``['seed=1', 'dropout.p=0.5', 'dropout=standard']`` -> ``dropout=standard,dropout.p=0.5,seed=1-<hash>``.
    """

    def rank(o: str) -> tuple[int, str]:
        key = override_key(o)
        return (LEADING_KEYS.index(key), o) if key in LEADING_KEYS else (len(LEADING_KEYS), o)

    kept = sorted((o for o in overrides if not neutral(override_key(o))), key=rank)
    readable = ",".join(o for o in kept if override_key(o) not in set(exclude_keys))
    readable = re.sub(r"[^A-Za-z0-9=.,_+-]", "_", readable)[:MAX_NAME] or "defaults"
    digest = hashlib.sha1("\n".join(kept).encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def ignored_args(dropout: DictConfig | dict) -> tuple[str, ...]:
    """The arguments the method of a ``dropout`` config node ignores (its spec's ``ignored``; none for a method
    not registered now, e.g. a saved job of a plugin method, or a node without ``name``)."""
    found = spec.specs().get(dropout.get("name"))
    return found.ignored if found else ()


def identity(cfg: DictConfig | dict) -> str:
    """What a job computes, as canonical JSON: the config without ``hydra``, the :data:`NEUTRAL_KEYS` and the
    arguments its dropout method ignores (interpolations of a DictConfig stay unresolved, e.g. ``output_dir``)."""
    node = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    for key in ("hydra", *NEUTRAL_KEYS):
        node.pop(key, None)
    for arg in ignored_args(node["dropout"]):
        node["dropout"].pop(arg, None)
    return json.dumps(node, sort_keys=True, default=str)


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{dotted key: leaf}`` (lists are leaves)."""
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree}
    return {key: value for name, sub in tree.items() for key, value in flat(sub, f"{prefix}{name}.").items()}


def changed_keys(old: dict, new: dict) -> list[str]:
    """Dotted keys whose resolved values differ between two configs (plain dicts, as stored in
    ``metrics.json``), ignoring :data:`NEUTRAL_KEYS` and where they are used (``dataset.root`` = ``data_root``
    moved elsewhere is no change) and :data:`PLACEMENT_KEYS`."""

    def normalised(config: dict) -> dict[str, Any]:
        leaves = flat(json.loads(json.dumps(config, default=str)))
        paths = sorted(
            ((str(leaves[k]), f"<{k}>") for k in NEUTRAL_KEYS if isinstance(leaves.get(k), str) and leaves[k]),
            key=lambda item: -len(item[0]),
        )
        for key, value in leaves.items():
            for path, token in paths:
                value = value.replace(path, token) if isinstance(value, str) else value
            leaves[key] = value
        return {k: v for k, v in leaves.items() if not neutral(k) and k not in PLACEMENT_KEYS}

    a, b = normalised(old), normalised(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<missing>") != b.get(k, "<missing>"))


def publish(tmp: str | Path, target: str | Path) -> None:
    """Give the finished temporary file ``tmp`` the mode a newly created file gets under the process umask
    (``tempfile`` creates it 600: a colleague's report could not read it) and rename it over ``target``
    atomically (``os.replace``)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, target)


@dataclass(frozen=True)
class Job:
    """One job folder: what its summary says, read in one place.

    Attributes:
        folder: the job's output folder (``hydra.runtime.output_dir``).
    """

    folder: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    @property
    def summary_path(self) -> Path:
        return self.folder / SUMMARY_FILE

    def read(self) -> dict[str, Any]:
        """The parsed ``metrics.json``.

        Raises:
            FileNotFoundError: if the job wrote none; OSError or ValueError if it cannot be read or parsed.
        """
        return json.loads(self.summary_path.read_text())

    def summary(self) -> dict[str, Any] | None:
        """The parsed ``metrics.json``, or None if it is missing or unreadable."""
        try:
            return self.read()
        except (OSError, ValueError):
            return None

    def status(self) -> str:
        """``ok``, ``failed`` or ``interrupted`` from the summary; ``not started`` without one, ``unreadable`` if it
        does not parse."""
        try:
            return self.read().get("status", "unknown")
        except FileNotFoundError:
            return "not started"
        except (OSError, ValueError):
            return "unreadable"

    def finished(self) -> dict[str, Any] | None:
        """The summary of a job that finished (status ok), else None."""
        summary = self.summary()
        return summary if summary is not None and summary.get("status") == "ok" else None

    def overrides(self) -> dict[str, str]:
        """``{key: value}`` of the overrides Hydra recorded (``.hydra/overrides.yaml``; ``{}`` without one)."""
        path = self.folder / ".hydra" / "overrides.yaml"
        items = yaml.safe_load(path.read_text()) if path.exists() else []
        return {override_key(o): o.split("=", 1)[1] if "=" in o else "" for o in items or []}

    def write(self, summary: dict[str, Any], name: str = SUMMARY_FILE) -> Path:
        """Write ``summary`` as JSON to ``folder/<name>`` atomically (a temp file with a unique name in the same
        folder, then :func:`publish`; two writers never share a temp file); NaN and infinities become null."""
        clean = json.loads(json.dumps(summary, default=str), parse_constant=lambda _: None)
        target = self.folder / name
        with tempfile.NamedTemporaryFile(
            "w", dir=target.parent, prefix=f".{name}.", suffix=".tmp", delete=False
        ) as tmp:
            tmp.write(json.dumps(clean, indent=2))
        publish(tmp.name, target)
        return target
