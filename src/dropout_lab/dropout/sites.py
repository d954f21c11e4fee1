"""Dropout sites declared by the models (no config code here: models import this module without
Hydra); :func:`dropout_lab.config.attach` fills them from the ``dropout`` config."""

from __future__ import annotations

from torch import Tensor, nn

from dropout_lab.dropout.base import SiteKind, SiteSpec

SITE_CHOICES = ("fc", "conv", "all", "default")


class Site(nn.Module):
    """A place in a model where a dropout method may sit; the identity until
    :func:`dropout_lab.config.attach` fills it.

    Args:
        kind: ``"fc"`` for unit scope after a fully connected layer (input (N, F)), ``"conv"`` for
            channel scope after a conv block (input (N, C, H, W)).
        num_features: F or C.
        prev: dotted path (from the model root) of the layer feeding the site, or None.
        next: dotted path of the layer consuming the site's output, or None.

    Shapes: forward (N, *) -> (N, *), delegated to ``self.method``.
    """

    def __init__(self, kind: SiteKind, num_features: int, prev: str | None = None, next: str | None = None) -> None:
        super().__init__()
        if kind not in ("fc", "conv"):
            raise ValueError(f"site kind must be 'fc' or 'conv', got {kind!r}")
        self.kind, self.num_features, self.prev, self.next = kind, num_features, prev, next
        self.method: nn.Module = nn.Identity()

    def spec(self, model: nn.Module) -> SiteSpec:
        """This site's :class:`SiteSpec`, with ``prev``/``next`` resolved to modules of ``model``."""
        name = next(n for n, m in model.named_modules() if m is self)
        resolve = lambda path: model.get_submodule(path) if path else None  # noqa: E731
        return SiteSpec(name, self.kind, self.num_features, resolve(self.prev), resolve(self.next))

    def forward(self, x: Tensor) -> Tensor:
        return self.method(x)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, num_features={self.num_features}"


def find_sites(model: nn.Module, sites: str) -> list[Site]:
    """The model's sites of the requested kind, in forward order.

    Args:
        model: a network that declares :class:`Site` modules.
        sites: ``"fc"``, ``"conv"`` or ``"all"``.

    Raises:
        ValueError: for another value, or if the model has no site of that kind.
    """
    if sites not in ("fc", "conv", "all"):
        raise ValueError(f"dropout.sites={sites!r} is not one of fc, conv, all, default")
    found = [m for m in model.modules() if isinstance(m, Site) and sites in (m.kind, "all")]
    if not found:
        kinds = sorted({m.kind for m in model.modules() if isinstance(m, Site)})
        raise ValueError(
            f"dropout.sites={sites!r}: model {type(model).__name__} has no such site (it has {kinds or 'none'})"
        )
    return found
