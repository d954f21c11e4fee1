"""EDropout: Salehinejad & Valaee, "EDropout: Energy-Based Dropout and Pruning of Deep Neural
Networks", IEEE TNNLS 33(10), 2022, arXiv:2006.04270 (source 004); docs/methods/edropout.md.

A model-level method: one population of binary *pruning states* for the whole network, one bit per
channel at each conv site and per unit at each fc site. After a warm-up (a fraction of the planned
steps) the population evolves at every optimizer step (the reference's cadence) by binary
differential evolution (mutation, binomial crossover, greedy selection) on the energy of each state =
minus the mean classification margin on the current training batch; the lowest-energy state masks the
network (inside autograd, no rescaling, so masked filters and FC inputs get zero gradient). Early state
convergence follows the reference: from epoch ``threshold`` (100 of the reference's 200 epochs; the
same fraction of a shorter run) the state is frozen once the best state has not changed for
``patience`` evolutions. The pruned network P (the best state) is the method's result: evaluation
(``val/acc``, ``test/acc``) runs P; the full network F is tested beside it as ``test/acc_full``
(:meth:`EDropout.eval_variants`).

Deviations from the reference code (sparsifai/edropout), see docs/methods/edropout.md: candidates are
evaluated under :func:`~dropout_lab.dropout.passes.extra_pass` (no BatchNorm statistics updated, mode
restored, no gradients); masks multiply the site activations instead of editing weights in place;
target and trial states are scored on the same batch (so convergence watches the best state, not its
energy); the warm-up and :meth:`EDropout.keep_one_per_site` keep plain chains (LeNet5) alive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from dropout_lab.checks import COUNT, FRACTION, POSITIVE, integer, number
from dropout_lab.dropout.base import DropoutContext, DropoutMethod, SiteSpec
from dropout_lab.dropout.passes import extra_pass
from dropout_lab.dropout.spec import Arg, MethodSpec, rate_p, register


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
    return (isinstance(layer, nn.Linear) and layer.out_features == n) or (
        isinstance(layer, nn.Conv2d) and layer.out_channels == n
    )


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

    def __init__(self, owner: EDropout, part: slice, owns: bool) -> None:
        super().__init__()
        if owns:  # the first site's mask holds the owner as a submodule: its buffers follow device and state dict
            self.owner = owner
        else:  # the others refer to it without registering it again
            object.__setattr__(self, "owner", owner)
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


#: the reference's run length in epochs, for which its early-convergence threshold (100) was set
REFERENCE_EPOCHS = 200


class EDropout(DropoutMethod):
    """EDropout (arXiv:2006.04270): an evolving population of binary pruning states over all sites.

    One instance for all sites (:meth:`attach`), so its candidate pass serves every site at once.

    State layout: the sites in forward order, C bits per conv site, F bits per fc site (D in all).
    Training forward and evaluation: activations times the best state's bits (no rescaling), i.e. the
    pruned network P; inside :meth:`full` every bit is 1 (the full network F). Stats: ``drop_fraction``
    (mean fraction of zero bits in the best state over training steps), ``kept_param_fraction``
    (:func:`kept_parameters` of the best state / total), ``energy`` (best energy at the last
    evolution), ``converged`` (0/1).

    Schedule, in optimizer steps t of a run planned for T steps and E epochs: the best state is all
    ones until t = round(``warmup`` * T); from then on the population evolves every ``update_every``
    steps (reference: 1). From t_c = T * ``threshold`` / max(E, 200) (epoch 100 in the reference's 200;
    half of any run up to 200 epochs) the state freezes once the best state has not changed for
    ``patience`` consecutive evolutions (reference: ~10 batches); a run that does not converge keeps
    evolving, and P is its last best state.

    Args:
        p: initial drop probability: population bits start Bernoulli(1 - p) (source 004: 0.5). With
            p = 0 every state is all ones and the evolution cannot leave it.
        site: a :class:`SiteSpec` named ``model`` with D = ``num_features`` (built by :meth:`attach`).
        layout: (site, slice of the state) per occupied site (built by :meth:`attach`).
        num_states: population size S (source 004: 8; at least 4 for the DE mutation).
        threshold: early-convergence threshold in epochs (source 004: 100), scaled to the run as above.
        patience: evolutions without a change of the best state that freeze it once the threshold is
            reached (>= 1; the reference looks at the last ~10 batches).
        mutation: DE factor F in [0, 1] (reference: 0.9).
        crossover: DE crossover rate CR in [0, 1] (reference: 0.9).
        update_every: optimizer steps between evolutions (reference: 1); each evolution costs one
            no-grad forward of 2 S copies of the batch.
        warmup: fraction of the planned steps trained with the full network before the first
            evolution, in [0, 0.5) so that every run evolves before its convergence check (not in the
            paper, whose ResNets keep a residual path; needed on plain chains, docs/methods/edropout.md).

    """

    def __init__(
        self,
        p: float,
        site: SiteSpec,
        layout: list[tuple[SiteSpec, slice]],
        num_states: int,
        threshold: float,
        patience: int,
        mutation: float,
        crossover: float,
        update_every: int,
        warmup: float,
    ) -> None:
        super().__init__(p, site)
        self.layout = layout
        self.threshold, self.patience, self.update_every, self.warmup = (
            float(threshold),
            int(patience),
            int(update_every),
            float(warmup),
        )
        self.mutation, self.crossover = float(mutation), float(crossover)
        D = site.num_features
        self.register_buffer("population", self.keep_one_per_site(torch.rand(int(num_states), D) >= self.p))
        self.register_buffer("best", torch.ones(D, dtype=torch.bool))
        self.register_buffer("best_energy", torch.tensor(float("inf")))
        self.register_buffer("unchanged", torch.tensor(0))  # consecutive evolutions without a change of the best state
        self.register_buffer("converged", torch.tensor(False))
        self._override: Tensor | None = None
        self._model: list[nn.Module] = []  # the network, without registering it as a submodule

    @classmethod
    def attach(cls, model: nn.Module, factory: Callable, sites: list) -> list[DropoutMethod]:
        """Build one EDropout for all ``sites`` and put a :class:`_StateMask` in each site; the first site's
        mask holds the EDropout as a submodule (so its buffers follow the model's device and state dict), and
        nothing is added to ``model`` outside its sites.

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
        for i, (s, (_, part)) in enumerate(zip(sites, layout)):
            s.method = _StateMask(method, part, owns=i == 0)
        return [method]

    def keep_one_per_site(self, states: Tensor) -> Tensor:
        """Set one random bit in every site of a state that has none there, in place, and return
        ``states`` ((S, D) bool).

        Not in the paper, whose ResNets keep a residual path past every pruned layer: in a plain
        chain (LeNet5, MLP) a site with no unit left makes the logits constant, whose margin
        (about 0) beats the negative margin of any untrained network, and the masked weights never
        train, so the evolution locks onto a dead network (seen on Fashion-MNIST, docs/methods/edropout.md).
        """
        rows = torch.arange(states.shape[0], device=states.device)
        for _, part in self.layout:
            block = states[:, part]
            pick = torch.randint(block.shape[1], (states.shape[0],), device=states.device)
            block[rows, pick] |= ~block.any(1)
        return states

    def active_mask(self) -> Tensor | None:
        """The mask the sites apply now: a candidate (N, D) mask during :meth:`energies`, None inside
        :meth:`full`, else the best state (training and evaluation: the pruned network P)."""
        return self.best if self._override is None else self._override

    def forward(self, x: Tensor) -> Tensor:
        """Never called: EDropout acts through the :class:`_StateMask` modules in the sites.

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError("EDropout acts through the _StateMask modules in the sites, not as a layer")

    @contextmanager
    def _masked(self, mask: Tensor | None) -> Iterator[None]:
        self._override = mask
        try:
            yield
        finally:
            self._override = None

    def full(self):
        """Context manager: the network evaluates as the full network F (every bit 1)."""
        return self._masked(torch.ones_like(self.best))

    def eval_variants(self) -> dict[str, Callable]:
        """``{"full": self.full}``: the test loop also reports F as ``test/acc_full`` beside P (``test/acc``)."""
        return {"full": self.full}

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

    def convergence_step(self, ctx: DropoutContext) -> int:
        """t_c = T * threshold / max(E, 200): the step from which the state may freeze (T planned
        steps, E planned epochs from ``trainer.max_epochs``, taken as <= 200 when unknown)."""
        epochs = getattr(getattr(ctx.module, "trainer", None), "max_epochs", None) or 0
        return round(ctx.max_steps * self.threshold / max(epochs, REFERENCE_EPOCHS))

    def on_train_batch_start(self, ctx: DropoutContext) -> None:
        """After the warm-up, evolve every ``update_every`` steps until converged; freeze the best
        state once it has not changed for ``patience`` evolutions from the convergence step on; record
        the fraction of zero bits of the best state."""
        if not bool(self.converged) and ctx.due(every=self.update_every, warmup=round(self.warmup * ctx.max_steps)):
            x, y = ctx.batch
            changed = self.evolve(ctx.module.model, x, y)
            self.unchanged.fill_(0) if changed else self.unchanged.add_(1)
            if ctx.global_step >= self.convergence_step(ctx) and int(self.unchanged) >= self.patience:
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
        return (
            f"p={self.p}, bits={self.site.num_features}, num_states={self.population.shape[0]}, threshold={self.threshold:g} epochs, "
            f"patience={self.patience}, update_every={self.update_every}, warmup={self.warmup:g}"
        )


SPEC = register(
    MethodSpec(
        key="edropout",
        cls=EDropout,
        source="source 004; Salehinejad & Valaee 2022",
        summary="model-level binary states evolved by differential evolution on the margin energy; its result is "
        "the pruned network P (`test/acc`, `val/acc`), the full network F beside it (`test/acc_full`)",
        p=rate_p(0.5, "initial drop probability of each state bit (the evolution moves it)"),
        p_is_rate=False,
        eval_identity=False,
        args={
            "num_states": Arg(8, integer(4), "population size (source 004)"),
            "threshold": Arg(
                100, POSITIVE, "early-convergence threshold in epochs (source 004: 100 of 200), scaled to the run"
            ),
            "patience": Arg(10, COUNT, "evolutions with an unchanged best state that freeze it after the threshold"),
            "mutation": Arg(0.9, FRACTION, "DE factor F (reference code)"),
            "crossover": Arg(0.9, FRACTION, "DE crossover rate CR (reference code)"),
            "update_every": Arg(1, COUNT, "optimizer steps between evolutions (reference: 1)"),
            "warmup": Arg(
                0.2,
                number(0, 0.5, high_open=True),
                "fraction of the planned steps with the full network before the first evolution (ours; 0 = paper)",
            ),
        },
        default_sites="all",
        drop_fraction="zero bits of the best state (0 during the warm-up)",
        p_eq="= drop fraction (mask 0 or 1)",
    )
)
