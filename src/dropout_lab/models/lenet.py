"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 86(11), 1998), adapted to 28x28 inputs with a padded first conv."""

from __future__ import annotations

from torch import Tensor, nn

from dropout_lab.dropout.sites import Site
from dropout_lab.models.activations import make_activation


class LeNet5(nn.Module):
    """conv 6@5x5 (pad 2) - pool - conv 16@5x5 - pool - FC 120 - FC 84 - FC ``num_classes``.

    Dropout sites: ``drop_conv1`` (6 channels) and ``drop_conv2`` (16 channels) after the conv blocks,
    ``drop_fc1`` (120 units) and ``drop_fc2`` (84 units) after the hidden FC layers.

    Args:
        num_classes: output logits.
        in_channels: 1 (MNIST family) or 3.
        image_size: input height = width in pixels; 28 gives 28-14-10-5 maps and 400 features into FC 120.
        activation: ``relu`` (default), ``sigmoid`` or ``tanh`` (the 1998 paper's squashing function).
        pool: ``max`` (default) or ``avg`` (the paper's subsampling layers).

    Shapes: (N, in_channels, image_size, image_size) -> (N, num_classes).

    Raises:
        ValueError: for an unknown activation or pool, or an image smaller than 12 pixels.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        activation: str = "relu",
        pool: str = "max",
    ) -> None:
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"model.pool={pool!r} is not one of max, avg")
        side = (image_size // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"LeNet5 needs images of at least 12x12 pixels, got {image_size}x{image_size}")
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.act = make_activation(activation)
        self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
        self.drop_conv1 = Site("conv", 6, prev="conv1", next="conv2")
        self.drop_conv2 = Site("conv", 16, prev="conv2", next="fc1")
        self.drop_fc1 = Site("fc", 120, prev="fc1", next="fc2")
        self.drop_fc2 = Site("fc", 84, prev="fc2", next="fc3")

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop_conv1(self.pool(self.act(self.conv1(x))))
        x = self.drop_conv2(self.pool(self.act(self.conv2(x))))
        x = self.drop_fc1(self.act(self.fc1(x.flatten(1))))
        x = self.drop_fc2(self.act(self.fc2(x)))
        return self.fc3(x)
