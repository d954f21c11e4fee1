"""ResNet-18/34/50/101 (He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016),
built from torchvision's own ``ResNet``/``BasicBlock``/``Bottleneck``, with dropout sites and a small-input stem.

The small-input ("CIFAR") stem replaces the 7x7 stride-2 conv and the max-pool by one 3x3 stride-1 conv, as in
the paper's CIFAR section (Sec. 4.2) and source 004's reference (``resnet18`` on 32x32 inputs): stage maps are then
32/16/8/4 pixels for 32x32 inputs (28/14/7/4 for 28x28) instead of 8/4/2/1.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.resnet import ResNet as TorchvisionResNet

from dropout_lab.dropout.sites import Site

STEMS = ("auto", "cifar", "imagenet")
#: inputs up to this side (pixels) get the small-input stem when ``stem=auto``
CIFAR_STEM_MAX_SIZE = 64


class _SiteBeforeConv2:
    """Forward pre-hook of a block's ``conv2``: passes its input through the block's ``drop`` site (an
    object, not a closure, so ``copy.deepcopy`` of the model points the copy's hook at the copy's site)."""

    def __init__(self, site: Site) -> None:
        self.site = site

    def __call__(self, module: nn.Module, args: tuple[Tensor]) -> tuple[Tensor]:
        return (self.site(args[0]),)


class ResNet(TorchvisionResNet):
    """torchvision's ResNet with an input-size-dependent stem and three dropout sites (plus one per
    residual block with ``block_sites``).

    Sites: ``drop_layer3`` (conv, 256 x expansion channels, after stage 3), ``drop_layer4`` (conv,
    512 x expansion channels, after stage 4, before global pooling) and ``drop_fc`` (fc, 512 x expansion
    units, after global pooling, before the classifier: timm's ``drop_rate`` slot). Sites hold no
    parameters, so the state dict equals torchvision's for the same stem. Each site's ``prev`` is the last
    conv of the stage before it (``conv2`` of a BasicBlock, ``conv3`` of a Bottleneck: one filter per
    channel; the residual sum and BatchNorm after it are ignored) and its ``next`` is the first layer
    reading it (``layer4.0.conv1``, whose block's downsample branch also reads it, or ``fc``), see
    docs/backbones.md.

    Args:
        block: torchvision's ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. [2, 2, 2, 2] for ResNet-18.
        num_classes: output logits.
        in_channels: input channels (1 for the MNIST family, 3 for colour); the first conv is rebuilt
            (He-normal initialised, as torchvision does) when it differs from 3 or the stem is ``cifar``.
        image_size: input side in pixels, used by ``stem=auto``.
        stem: ``cifar`` (3x3 stride-1 conv, no max-pool), ``imagenet`` (torchvision's 7x7 stride-2 conv
            + max-pool) or ``auto`` (``cifar`` up to 64 pixels, else ``imagenet``).
        block_sites: also a conv site ``layer<s>.<b>.drop`` inside every residual block, between the
            block's first conv (after its BatchNorm and ReLU; ``prev``) and its second conv (``next``),
            where EDropout's reference places state bits on every block (source 004): pruning those
            channels can remove nearly all block conv weights, so the paper's ~50 % parameter reduction is
            reachable (the three stage-level sites reach at most 36.9 % on ResNet-18; docs/methods/edropout.md).
            The state dict is unchanged (sites hold no parameters).

    Shapes: (N, in_channels, H, W) -> (N, num_classes) for any H, W >= 1 (global average pooling).

    Raises:
        ValueError: for a stem outside auto, cifar, imagenet.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        stem: str = "auto",
        block_sites: bool = False,
    ) -> None:
        super().__init__(block, layers, num_classes=num_classes)
        if stem not in STEMS:
            raise ValueError(f"model.stem={stem!r} is not one of {', '.join(STEMS)}")
        self.stem = ("cifar" if image_size <= CIFAR_STEM_MAX_SIZE else "imagenet") if stem == "auto" else stem
        if self.stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        elif in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        width = 512 * block.expansion
        last = "conv3" if block is Bottleneck else "conv2"  # the conv whose filters make a stage's output channels
        self.drop_layer3 = Site("conv", width // 2, prev=f"layer3.{layers[2] - 1}.{last}", next="layer4.0.conv1")
        self.drop_layer4 = Site("conv", width, prev=f"layer4.{layers[3] - 1}.{last}", next="fc")
        self.drop_fc = Site("fc", width, prev=f"layer4.{layers[3] - 1}.{last}", next="fc")
        for stage in range(1, 5) if block_sites else ():
            for b, blk in enumerate(getattr(self, f"layer{stage}")):
                blk.drop = Site(
                    "conv", blk.conv1.out_channels, prev=f"layer{stage}.{b}.conv1", next=f"layer{stage}.{b}.conv2"
                )
                blk.conv2.register_forward_pre_hook(_SiteBeforeConv2(blk.drop))

    def _forward_impl(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = self.drop_layer3(self.layer3(x))
        x = self.drop_layer4(self.layer4(x))
        x = self.drop_fc(self.avgpool(x).flatten(1))
        return self.fc(x)


def resnet18(
    num_classes: int = 10, in_channels: int = 3, image_size: int = 32, stem: str = "auto", block_sites: bool = False
) -> ResNet:
    """ResNet-18: BasicBlock, [2, 2, 2, 2] (11.17 M parameters with the CIFAR stem and 10 classes)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, image_size, stem, block_sites)


def resnet34(
    num_classes: int = 10, in_channels: int = 3, image_size: int = 32, stem: str = "auto", block_sites: bool = False
) -> ResNet:
    """ResNet-34: BasicBlock, [3, 4, 6, 3]."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, image_size, stem, block_sites)


def resnet50(
    num_classes: int = 10, in_channels: int = 3, image_size: int = 32, stem: str = "auto", block_sites: bool = False
) -> ResNet:
    """ResNet-50: Bottleneck, [3, 4, 6, 3] (torchvision's V1.5: stride on the 3x3 conv)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, image_size, stem, block_sites)


def resnet101(
    num_classes: int = 10, in_channels: int = 3, image_size: int = 32, stem: str = "auto", block_sites: bool = False
) -> ResNet:
    """ResNet-101: Bottleneck, [3, 4, 23, 3]."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, image_size, stem, block_sites)
