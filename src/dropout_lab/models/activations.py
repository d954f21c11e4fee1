"""Activation lookup by config name."""

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (relu | sigmoid | tanh; sigmoid is the "logistic" unit
    of Srivastava et al. 2014).

    Raises:
        ValueError: for an unknown name, listing the allowed ones.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"model.activation={name!r} is not one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
