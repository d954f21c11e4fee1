"""Stacked training, measured: K configurations of one layer-level method (here K seeds of LeNet5 + standard
dropout) trained as one stacked model in one process (``torch.func.stack_module_state`` + ``vmap`` with
``randomness="different"``: every member draws its own dropout masks) against the same K trained one after
another, on CPU. Not wired into the harness.

    python scripts/bench_stacked.py [--k 8] [--batches 150] [--threads 1]

Both sides see the same batches in the same order (one shuffle), Adam 1e-3 (elementwise, so one Adam over
the stacked parameters is K independent Adams), batch 128; the stacked loss is the sum of the members'
mean cross-entropies, so each member's gradient is its own. Prints samples/s of both, their ratio, the test
accuracy of each member, and whether the two sets of K accuracies agree within seed noise (Welch's t-test,
p > 0.05, and the mean difference within two standard errors). Writes docs/bench_stacked.md.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from benchlib import ROOT, config, evaluate, machine, write_section
from hydra.utils import instantiate
from scipy import stats
from torch.func import functional_call, stack_module_state, vmap

from dropout_lab.config import attach, instantiate_model
from dropout_lab.data import TensorBatches


def members(cfg, k: int) -> list[torch.nn.Module]:
    """K models with the method attached, seeds 0..K-1."""
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        model = instantiate_model(cfg)
        attach(model, cfg.dropout)
        out.append(model.train())
    return out


def one_after_another(models, batches) -> float:
    """Train each model in turn on ``batches``; return seconds."""
    start = time.perf_counter()
    for model in models:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def stacked(models, batches) -> tuple[float, list[torch.nn.Module]]:
    """Train the K models as one vmapped model; return (seconds, the K trained models)."""
    params, buffers = stack_module_state(models)
    params = {name: p.detach().requires_grad_() for name, p in params.items()}
    base = copy.deepcopy(models[0]).to("meta")

    def forward(p, b, x):
        return functional_call(base, (p, b), (x,))

    batched = vmap(forward, in_dims=(0, 0, None), randomness="different")
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    start = time.perf_counter()
    for x, y in batches:
        logits = batched(params, buffers, x)  # (K, B, classes)
        loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(len(models)), reduction="sum") / len(y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    trained = []
    for i, model in enumerate(models):
        model = copy.deepcopy(model)
        model.load_state_dict({name: t[i].detach() for name, t in (params | buffers).items()}, strict=False)
        trained.append(model)
    return seconds, trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--batches", type=int, default=150, help="training batches per member")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_stacked.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config(Path("."), ["model=lenet5", "dropout=standard", "dataset.batch_size=128"])
    dm = instantiate(cfg.dataset)
    dm.setup()
    data = dm.normalised()
    torch.manual_seed(0)
    batches = [b for _, b in zip(range(args.batches), TensorBatches(*data["train"], 128, shuffle=True))]
    seq_models = members(cfg, args.k)
    seq_seconds = one_after_another(seq_models, batches)
    stack_seconds, stack_models = stacked(members(cfg, args.k), batches)
    seq_acc = [evaluate(m, *data["test"]) for m in seq_models]
    stack_acc = [evaluate(m, *data["test"]) for m in stack_models]
    samples = args.k * args.batches * 128
    diff = statistics.mean(stack_acc) - statistics.mean(seq_acc)
    se = (statistics.variance(stack_acc) / args.k + statistics.variance(seq_acc) / args.k) ** 0.5
    p = stats.ttest_ind(stack_acc, seq_acc, equal_var=False).pvalue
    match = p > 0.05 and abs(diff) <= 2 * se
    rows = [
        "| measure | one after another | stacked (vmap) |",
        "| --- | --- | --- |",
        f"| training samples/s ({args.k} members x {args.batches} batches x 128) | {samples / seq_seconds:.0f} | {samples / stack_seconds:.0f} |",
        f"| speed-up, stacked / one after another | | {seq_seconds / stack_seconds:.2f}x |",
        f"| test accuracy %, mean ± sd over {args.k} seeds | {100 * statistics.mean(seq_acc):.2f} ± {100 * statistics.stdev(seq_acc):.2f} | "
        f"{100 * statistics.mean(stack_acc):.2f} ± {100 * statistics.stdev(stack_acc):.2f} |",
        f"| per-seed test accuracy % | {', '.join(f'{100 * a:.2f}' for a in seq_acc)} | {', '.join(f'{100 * a:.2f}' for a in stack_acc)} |",
        f"| match within seed noise (Welch p = {p:.2f}, diff {100 * diff:+.2f} pp, 2 SE = {200 * se:.2f} pp) | | {'yes' if match else 'NO'} |",
    ]
    write_section(
        args.out,
        f"K = {args.k} seeds, LeNet5 + standard dropout",
        f"MNIST, batch 128, Adam 1e-3, {args.batches} batches per member, same batches for both; CPU threads={args.threads}, "
        f"{machine()}; `python scripts/bench_stacked.py --k {args.k} --batches {args.batches} --threads {args.threads}`. "
        "Measured on a machine shared with other jobs: the ratio comes from one run of each side.",
        rows,
    )


if __name__ == "__main__":
    main()
