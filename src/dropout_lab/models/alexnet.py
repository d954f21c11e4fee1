"""AlexNet (Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", NeurIPS 2012; torchvision's one-GPU variant) with its two dropouts as pluggable sites."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.alexnet import AlexNet as TorchvisionAlexNet

from dropout_lab.dropout.sites import Site
from dropout_lab.models.inputs import require_min_size

#: smallest input side that survives the 11x11 stride-4 stem and the three 3x3 stride-2 max-pools
MIN_SIZE = 63


class AlexNet(TorchvisionAlexNet):
    """torchvision's AlexNet; ``classifier[0]`` and ``classifier[3]`` (its ``nn.Dropout`` modules) are
    fc sites (9216 and 4096 units), plus a conv site ``drop_features`` (256 channels) after the last conv
    block, before the adaptive pooling. With ``dropout=standard dropout.p=0.5`` (fc sites) this is
    torchvision's AlexNet exactly; with ``dropout=none`` it has no dropout.

    Args:
        num_classes: output logits.
        in_channels: input channels; the first conv is rebuilt for values other than 3.
        image_size: input side in pixels; at least 63 (source 004 resizes to 224: ``dataset.image_size=224``).

    Shapes: (N, in_channels, image_size, image_size) -> (N, num_classes).

    Raises:
        ValueError: if ``image_size`` < 63.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224) -> None:
        require_min_size("alexnet", image_size, MIN_SIZE)
        super().__init__(num_classes=num_classes)
        if in_channels != 3:
            self.features[0] = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
        self.drop_features = Site("conv", 256, prev="features.10", next="classifier.1")
        self.classifier[0] = Site("fc", 256 * 6 * 6, prev="features.10", next="classifier.1")
        self.classifier[3] = Site("fc", 4096, prev="classifier.1", next="classifier.4")

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.drop_features(self.features(x)))
        return self.classifier(x.flatten(1))


def alexnet(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224) -> AlexNet:
    """AlexNet with dropout sites (61.1 M parameters with 1000 classes, as torchvision's)."""
    return AlexNet(num_classes, in_channels, image_size)
