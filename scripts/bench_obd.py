"""OBD saliency: ranking stability and step-time cost by (probes, ema), LeNet5 on MNIST.

    OMP_NUM_THREADS=1 python scripts/bench_obd.py [--rounds 5] [--steps 50]

Stability: LeNet5 trained 150 Adam steps (lr 1e-3, batch 128) on the first 8192 MNIST training images;
two independent runs of the method's estimator (own Rademacher probes, own batches of 128) fold
3 / (1 - ema) Hessian passes into the EMA on these fixed weights; Spearman rank correlation of the two
resulting unit saliencies per fc site (fc1: 120 units, fc2: 84). Cost: one Hessian pass (both fc
sites) and one plain PyTorch step of `standard` p = 0.3 at fc sites (forward, cross-entropy, backward, Adam),
timed alternately ``--rounds`` x ``--steps`` times in one process (so machine load hits both alike);
"pass / step" = median pass time / median step time, and the step-time factor of OBD = 1 + (pass / step)
/ update_every (its other per-step work is a standard step). Lightning's per-step overhead, equal for both,
is left out, so the factors are upper bounds. Writes docs/bench_obd.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from copy import deepcopy
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from benchlib import ROOT, pretrained_lenet5
from scipy.stats import spearmanr

from dropout_lab.config import attach
from dropout_lab.dropout import spec
from dropout_lab.dropout.base import DropoutContext
from dropout_lab.dropout.obd import hessian_saliency

CONFIGS = [
    (1, 0.9, 10),
    (1, 0.9, 5),
    (2, 0.95, 5),
    (1, 0.98, 5),
    (2, 0.98, 5),
    (4, 0.98, 5),
]  # (probes, ema, update_every)


def node(key: str, **kw) -> dict:
    """The ``dropout`` node of method ``key`` at p = 0.3 on the fc sites, ``kw`` replacing its arguments."""
    return spec.get(key).node() | {"p": 0.3, "sites": "fc", **kw}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    net, X, Y = pretrained_lenet5(os.environ.get("DROPOUT_LAB_DATA", "data"))

    def step(model, opt, x, y):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    rows = [
        "| probes | ema | update_every | updates | Spearman fc1 | Spearman fc2 | pass / step | x standard |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    model = deepcopy(net).train()
    attach(model, node("standard"))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    weights = [net.fc1.weight, net.fc2.weight]
    ratios = {}
    for probes in sorted({c[0] for c in CONFIGS}):  # one Hessian pass vs one standard step, alternating
        t_step, t_pass = [], []
        for _ in range(args.rounds * args.steps):
            idx = torch.randint(0, 8192, (128,))
            t0 = time.perf_counter()
            step(model, opt, X[idx], Y[idx])
            t1 = time.perf_counter()
            hessian_saliency(net, weights, X[idx], Y[idx], probes)
            t_step.append(t1 - t0)
            t_pass.append(time.perf_counter() - t1)
        ratios[probes] = statistics.median(t_pass) / statistics.median(t_step)
    for probes, ema, every in CONFIGS:
        updates = round(3 / (1 - ema))
        scores = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            copy = deepcopy(net).train()
            obd = attach(copy, node("obd", probes=probes, ema=ema, update_every=1))
            module = SimpleNamespace(model=copy)
            for k in range(updates):
                idx = torch.randint(0, 8192, (128,))
                for m in obd:
                    m.on_train_batch_start(DropoutContext(k, 0, 10**6, 8192, module, (X[idx], Y[idx])))
            scores.append([m.score for m in obd])
        rho = [spearmanr(a, b).correlation for a, b in zip(*scores)]
        rows.append(
            f"| {probes} | {ema} | {every} | {updates} | {rho[0]:.3f} | {rho[1]:.3f} | {ratios[probes]:.2f} | {1 + ratios[probes] / every:.2f} |"
        )
    header = (
        f"OBD saliency stability and cost, LeNet5, MNIST, batch 128, CPU ({torch.get_num_threads()} thread(s)); "
        f"`python scripts/bench_obd.py --rounds {args.rounds} --steps {args.steps}`"
    )
    text = header + "\n\n" + "\n".join(rows) + "\n"
    print(text)
    (ROOT / "docs" / "bench_obd.md").write_text(text)


if __name__ == "__main__":
    main()
