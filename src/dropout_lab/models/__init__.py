"""Backbones with declared dropout sites, one file per family (torchvision style)."""

from dropout_lab.models.lenet import LeNet5
from dropout_lab.models.mlp import MLP

__all__ = ["LeNet5", "MLP"]
