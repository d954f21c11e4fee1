"""Registers every dropout method's config node (``dropout=<key>``) in Hydra's ConfigStore.

Hydra imports every module under ``hydra_plugins`` when it looks for plugins, before it composes a config, so
the ``dropout`` group is complete for ``train.py``, ``eval.py``, the compose API and every launcher. The nodes
come from the methods' specs (:mod:`dropout_lab.dropout.spec`).
"""

from dropout_lab.dropout.spec import store

store()
