"""EDropout: Salehinejad & Valaee, "EDropout: Energy-Based Dropout and Pruning of Deep Neural
Networks", IEEE TNNLS 33(10), 2022, arXiv:2006.04270 (seed 004).

A model-level method: one population of binary *pruning states* for the whole network, one bit per
channel at each conv site and per unit at each fc site. Every ``update_every`` optimizer steps the
population evolves by binary differential evolution (mutation, binomial crossover, greedy selection)
on the energy of each state = minus the mean classification margin on the current training batch;
the lowest-energy state masks the network for the training steps (inside autograd, no rescaling, so
masked filters and FC inputs get zero gradient). Once the best state has not changed for
``threshold`` optimizer steps it is frozen (early state convergence: the pruning decision).
Evaluation reports the full network (F, all bits 1: ``test/acc``) and the pruned one (P, the best
state: ``test/acc_pruned``, through :meth:`EDropout.eval_variants`).

Deviations from the reference code (sparsifai/edropout), see ``docs/edropout.md``: candidates are
evaluated under :func:`~dropout_lab.dropout.passes.extra_pass` (no BatchNorm statistics updated, mode
restored, no gradients); masks multiply the site activations instead of editing weights in place;
target and trial states are scored on the same batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar

import torch
from torch import Tensor, nn

from dropout_lab.dropout.base import DropoutContext, DropoutMethod, SiteSpec
from dropout_lab.dropout.passes import extra_pass


def margin_energy(logits: Tensor, target: Tensor) -> Tensor:
    """Energy of a state on a batch: minus the mean margin z_y - max_{k != y} z_k (lower is better).

    The reference scales it by 10, which changes no ranking and is omitted.

    Args:
        logits: (S, B, K) logits of S states on the same B samples.
        target: (B,) class indices.

    Returns:
        (S,) energies.
    """
    index = target.view(1, -1, 1).expand(logits.shape[0], -1, 1)
    true = logits.gather(2, index).squeeze(2)
    other = logits.scatter(2, index, float("-inf")).amax(2)
    return -(true - other).mean(1)


def binary_de_trials(population: Tensor, mutation: float, crossover: float) -> Tensor:
    """Binary differential-evolution trial states (EDropout paper, Sec. III: mutation + crossover).

    For member i with three distinct other members x1, x2, x3 (chosen at random): mutant bit
    v_d = 1 - x1_d where x2_d != x3_d and r_d < ``mutation``, else x1_d; trial bit u_d = v_d where
    r'_d < ``crossover`` or d = d_rand (one forced position), else the member's own bit.

    Args:
        population: (S, D) bool states, S >= 4.
        mutation: F in [0, 1], probability that a bit where x2 and x3 differ is flipped in x1.
        crossover: CR in [0, 1], probability of taking the mutant's bit.

    Returns:
        (S, D) bool trial states, drawn with the global torch RNG on the population's device.
    """
    S, D = population.shape
    device = population.device
    scores = torch.rand(S, S, device=device)
    scores.fill_diagonal_(float("inf"))
    x1, x2, x3 = population[scores.argsort(1)[:, :3]].unbind(1)
    mutant = x1 ^ ((x2 ^ x3) & (torch.rand(S, D, device=device) < mutation))
    cross = torch.rand(S, D, device=device) < crossover
    cross[torch.arange(S, device=device), torch.randint(D, (S,), device=device)] = True
    return torch.where(cross, mutant, population)


def _rows_of(layer: nn.Module | None, n: int) -> bool:
    """True if ``layer`` is a Linear/Conv2d with ``n`` outputs (one weight row and bias per site unit)."""
    return (isinstance(layer, nn.Linear) and layer.out_features == n) or (isinstance(layer, nn.Conv2d) and layer.out_channels == n)


def _columns_per_unit(layer: nn.Module | None, n: int) -> int:
    """Input columns of ``layer`` fed by each of the ``n`` site units: ``in_features / n`` for a
    Linear (a flattened (n, H, W) map gives H*W per channel), 1 for an ungrouped Conv2d with ``n``
    input channels, 0 if ``layer`` does not match."""
    if isinstance(layer, nn.Linear) and layer.in_features % n == 0:
        return layer.in_features // n
    return int(isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.in_channels == n)


def kept_parameters(model: nn.Module, layout: list[tuple[SiteSpec, slice]], state: Tensor) -> tuple[int, int]:
    """Parameters of ``model`` that survive pruning with ``state``, and the total.

    A zero bit at a site removes the row (weights and bias) of its unit/filter in the site's ``prev``
    layer and the columns it feeds in the ``next`` layer (for a Linear after a flattened conv site,
    the ``in_features / C`` columns of each channel, channel-major as ``flatten`` orders them). Only
    ``prev``/``next`` layers that are Linear or Conv2d with matching sizes are pruned; every other
    parameter (normalisation layers included) counts as kept, so the fraction is an upper bound.

    Args:
        model: the network.
        layout: (site, slice of the state vector) per site.
        state: (D,) bool state.

    Returns:
        (kept, total) numbers of trainable scalar parameters.
    """
    alive = {p: torch.ones_like(p, dtype=torch.bool) for p in model.parameters() if p.requires_grad}
    for spec, part in layout:
        dead = ~state[part]
        if _rows_of(spec.prev, spec.num_features):
            for param in (spec.prev.weight, spec.prev.bias):
                if param is not None and param in alive:
                    alive[param][dead] = False
        group = _columns_per_unit(spec.next, spec.num_features)
        if group and spec.next.weight in alive:
            alive[spec.next.weight][:, dead.repeat_interleave(group)] = False
    total = sum(p.numel() for p in alive)
    return int(sum(int(a.sum()) for a in alive.values())), total


class _StateMask(nn.Module):
    """What EDropout installs in each :class:`~dropout_lab.dropout.sites.Site`: multiplies the site's
    units/channels by its slice of the owner's active mask (identity when there is none).

    Shapes: (N, C) or (N, C, H, W) -> same; the mask is (D,) (one state for the batch) or (N, D) (a
    state per sample, for candidate passes).
    """

    def __init__(self, owner: EDropout, part: slice) -> None:
        super().__init__()
        object.__setattr__(self, "owner", owner)  # not a submodule: the owner is registered once, on the model
        self.part = part

    def forward(self, x: Tensor) -> Tensor:
        mask = self.owner.active_mask()
        if mask is None:
            return x
        mask = mask[..., self.part].to(x.dtype)
        mask = mask.expand(x.shape[0], -1) if mask.ndim == 1 else mask
        return x * mask.view(*mask.shape, *([1] * (x.ndim - 2)))

    def extra_repr(self) -> str:
        return f"bits={self.part.start}:{self.part.stop}"


class EDropout(DropoutMethod):
    """EDropout (arXiv:2006.04270): an evolving population of binary pruning states over all sites.

    State layout: the sites in forward order, C bits per conv site, F bits per fc site (D in all).
    Training forward: activations times the best state's bits (no rescaling). Eval: identity (F);
    inside :meth:`pruned` the best state (P). Stats: ``drop_fraction`` (mean fraction of zero bits
    in the best state over training steps), ``kept_param_fraction`` (:func:`kept_parameters` of the
    best state / total), ``energy`` (best energy at the last evolution), ``converged`` (0/1).

    Args:
        p: initial drop probability: population bits start Bernoulli(1 - p) (seed 004: 0.5). With
            p = 0 every state is all ones and the evolution cannot leave it.
        site: a :class:`SiteSpec` named ``model`` with D = ``num_features`` (built by :meth:`attach`).
        layout: (site, slice of the state) per occupied site (built by :meth:`attach`).
        num_states: population size S (seed 004: 8; at least 4 for the DE mutation).
        threshold: optimizer steps without a change of the best state after which it is frozen
            (seed 004: 100).
        mutation: DE factor F in [0, 1] (reference: 0.9).
        crossover: DE crossover rate CR in [0, 1] (reference: 0.9).
        update_every: evolve the population every this many optimizer steps (paper: 1; default 16,
            which keeps a LeNet5 step within 2x of standard dropout); each evolution costs one
            no-grad forward of 2 S copies of the batch.
        warmup: optimizer steps trained with the full network (best state all ones) before the first
            evolution (not in the paper; 0 = evolve from step 0, see docs/edropout.md).

    Raises:
        ValueError: naming ``dropout.<key>`` for p outside [0, 1), num_states < 4, threshold < 1,
            update_every < 1, warmup < 0 or mutation/crossover outside [0, 1].
    """

    default_sites: ClassVar[str] = "all"

    def __init__(self, p: float, site: SiteSpec, layout: list[tuple[SiteSpec, slice]], num_states: int = 8,
                 threshold: int = 100, mutation: float = 0.9, crossover: float = 0.9, update_every: int = 16,
                 warmup: int = 0) -> None:
        super().__init__(p, site)
        for key, value, ok in (("num_states", num_states, int(num_states) == num_states >= 4),
                               ("threshold", threshold, int(threshold) == threshold >= 1),
                               ("update_every", update_every, int(update_every) == update_every >= 1),
                               ("warmup", warmup, int(warmup) == warmup >= 0),
                               ("mutation", mutation, 0.0 <= mutation <= 1.0),
                               ("crossover", crossover, 0.0 <= crossover <= 1.0)):
            if not ok:
                need = "an integer >= 4" if key == "num_states" else "an integer >= 1" if key in ("threshold", "update_every") else "an integer >= 0" if key == "warmup" else "in [0, 1]"
                raise ValueError(f"dropout.{key}={value} must be {need}")
        self.layout = layout
        self.threshold, self.update_every, self.warmup = int(threshold), int(update_every), int(warmup)
        self.mutation, self.crossover = float(mutation), float(crossover)
        D = site.num_features
        self.register_buffer("population", self.keep_one_per_site(torch.rand(int(num_states), D) >= self.p))
        self.register_buffer("best", torch.ones(D, dtype=torch.bool))
        self.register_buffer("best_energy", torch.tensor(float("inf")))
        self.register_buffer("last_change", torch.tensor(-1))
        self.register_buffer("converged", torch.tensor(False))
        self._override: Tensor | None = None
        self._model: list[nn.Module] = []  # the network, without registering it as a submodule

    @classmethod
    def attach(cls, model: nn.Module, factory: Callable, sites: list) -> list[DropoutMethod]:
        """Build one EDropout for all ``sites``, register it on ``model`` as ``edropout`` (so its
        buffers follow the model's device and state dict) and put a :class:`_StateMask` in each site.

        Returns:
            [the EDropout instance] (its ``site.name`` is ``model``).
        """
        layout, start = [], 0
        for s in sites:
            spec = s.spec(model)
            layout.append((spec, slice(start, start + spec.num_features)))
            start += spec.num_features
        # kind is not meaningful for a model-level state; the first site's is reported
        method = factory(site=SiteSpec("model", layout[0][0].kind, start), layout=layout)
        method._model.append(model)
        model.add_module("edropout", method)
        for s, (_, part) in zip(sites, layout):
            s.method = _StateMask(method, part)
        return [method]

    def keep_one_per_site(self, states: Tensor) -> Tensor:
        """Set one random bit in every site of a state that has none there, in place, and return
        ``states`` ((S, D) bool).

        Not in the paper, whose ResNets keep a residual path past every pruned layer: in a plain
        chain (LeNet5, MLP) a site with no unit left makes the logits constant, whose margin
        (about 0) beats the negative margin of any untrained network, and the masked weights never
        train, so the evolution locks onto a dead network (seen on Fashion-MNIST, docs/edropout.md).
        """
        rows = torch.arange(states.shape[0], device=states.device)
        for _, part in self.layout:
            block = states[:, part]
            pick = torch.randint(block.shape[1], (states.shape[0],), device=states.device)
            block[rows, pick] |= ~block.any(1)
        return states

    def active_mask(self) -> Tensor | None:
        """The mask the sites apply now: a candidate (N, D) mask during :meth:`energies`, the best
        state in training mode or inside :meth:`pruned`, else None (full network)."""
        if self._override is not None:
            return self._override
        return self.best if self.training else None

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("EDropout acts through the _StateMask modules in the sites, not as a layer")

    @contextmanager
    def _masked(self, mask: Tensor) -> Iterator[None]:
        self._override = mask
        try:
            yield
        finally:
            self._override = None

    def pruned(self):
        """Context manager: the network evaluates as the pruned network P (the best state)."""
        return self._masked(self.best)

    def eval_variants(self) -> dict[str, Callable]:
        """``{"pruned": self.pruned}``: the test loop also reports ``test/acc_pruned``."""
        return {"pruned": self.pruned}

    @torch.no_grad()
    def energies(self, model: nn.Module, x: Tensor, y: Tensor, states: Tensor) -> Tensor:
        """Energies of ``states`` on the batch (x, y) in one extra forward of S copies of the batch.

        Runs under :func:`~dropout_lab.dropout.passes.extra_pass` in eval mode: no gradients,
        BatchNorm uses (and does not update) its running statistics, so the S copies in one batch are
        scored independently of each other; the train/eval flags are restored afterwards.

        Args:
            model: the network holding this method's sites.
            x: (B, ...) inputs; y: (B,) labels.
            states: (S, D) bool.

        Returns:
            (S,) energies (:func:`margin_energy`).
        """
        S, B = states.shape[0], x.shape[0]
        with extra_pass(model, train=False), self._masked(states.repeat_interleave(B, 0)):
            logits = model(x.repeat(S, *([1] * (x.ndim - 1))))
        return margin_energy(logits.view(S, B, -1), y)

    @torch.no_grad()
    def evolve(self, model: nn.Module, x: Tensor, y: Tensor) -> bool:
        """One generation: trials by :func:`binary_de_trials` (and :meth:`keep_one_per_site`), members and trials scored on the same
        batch, each member replaced by its trial if the trial's energy is not higher, best = argmin.

        Returns:
            True if the best state changed.
        """
        S = self.population.shape[0]
        trials = self.keep_one_per_site(binary_de_trials(self.population, self.mutation, self.crossover))
        energy = self.energies(model, x, y, torch.cat([self.population, trials]))
        take = energy[S:] <= energy[:S]
        self.population.copy_(torch.where(take[:, None], trials, self.population))
        energy = torch.where(take, energy[S:], energy[:S])
        i = energy.argmin()
        changed = not torch.equal(self.population[i], self.best)
        self.best.copy_(self.population[i])
        self.best_energy.copy_(energy[i])
        return changed

    def on_train_batch_start(self, ctx: DropoutContext) -> None:
        """Evolve (every ``update_every`` steps from step ``warmup`` until converged), freeze the best state after
        ``threshold`` unchanged steps, and record the fraction of zero bits of the best state."""
        if not bool(self.converged) and ctx.global_step >= self.warmup and (ctx.global_step - self.warmup) % self.update_every == 0:
            x, y = ctx.batch
            if self.evolve(ctx.module.model, x, y) or int(self.last_change) < 0:
                self.last_change.fill_(ctx.global_step)
        if not bool(self.converged) and int(self.last_change) >= 0 and ctx.global_step - int(self.last_change) >= self.threshold:
            self.converged.fill_(True)
        self.record(1.0 - self.best.float().mean())

    def kept_param_fraction(self) -> float:
        """Fraction of the model's trainable parameters kept by the best state (:func:`kept_parameters`)."""
        kept, total = kept_parameters(self._model[0], self.layout, self.best)
        return kept / total

    def stats(self) -> dict[str, float]:
        return super().stats() | {
            "kept_param_fraction": self.kept_param_fraction(),
            "energy": float(self.best_energy),
            "converged": float(self.converged),
        }

    def extra_repr(self) -> str:
        return (f"p={self.p}, bits={self.site.num_features}, num_states={self.population.shape[0]}, "
                f"threshold={self.threshold}, update_every={self.update_every}")
