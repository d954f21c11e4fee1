"""Dropout methods: one module per method, all subclasses of :class:`DropoutMethod`.

Adding a method = one module here + one YAML file in ``conf/dropout/`` whose ``_target_`` names the
class (see ``conf/dropout/standard.yaml``). The config-to-object code (``attach``) lives in
:mod:`dropout_lab.config`, so importing this package does not import Hydra.
"""

from dropout_lab.dropout.base import DropoutContext, DropoutMethod, NoDropout, SiteSpec, check_p
from dropout_lab.dropout.sites import Site, find_sites

__all__ = ["DropoutContext", "DropoutMethod", "NoDropout", "Site", "SiteSpec", "check_p", "find_sites"]
