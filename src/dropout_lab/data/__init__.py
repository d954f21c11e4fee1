"""Datamodules: torchvision's dataset classes read the files; splits, batching and augmentation are ours.
Every datamodule implements :class:`~dropout_lab.data.base.ImageDataModule`."""

from dropout_lab.data.base import DataModule, ImageDataModule
from dropout_lab.data.batches import TensorBatches
from dropout_lab.data.cifar import CIFARDataModule
from dropout_lab.data.flowers import Flowers102DataModule
from dropout_lab.data.mnist import MNISTDataModule

__all__ = [
    "CIFARDataModule",
    "DataModule",
    "Flowers102DataModule",
    "ImageDataModule",
    "MNISTDataModule",
    "TensorBatches",
]
