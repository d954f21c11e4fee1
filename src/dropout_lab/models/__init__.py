"""Backbones with declared dropout sites, one file per family (torchvision style)."""

from dropout_lab.models.alexnet import alexnet
from dropout_lab.models.lenet import LeNet5
from dropout_lab.models.mlp import MLP
from dropout_lab.models.resnet import resnet18, resnet34, resnet50, resnet101
from dropout_lab.models.squeezenet import squeezenet1_1

__all__ = ["LeNet5", "MLP", "alexnet", "resnet18", "resnet34", "resnet50", "resnet101", "squeezenet1_1"]
