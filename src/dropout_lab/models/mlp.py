"""The fully connected nets of the dropout paper (Srivastava et al., JMLR 15, 2014, sec. 6.1.1,
Table 2) and of source 003's five MNIST experiments."""

from __future__ import annotations

from torch import Tensor, nn

from dropout_lab.dropout.sites import Site
from dropout_lab.models.activations import make_activation


class MLP(nn.Module):
    """Flatten - [Linear - activation - site] x len(hidden_sizes) - Linear(num_classes).

    Dropout sites (all ``fc``): ``sites.0`` on the input if ``input_dropout`` (784 units for MNIST),
    then one after each hidden layer (``hidden_dropout: all``) or after the first one only
    (``hidden_dropout: first``, source 003's "input_first_hidden").

    Args:
        num_classes: output logits.
        in_channels, image_size: the input is flattened to in_channels * image_size**2 features.
        hidden_sizes: units per hidden layer, e.g. [800, 800] or [1024, 1024, 1024].
        activation: ``relu`` or ``sigmoid`` (the paper's logistic units) or ``tanh``.
        input_dropout: put a site on the input features.
        hidden_dropout: ``all`` or ``first``.

    Shapes: (N, in_channels, image_size, image_size) -> (N, num_classes).

    Raises:
        ValueError: for an unknown activation or hidden_dropout, or no hidden layer.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        hidden_sizes: list[int] = (800, 800),
        activation: str = "relu",
        input_dropout: bool = False,
        hidden_dropout: str = "all",
    ) -> None:
        super().__init__()
        if hidden_dropout not in ("all", "first"):
            raise ValueError(f"model.hidden_dropout={hidden_dropout!r} is not one of all, first")
        if not hidden_sizes:
            raise ValueError("model.hidden_sizes must list at least one hidden layer")
        widths = [in_channels * image_size * image_size, *hidden_sizes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, [*hidden_sizes, num_classes]))
        self.acts = nn.ModuleList(make_activation(activation) for _ in hidden_sizes)
        # sites[i] sits on the input of layers[i]; Identity where no dropout is wanted
        self.sites = nn.ModuleList(
            Site("fc", width, prev=f"layers.{i - 1}" if i else None, next=f"layers.{i}")
            if (i == 0 and input_dropout) or i == 1 or (i > 1 and hidden_dropout == "all")
            else nn.Identity()
            for i, width in enumerate(widths)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for site, layer, act in zip(self.sites, self.layers, self.acts):
            x = act(layer(site(x)))
        return self.layers[-1](self.sites[-1](x))
