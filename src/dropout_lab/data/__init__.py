"""Datamodules: torchvision's dataset classes read the files; splits and batching are ours."""

from dropout_lab.data.batches import TensorBatches
from dropout_lab.data.mnist import MNISTDataModule

__all__ = ["MNISTDataModule", "TensorBatches"]
