"""One declaration per dropout method: a :class:`MethodSpec` next to its class, from which everything else about
the method is derived (docs/methods/README.md, "Adding a method").

A spec says what the method's config node holds (``p`` and every argument, each an :class:`Arg` with its
default, what it accepts, its meaning and its tuning range), what ``p`` means and whether it is a drop rate,
the sites ``sites: default`` means, the arguments the method ignores, its paper and what it records. From the
specs come:

* the ``dropout`` config group: :func:`store` registers one node per method in Hydra's ConfigStore
  (``dropout=<key>``; called by the ``hydra_plugins.dropout_lab_methods`` plugin), so ``conf/dropout/`` holds
  only presets that change a method's values;
* the validation of ``dropout.*`` (:meth:`MethodSpec.check`, used by :mod:`dropout_lab.validate`);
* the dedup's ignored arguments and the report's ``p_is_rate`` (:mod:`dropout_lab.dedup`);
* the Optuna search space (:meth:`MethodSpec.search_space`, :mod:`dropout_lab.tuning`);
* the methods tables of README.md and docs/methods/README.md (``scripts/method_tables.py``; a test fails when
  they and the specs disagree);
* the plain-PyTorch layers of :func:`dropout_lab.methods.create`.

The methods of this package register themselves on import; :func:`load` imports them all, and also every
module named in the environment variable ``DROPOUT_LAB_METHODS`` (comma-separated module names, for methods
kept outside this repository). This module does not import Hydra (only :func:`store` does).
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dropout_lab.checks import RATE, BadValue, Check

#: environment variable naming extra modules that register methods (``mypkg.my_method,other``)
PLUGINS_ENV = "DROPOUT_LAB_METHODS"


@dataclass(frozen=True)
class Arg:
    """One argument of a method's config node.

    Attributes:
        default: the value a config gets unless it overrides it (``None`` is written ``null``).
        accepts: what the argument accepts (:mod:`dropout_lab.checks`); checked before anything is built.
        doc: what it means, with units (one line; the generated tables print it).
        tune: its search range for Optuna in hydra-optuna-sweeper's syntax (``interval(0.05, 0.8)``,
            ``tag(log, interval(1e-4, 1e-2))``, ``choice(3, 5)``), or None when it is not tuned.
    """

    default: Any
    accepts: Check
    doc: str
    tune: str | None = None


def rate_p(default: float, doc: str = "drop probability", tune: str | None = "interval(0.05, 0.8)") -> Arg:
    """The :class:`Arg` of ``p`` for most methods: a drop probability in [0, 1) (``p = 1`` would drop everything),
    tuned over [0.05, 0.8] unless ``tune`` says otherwise; ``doc`` is what ``p`` means."""
    return Arg(default, RATE, doc, tune)


@dataclass(frozen=True)
class MethodSpec:
    """The one declaration of a dropout method (see the module docstring for what derives from it).

    Attributes:
        key: the config key (``dropout=<key>``, ``dropout.name``); a source's variant keeps its own key.
        cls: the :class:`~dropout_lab.dropout.base.DropoutMethod` subclass; it is built as
            ``cls(site=SiteSpec, p=..., **args)`` (model-level methods through their ``attach``).
        source: the paper (authors year) and, where it came from one, the source document.
        summary: what the method does, in one line.
        p: ``p``'s :class:`Arg`; its ``doc`` is what ``p`` means for this method (``p_meaning``).
        p_is_rate: True when ``p`` is the probability that a unit is dropped (then E[drop_fraction] ~ p).
        args: every other argument, in the order the config shows them.
        default_sites: what ``sites: default`` means (fc, conv, all), before falling back to the sites a
            model has (:func:`~dropout_lab.dropout.sites.resolve_default`).
        sites: the config's ``sites`` value (``default`` unless the method fixes its sites).
        ignored: arguments the method accepts and ignores (``("p",)`` for ``none``): a sweep over them
            trains one job (:mod:`dropout_lab.dedup`).
        search: search ranges of keys outside ``dropout.*`` (``none`` tunes nothing: its trials are seeds).
        eval_identity: True when evaluation is the bare network (the identity at every site); False for a method
            with a test-time form (learned gates, a pruned network), which the contract suite then does not compare
            with the bare network.
        drop_fraction: what the recorded ``drop_fraction`` is, relative to ``p``.
        p_eq: what the recorded ``p_eq`` (equivalent Bernoulli rate) is.
    """

    key: str
    cls: type
    source: str
    summary: str
    p: Arg
    p_is_rate: bool = True
    args: Mapping[str, Arg] = field(default_factory=dict)
    default_sites: str = "fc"
    sites: str = "default"
    ignored: tuple[str, ...] = ()
    search: Mapping[str, str] = field(default_factory=dict)
    eval_identity: bool = True
    drop_fraction: str = "~ p"
    p_eq: str = "= drop fraction"

    @property
    def p_meaning(self) -> str:
        """What ``p`` is for this method (``p.doc``), as written into every job's ``metrics.json``."""
        return self.p.doc

    @property
    def target(self) -> str:
        """The class' import path (the node's ``_target_``)."""
        return f"{self.cls.__module__}.{self.cls.__qualname__}"

    def arguments(self) -> dict[str, Arg]:
        """``p`` and every argument, in config order."""
        return {"p": self.p, **self.args}

    def defaults(self) -> dict[str, Any]:
        """``{name: default}`` of :meth:`arguments`."""
        return {name: arg.default for name, arg in self.arguments().items()}

    def node(self) -> dict[str, Any]:
        """The ``dropout`` config node: ``_target_``, ``_partial_: true``, ``name``, ``p``, ``sites``, the arguments."""
        p, *rest = self.defaults().items()
        return {
            "_target_": self.target,
            "_partial_": True,
            "name": self.key,
            "p": p[1],
            "sites": self.sites,
            **dict(rest),
        }

    def check(self, name: str, value: Any) -> None:
        """Check one argument's value.

        Raises:
            BadValue: as ``dropout.<name>=<value>: must be <what it accepts>`` (for a list, the first item it refuses:
                ``dropout.<name>.<i>=<item>``), or for a name the method
                does not have (naming the closest).
        """
        arg = self.arguments().get(name)
        if arg is None:
            close = difflib.get_close_matches(name, list(self.arguments()), n=1)
            hint = f"did you mean dropout.{close[0]}? " if close else ""
            raise BadValue(
                f"dropout.{name}",
                value,
                f"{self.key} has no such argument; {hint}it takes {', '.join(self.arguments())}",
            )
        items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]  # a list: each item
        for i, item in items:
            if not arg.accepts.ok(item):
                key = f"dropout.{name}" if i is None else f"dropout.{name}.{i}"
                raise BadValue(key, item, f"must be {arg.accepts.wants}")

    def search_space(self) -> dict[str, str]:
        """Optuna's search space for this method: ``{"dropout.p": "interval(...)", ...}`` plus :attr:`search`."""
        tuned = {f"dropout.{name}": arg.tune for name, arg in self.arguments().items() if arg.tune is not None}
        return tuned | dict(self.search)

    def build(self, site: Any, **kwargs: Any) -> Any:
        """The method at one site with the defaults replaced by ``kwargs``, each value checked first.

        Args:
            site: a :class:`~dropout_lab.dropout.base.SiteSpec`.
            **kwargs: argument values (``p=0.3``).

        Raises:
            BadValue: for a value the spec refuses or an unknown argument.
            ValueError: from the constructor, for a combination it refuses (``p`` with ``flip_factor``).
        """
        for name, value in kwargs.items():
            self.check(name, value)
        return self.cls(site=site, **(self.defaults() | kwargs))


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry and set ``spec.cls.spec``; returns ``spec`` (write ``SPEC = register(...)``).

    Raises:
        ValueError: if another class already holds the key, or a default is refused by its own ``accepts``.
    """
    held = _REGISTRY.get(spec.key)
    if held is not None and held.target != spec.target:
        raise ValueError(f"dropout method key {spec.key!r} is taken by {held.target}; {spec.target} needs another key")
    for name, arg in spec.arguments().items():
        try:
            spec.check(name, arg.default)
        except BadValue as err:
            raise ValueError(f"{spec.key}: its default {err}") from None
    spec.cls.spec = spec
    _REGISTRY[spec.key] = spec
    return spec


def load() -> None:
    """Import every method module of this package and of ``$DROPOUT_LAB_METHODS`` (each registers itself)."""
    package = importlib.import_module("dropout_lab.dropout")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"dropout_lab.dropout.{module.name}")
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(name)


def specs() -> dict[str, MethodSpec]:
    """Every registered method, by key (sorted)."""
    load()
    return dict(sorted(_REGISTRY.items()))


def get(key: str) -> MethodSpec:
    """The spec of method ``key``.

    Raises:
        BadValue: on ``dropout``, for an unknown key, naming the closest and listing the methods.
    """
    if key not in _REGISTRY:
        load()
    if key not in _REGISTRY:
        close = difflib.get_close_matches(str(key), list(_REGISTRY), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise BadValue("dropout", key, f"unknown dropout method; {hint}the methods are {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def store() -> None:
    """Register every method's :meth:`~MethodSpec.node` in Hydra's ConfigStore as ``dropout/<key>``."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for key, spec in specs().items():
        cs.store(group="dropout", name=key, node=spec.node(), provider="dropout_lab")
