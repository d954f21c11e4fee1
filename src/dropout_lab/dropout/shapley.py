"""Neuron Shapley dropout (source 000): unit/channel importance = Neuron Shapley value, estimated by
truncated Monte-Carlo permutation sampling on a held-out batch (Ghorbani & Zou, "Neuron Shapley:
Discovering the Responsible Neurons", NeurIPS 2020, arXiv:2002.09815, sec. 2-3, Algorithm 1 without the
bandit stage), fed into the score -> rate map of :class:`~dropout_lab.dropout.scored.ScoredDropout`;
docs/methods/shapley.md."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dropout_lab.checks import COUNT, NONNEGATIVE, choice
from dropout_lab.dropout import passes
from dropout_lab.dropout.base import DropoutContext, SiteSpec
from dropout_lab.dropout.scored import ScoredDropout, scored_spec
from dropout_lab.dropout.spec import Arg

VALUES = ("acc", "neg_loss")


def tmc_shapley(
    value: Callable[[Tensor], Tensor],
    n: int,
    permutations: int,
    truncation: float,
    v_random: float,
    chunk: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, int, int]:
    """Truncated Monte-Carlo Shapley values of ``n`` players (Ghorbani & Zou 2020, Algorithm 1).

    Each permutation starts from the full coalition and removes players in a random order; a player's
    marginal is v(before its removal) - v(after). Coalitions are evaluated ``chunk`` at a time. Once a
    coalition's value is within ``truncation * |v(full) - v_random|`` of ``v_random`` (random-guess
    level), the remaining players of that permutation get marginal 0 and no further chunk is evaluated
    (the check runs at chunk granularity; marginals inside the truncating chunk past the truncation
    point are also set to 0).

    Args:
        value: maps keep-masks (M, n) in {0, 1} to coalition values (M,).
        n: number of players.
        permutations: permutations to average (>= 1).
        truncation: relative tolerance (0 disables truncation).
        v_random: value of a random guess (1/K for accuracy, -log K for negative loss).
        chunk: coalitions per call of ``value`` (>= 1).
        generator: RNG for the permutations (None: torch's global generator, the run's method stream, checkpointed with it).
        device: where masks are built.

    Returns:
        (phi (n,) mean marginals, coalitions evaluated, calls of ``value``).
    """
    phi = torch.zeros(n, device=device)
    v_full = value(torch.ones(1, n, device=device))[0]
    tol = truncation * (v_full - v_random).abs()
    coalitions, calls = 1, 1
    for _ in range(permutations):
        order = torch.randperm(n, generator=generator).to(device)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=device)  # position of each player in the removal order
        prev = v_full
        for start in range(0, n, chunk):
            steps = torch.arange(start + 1, min(start + chunk, n) + 1, device=device)  # players removed so far
            vals = value((rank.view(1, -1) >= steps.view(-1, 1)).float())  # masks (M, n): keep the not yet removed
            coalitions, calls = coalitions + len(steps), calls + 1
            marg = torch.cat([prev.view(1), vals[:-1]]) - vals
            done = ((vals - v_random).abs() <= tol).nonzero() if truncation > 0 else []
            if len(done):
                marg[int(done[0]) + 1 :] = 0.0
            phi[order[start : start + len(steps)]] += marg
            prev = vals[-1]
            if len(done):
                break
    return phi / permutations, coalitions, calls


class ShapleyDropout(ScoredDropout):
    """ScoredDropout whose per-unit score is the unit's Neuron Shapley value at this site.

    Every ``update_every`` optimizer steps (after the step), the players are the site's F units (or
    C channels); v(S) is the accuracy (``value: acc``) or the negative cross-entropy (``neg_loss``) of
    the network in eval mode with only S kept at this site (the others zeroed at the dropout site, i.e.
    after activation/pooling, as Ghorbani & Zou's removal) and every other site the identity, on a fixed
    held-out batch: the first ``heldout`` samples of the datamodule's validation split (so the scores
    see validation data; the test split stays untouched). Coalitions are batched inside
    :func:`~dropout_lab.dropout.passes.extra_pass`: the held-out batch (B samples) runs once through
    the layers before the site, and the site expands its output to ``max_batch // heldout`` coalitions
    (M * B rows, coalition-major) for the layers after it. This needs a model in which nothing after
    the site combines with a tensor computed before it (true at LeNet5/MLP sites and at sites between
    ResNet stages); otherwise the forward fails with a shape error.
    Shapley values (signed) go into the EMA and the rate map of :class:`ScoredDropout` (rank
    normalisation by default, so a negative value ranks lowest); training forwards are per-sample
    Bernoulli with per-unit rates and 1/(1 - p_j) rescaling; evaluation is the identity.

    Shapes: (N, F) or (N, C, H, W) -> same shape.

    Args:
        p, site and the other keyword arguments (``initial_rate``, ``max_rate``, ``drop_target``, ``ema``,
            ``update_every``, ``normalise``): see :class:`ScoredDropout`.
        permutations: Monte-Carlo permutations per update (>= 1).
        truncation: relative truncation tolerance (>= 0; 0 evaluates every coalition).
        value: ``acc`` | ``neg_loss``.
        heldout: held-out samples per coalition (>= 1).
        max_batch: samples per batched forward (>= ``heldout``).

    Raises:
        ValueError: if ``max_batch < heldout``, or at the first update if the
            trainer has no datamodule with ``held_out_batch``.
    """

    def __init__(
        self,
        p: float,
        site: SiteSpec,
        permutations: int,
        truncation: float,
        value: str,
        heldout: int,
        max_batch: int,
        **kwargs,
    ) -> None:
        super().__init__(p, site, **kwargs)
        if int(max_batch) < int(heldout):
            raise ValueError(f"dropout.max_batch={max_batch} must be >= dropout.heldout={heldout}")
        self.permutations, self.truncation, self.value = int(permutations), float(truncation), value
        self.heldout, self.max_batch = int(heldout), int(max_batch)
        self._coalition: Tensor | None = None
        self._cost = {"shapley_seconds": 0.0, "shapley_forwards": 0, "shapley_coalitions": 0, "shapley_updates": 0}

    def forward(self, x: Tensor) -> Tensor:
        if self._coalition is None:
            return super().forward(x)
        # (B, F, ...) -> (M * B, F, ...), coalition-major: the layers before the site run once
        keep = self._coalition.view(len(self._coalition), 1, -1, *(1,) * (x.ndim - 2)).to(x.dtype)
        return (x.unsqueeze(0) * keep).flatten(0, 1)

    @torch.no_grad()
    def shapley_values(self, model: torch.nn.Module, x: Tensor, y: Tensor, num_classes: int) -> Tensor:
        """Shapley values (F,) of this site's units for ``model`` on the held-out batch ``x`` (B, ...),
        ``y`` (B,); runs in eval mode inside :func:`~dropout_lab.dropout.passes.extra_pass` and adds
        its cost to the stats."""
        start, B = time.perf_counter(), len(x)

        def value(masks: Tensor) -> Tensor:
            self._coalition = masks
            try:
                logits = model(x).view(len(masks), B, -1)
            finally:
                self._coalition = None
            if self.value == "acc":
                return (logits.argmax(-1) == y).float().mean(1)
            return (
                -F.cross_entropy(logits.flatten(0, 1), y.repeat(len(masks)), reduction="none")
                .view(len(masks), B)
                .mean(1)
            )

        v_random = 1.0 / num_classes if self.value == "acc" else -math.log(num_classes)
        with passes.extra_pass(model, train=False, grad=False):
            phi, coalitions, calls = tmc_shapley(
                value,
                self.site.num_features,
                self.permutations,
                self.truncation,
                v_random,
                max(self.max_batch // B, 1),
                None,
                x.device,
            )
        self._cost["shapley_seconds"] += time.perf_counter() - start
        self._cost["shapley_forwards"] += calls
        self._cost["shapley_coalitions"] += coalitions
        self._cost["shapley_updates"] += 1
        return phi

    def on_train_batch_end(self, ctx: DropoutContext) -> None:
        """After every ``update_every``-th optimizer step (from the first): Shapley values -> EMA -> rates.

        The held-out batch comes from ``trainer.datamodule.held_out_batch(heldout, split="val")``
        (the datamodule interface, :class:`dropout_lab.data.base.ImageDataModule`): the first
        ``heldout`` validation samples, preprocessed (normalised, resized) and on the device exactly
        as the training batches are.

        Raises:
            ValueError: if the trainer has no datamodule with ``held_out_batch`` (naming ``dropout=shapley``).
        """
        if not ctx.due(every=self.update_every, warmup=1):  # the step counter has already advanced
            return
        dm = getattr(ctx.module.trainer, "datamodule", None)
        if not hasattr(dm, "held_out_batch"):
            raise ValueError(
                f"dropout=shapley needs trainer.datamodule with held_out_batch(n, split='val'); got {type(dm).__name__}"
            )
        x, y = dm.held_out_batch(self.heldout, split="val")
        self.update_scores(self.shapley_values(ctx.module.model, x, y, dm.num_classes))

    def stats(self) -> dict[str, float]:
        """ScoredDropout stats plus the cost per update since the last reset: ``shapley_seconds``,
        ``shapley_forwards`` (batched forwards) and ``shapley_coalitions``, each averaged per update."""
        out = super().stats()
        n = self._cost["shapley_updates"]
        if n:
            out |= {k: v / n for k, v in self._cost.items() if k != "shapley_updates"}
        return out

    def reset_stats(self) -> None:
        super().reset_stats()
        self._cost = dict.fromkeys(self._cost, 0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, permutations={self.permutations}, value={self.value}, heldout={self.heldout}"


SPEC = scored_spec(
    "shapley",
    ShapleyDropout,
    "source 000; Ghorbani & Zou 2020",
    "truncated Monte-Carlo permutation Shapley values on a held-out batch, every `update_every` steps",
    update_every=Arg(50, COUNT, "optimizer steps between Shapley updates (~8 per MNIST epoch)"),
    permutations=Arg(10, COUNT, "Monte-Carlo permutations per update"),
    truncation=Arg(0.2, NONNEGATIVE, "stop a permutation within this fraction of |v(full) - v(random)| of random"),
    value=Arg("neg_loss", choice(*VALUES), "coalition value: neg_loss | acc"),
    heldout=Arg(128, COUNT, "first N validation samples"),
    max_batch=Arg(8192, COUNT, "samples per batched coalition forward (>= heldout)"),
)
