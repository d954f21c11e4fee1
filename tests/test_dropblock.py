"""DropBlock (Ghiasi et al. 2018): block-size rule, the paper's gamma, contiguous blocks, the linear ramp."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dropout_lab.dropout.dropblock import DropBlock, block_for, dropblock_mask
from layer_helpers import P, ctx, lenet_with, spec
from tolerance import mean_tol


def expected_dropblock_fraction(p: float, size: int, bs: int) -> float:
    """Mean over pixels of P(dropped) = 1 - (1 - gamma)^k, k = valid centres whose block covers the
    pixel, gamma = p H W / (bs^2 (H - bs + 1)(W - bs + 1)) (Ghiasi et al. eq. 1)."""
    cells = size - bs + 1
    gamma = p * size * size / (bs * bs * cells * cells)
    cover = [min(i, cells - 1) - max(0, i - bs + 1) + 1 for i in range(size)]
    return sum(1 - (1 - gamma) ** (a * b) for a in cover for b in cover) / size**2


@pytest.mark.parametrize(("size", "block_size", "used"), [(14, 3, 3), (5, 7, 5), (4, 5, 3), (8, 5, 5), (2, 3, 1)])
def test_dropblock_block_size_rule_and_drop_fraction(size, block_size, used):
    """Largest odd block <= the map; realised mean drop fraction = the paper's gamma construction."""
    torch.manual_seed(0)
    method = DropBlock.spec.build(spec("conv", 32), p=P, block_size=block_size, ramp_steps=0).train()
    assert block_for(block_size, size, size) == used
    x = torch.ones(32, 32, size, size)
    per_channel = torch.cat([(method(x) == 0).float().mean((2, 3)).flatten() for _ in range(5)])
    expected = expected_dropblock_fraction(P, size, used)
    assert abs(per_channel.mean().item() - expected) < mean_tol(per_channel.std().item(), per_channel.numel())
    assert method.stats()["drop_fraction"] == pytest.approx(per_channel.mean().item(), rel=1e-5)


def test_dropblock_drops_contiguous_square_blocks():
    """The dropped set of each channel is a union of whole bs x bs squares inside the map
    (morphological opening leaves it unchanged), and the output keeps the input's total."""
    torch.manual_seed(0)
    bs = 3
    x = torch.ones(64, 16, 14, 14)
    y = DropBlock.spec.build(spec("conv", 16), p=0.2, block_size=bs, ramp_steps=0).train()(x)
    dropped = (y == 0).float()
    full = (F.avg_pool2d(dropped, bs, stride=1) > 1 - 1e-6).float()  # windows entirely dropped
    opened = F.max_pool2d(F.pad(full, [bs - 1] * 4), bs, stride=1)
    assert dropped.any() and torch.equal(opened, dropped)
    assert y.sum().item() == pytest.approx(x.sum().item(), rel=1e-4)  # normalised by the kept count
    # element-wise dropout would fail the same check
    std = (F.dropout(x, 0.2) == 0).float()
    full = (F.avg_pool2d(std, bs, stride=1) > 1 - 1e-6).float()
    assert not torch.equal(F.max_pool2d(F.pad(full, [bs - 1] * 4), bs, stride=1), std)


@pytest.mark.parametrize(
    ("step", "max_steps", "ramp_steps"),
    [(0, 100, None), (25, 100, None), (100, 100, None), (150, 100, None), (10, 100, 40), (60, 100, 40), (5, 100, 0)],
)
def test_dropblock_linear_ramp(step, max_steps, ramp_steps):
    """p(t) = p min(1, t / T), T = ramp_steps or the run's max_steps (scheduled DropBlock); the
    method's rate() is the scheduled value (0 makes it the identity)."""
    method = DropBlock.spec.build(spec("conv", 8), p=P, ramp_steps=ramp_steps)
    method.on_train_batch_start(ctx(step, max_steps))
    total = max_steps if ramp_steps is None else ramp_steps
    assert method.rate() == pytest.approx(P if total == 0 else P * min(1.0, step / total), abs=1e-12)


def test_dropblock_block_size_is_checked():
    with pytest.raises(ValueError, match="dropout.block_size"):
        lenet_with("dropblock", block_size=4)


def test_dropblock_method_is_its_pure_mask_function():
    """The method multiplies by the timm-style mask function's mask (same seed, same output); eval is the identity."""
    x = torch.randn(4, 8, 9, 9)
    method = DropBlock.spec.build(spec("conv", 8), p=P, block_size=3, ramp_steps=0).train()
    torch.manual_seed(3)
    expected = method(x)
    torch.manual_seed(3)
    assert torch.equal(x * dropblock_mask(x, P, 3), expected)
    assert method.eval()(x) is x


def test_dropblock_records_mask_variance_as_p_eq():
    """DropBlock's mask is 0 or numel / kept: p_eq = 1 - E[m]^2 / E[m^2] = the zero fraction."""
    torch.manual_seed(0)
    method = DropBlock.spec.build(spec("conv", 8), p=P, block_size=3, ramp_steps=0).train()
    method(torch.ones(16, 8, 10, 10))
    stats = method.stats()
    assert stats["p_eq"] == pytest.approx(stats["drop_fraction"], abs=1e-5) and stats["drop_fraction"] > 0.1
