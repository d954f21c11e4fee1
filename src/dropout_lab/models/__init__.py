"""Backbones with declared dropout sites, one file per family (torchvision style)."""

# builders (dropout_lab.models.resnet.resnet18, ...) stay in their modules: a package-level `alexnet` function would
# shadow the `alexnet` module that the configs' _target_ paths name
from dropout_lab.models.alexnet import AlexNet
from dropout_lab.models.lenet import LeNet5
from dropout_lab.models.mlp import MLP
from dropout_lab.models.resnet import ResNet
from dropout_lab.models.squeezenet import SqueezeNet

__all__ = ["AlexNet", "LeNet5", "MLP", "ResNet", "SqueezeNet"]
