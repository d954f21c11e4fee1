"""Variational dropout (Gal & Ghahramani 2016): masks shared along axes, refused where it would equal
another method."""

from __future__ import annotations

import pytest
import torch

from dropout_lab.dropout.spatial import SpatialDropout
from dropout_lab.dropout.standard import StandardDropout, bernoulli_mask
from dropout_lab.dropout.variational import VariationalDropout
from layer_helpers import P, lenet_with, spec


def test_variational_mask_constant_along_axis():
    torch.manual_seed(0)
    seq = VariationalDropout.spec.build(spec(), p=P, shared_dims=[1]).train()(torch.ones(16, 10, 32))
    assert torch.all(seq == seq[:, :1]) and (seq == 0).any()  # (N, T, F): one mask per sequence, all T
    rows = VariationalDropout.spec.build(spec("conv", 8), p=P, shared_dims=[2]).train()(torch.ones(16, 8, 5, 5))
    assert torch.all(rows == rows[:, :, :1]) and not torch.all(rows == rows[:, :, :, :1])  # shared over H only
    across = VariationalDropout.spec.build(spec("conv", 8), p=P, shared_dims=[1]).train()(torch.ones(16, 8, 5, 5))
    assert torch.all(across == across[:, :1]) and not torch.all(across == across[:, :, :1, :1])
    with pytest.raises(ValueError, match="dropout.shared_dims"):
        VariationalDropout.spec.build(spec(), p=P, shared_dims=[0])
    with pytest.raises(ValueError, match="dropout.shared_dims"):
        VariationalDropout.spec.build(spec(), p=P, shared_dims=[3]).train()(torch.ones(4, 8))


@pytest.mark.parametrize(
    ("kind", "shared_dims", "same", "other"),
    [
        ("fc", None, "standard", StandardDropout),
        ("conv", None, "spatial", SpatialDropout),
        ("conv", [3, 2], "spatial", SpatialDropout),
    ],
)
def test_variational_refuses_sites_where_it_is_another_method(kind, shared_dims, same, other):
    """Defect 7: where there is no axis to share along, the old code drew exactly the other method's
    mask (same seed, same output); now it is refused with the identical method and dropout.sites named."""
    x = torch.randn(8, 6, 5, 5) if kind == "conv" else torch.randn(8, 6)
    torch.manual_seed(0)
    reference = other(P, spec(kind, 6)).train()(x)
    torch.manual_seed(0)
    mask = bernoulli_mask(x, P, (2, 3) if kind == "conv" else ())  # the mask the method would draw
    assert torch.equal(x * mask, reference)
    with pytest.raises(ValueError, match=rf"(?s)bit-identical to dropout={same}.*dropout.sites"):
        VariationalDropout.spec.build(spec(kind, 6), p=P, shared_dims=shared_dims)


def test_variational_is_refused_on_lenet():
    with pytest.raises(ValueError, match="dropout.sites"):
        lenet_with("variational")
