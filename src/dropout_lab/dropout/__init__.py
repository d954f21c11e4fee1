"""Dropout methods: one module per method, all subclasses of :class:`DropoutMethod`.

Adding a method = one module here: the class and its :class:`~dropout_lab.dropout.spec.MethodSpec`, registered
with :func:`~dropout_lab.dropout.spec.register` (docs/methods/README.md, "Adding a method"); a preset YAML in
``conf/dropout/`` is optional. The config-to-object code (``attach``) lives in
:mod:`dropout_lab.config`, so importing this package does not import Hydra.
"""

from dropout_lab.dropout.base import DropoutContext, DropoutMethod, NoDropout, SiteSpec
from dropout_lab.dropout.sites import Site, find_sites

__all__ = ["DropoutContext", "DropoutMethod", "NoDropout", "Site", "SiteSpec", "find_sites"]
