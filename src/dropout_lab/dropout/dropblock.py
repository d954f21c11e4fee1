"""DropBlock: Ghiasi, Lin & Le, "DropBlock: A regularization method for convolutional networks",
NeurIPS 2018, arXiv:1810.12890, Algorithm 1, eq. (1) and sec. 3 (scheduled DropBlock).
Method page: docs/methods/dropblock.md."""

from __future__ import annotations

from torch import Tensor
from torchvision.ops import drop_block2d

from dropout_lab.checks import ODD, exactly, integer
from dropout_lab.dropout.base import DropoutContext, DropoutMethod, SiteSpec
from dropout_lab.dropout.spec import Arg, MethodSpec, rate_p, register


def block_for(block_size: int, height: int, width: int) -> int:
    """The block side used on an H x W map: the largest odd size <= min(block_size, H, W)
    (torchvision clamps to min(bs, H, W) and fails when that is even)."""
    side = min(block_size, height, width)
    return side if side % 2 else side - 1


def dropblock_mask(x: Tensor, p: float, block_size: int) -> Tensor:
    """The DropBlock mask of ``x`` (N, C, H, W): 0 in dropped blocks, numel / kept elsewhere
    (:func:`torchvision.ops.drop_block2d` applied to ones, block side :func:`block_for`)."""
    return drop_block2d(x.new_ones(x.shape), p, block_for(block_size, x.shape[-2], x.shape[-1]), inplace=True)


class DropBlock(DropoutMethod):
    """Drop contiguous ``block_size`` x ``block_size`` squares per sample and channel, via
    :func:`torchvision.ops.drop_block2d` (centres ~ Bernoulli(gamma) where a whole block fits,
    gamma = p H W / (bs^2 (H - bs + 1)(W - bs + 1)), eq. (1); output rescaled by numel / kept count).

    Scheduled DropBlock (sec. 3): the drop probability ramps linearly from 0 at step 0 to ``p`` at
    step ``ramp_steps`` (Lightning's ``global_step``, set in ``on_train_batch_start``), then stays.

    Small maps: torchvision clamps the block to min(bs, H, W) and fails when that is even (LeNet's
    5x5 and ResNet's 4x4 maps). Rule here: the block used is the largest odd size <= min(bs, H, W)
    (:func:`block_for`), so a block never exceeds the map; bs >= H, W drops whole channels. The
    recorded drop fraction is the fraction of zeros in the mask (about the scheduled rate).

    Args:
        p: target drop probability (1 - keep_prob), in [0, 1).
        site: a conv :class:`~dropout_lab.dropout.base.SiteSpec`.
        block_size: odd block side in pixels (config key ``dropout.block_size``).
        ramp_steps: steps of the linear ramp; None = the whole planned run (``ctx.progress``), 0 = no ramp.

    Shapes: (N, C, H, W) -> (N, C, H, W).

    Raises:
        ValueError: if the site is not a conv site.
    """

    def __init__(self, p: float, site: SiteSpec, block_size: int, ramp_steps: int | None) -> None:
        super().__init__(p, site)
        if site.kind != "conv":
            raise ValueError(
                f"dropblock needs conv sites (N, C, H, W); {site.name} is a {site.kind} site: use dropout.sites=conv"
            )
        self.block_size, self.ramp_steps = int(block_size), ramp_steps
        self.current_p = self.p if ramp_steps == 0 else 0.0

    def ramp(self, ctx: DropoutContext) -> float:
        """p(t) = p * min(1, t / T), T = ``ramp_steps`` or the planned run (sec. 3, linear schedule)."""
        if self.ramp_steps is None:
            return self.p * ctx.progress
        return self.p if self.ramp_steps == 0 else self.p * min(1.0, ctx.global_step / self.ramp_steps)

    def on_train_batch_start(self, ctx: DropoutContext) -> None:
        self.current_p = self.ramp(ctx)

    def rate(self) -> float:
        return self.current_p

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mask = dropblock_mask(x, self.current_p, self.block_size)
        return x * mask, mask

    def stats(self) -> dict[str, float]:
        return super().stats() | {"current_p": self.current_p}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, block_size={self.block_size}, ramp_steps={self.ramp_steps}"


SPEC = register(
    MethodSpec(
        key="dropblock",
        cls=DropBlock,
        source="Ghiasi et al. 2018",
        summary="`torchvision.ops.drop_block2d`, `block_size`, linear ramp of p",
        p=rate_p(0.1, "drop probability reached at the end of the ramp", tune="interval(0.02, 0.3)"),
        args={
            "block_size": Arg(
                3, ODD, "block side in pixels; clamped to the largest odd size <= the map", tune="choice(3, 5, 7)"
            ),
            "ramp_steps": Arg(
                None, exactly(None, "ramp over the whole run") | integer(0), "steps of the ramp 0 -> p (0: fixed p)"
            ),
        },
        default_sites="conv",
        sites="conv",
        drop_fraction="below p: the linear ramp averages ~p/2 over a run, overlapping blocks drop less",
        p_eq="= drop fraction (mask 0 or numel/kept)",
    )
)
