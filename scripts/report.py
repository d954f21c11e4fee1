"""Write a sweep's comparison report: ``python scripts/report.py outputs/multirun/<sweep> [--rope 0.3] [--metric acc]
[--selection last] [--tuning-seeds 0 1]``.

Writes report.md, summary.csv, tests.csv, planning.csv, jobs.csv and PNG plots into the sweep folder (only there)
(see :mod:`dropout_lab.report`) and prints their paths. Options left out come from the jobs' ``report`` config node.
"""

import argparse

from dropout_lab.report import METRICS, NETWORKS, write_report

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a multirun folder (hydra.sweep.dir)")
    parser.add_argument("--rope", type=float, help="region of practical equivalence, ± points (report.rope)")
    parser.add_argument("--metric", choices=list(METRICS), help="compared test metric (report.metric)")
    parser.add_argument(
        "--selection", choices=list(NETWORKS), help="network selection and test share (report.selection)"
    )
    parser.add_argument(
        "--tuning-seeds", type=int, nargs="*", help="seeds that select p; the others are evaluation replicates"
    )
    args = parser.parse_args()
    for path in write_report(
        args.sweep, rope=args.rope, metric=args.metric, selection=args.selection, tuning_seeds=args.tuning_seeds
    ):
        print(path)
