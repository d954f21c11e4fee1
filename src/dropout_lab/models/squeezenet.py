"""SqueezeNet 1.1 (Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and
<0.5MB model size", arXiv 1602.07360; version 1.1 from the authors' repository), with its dropout as a site."""

from __future__ import annotations

from torch import nn
from torchvision.models.squeezenet import SqueezeNet as TorchvisionSqueezeNet

from dropout_lab.dropout.sites import Site
from dropout_lab.models.inputs import require_min_size

#: smallest input side that survives the 3x3 stride-2 stem and the three ceil-mode 3x3 stride-2 max-pools
MIN_SIZE = 17


class SqueezeNet(TorchvisionSqueezeNet):
    """torchvision's SqueezeNet 1.1; its ``nn.Dropout`` (``classifier[0]``, on the 512-channel map of the last
    fire module, before the 1x1 ``final_conv``) is a conv site. Channel methods (spatial dropout, DropBlock) fit
    there; ``dropout=standard dropout.sites=conv dropout.p=0.5`` is torchvision's element-wise dropout. The
    site's ``prev`` is the last Fire module (its 512 channels concatenate two convs' 256 filters each), so
    methods that score one prev layer's filters (``l2_dynamic``, ``obd``) refuse this site.

    Args:
        num_classes: output logits.
        in_channels: input channels; the first conv is rebuilt (Kaiming-uniform, zero bias, as torchvision
            initialises its convs) for values other than 3.
        image_size: input side in pixels; at least 17 (maps of 13/6/3/1 at 28x28; source 004 resizes to 224).

    Shapes: (N, in_channels, image_size, image_size) -> (N, num_classes).

    Raises:
        ValueError: if ``image_size`` < 17.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224) -> None:
        require_min_size("squeezenet1_1", image_size, MIN_SIZE)
        super().__init__(version="1_1", num_classes=num_classes)
        if in_channels != 3:
            self.features[0] = nn.Conv2d(in_channels, 64, kernel_size=3, stride=2)
            nn.init.kaiming_uniform_(self.features[0].weight)
            nn.init.zeros_(self.features[0].bias)
        self.classifier[0] = Site("conv", 512, prev="features.12", next="classifier.1")


def squeezenet1_1(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224) -> SqueezeNet:
    """SqueezeNet 1.1 with a dropout site (1.24 M parameters with 1000 classes, as torchvision's)."""
    return SqueezeNet(num_classes, in_channels, image_size)
