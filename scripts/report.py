"""Write a sweep's comparison report: ``python scripts/report.py outputs/multirun/<sweep>``.

Writes report.md, summary.csv, jobs.csv, tests.csv and PNG plots into the sweep folder (only there) (see
:mod:`dropout_lab.report`) and prints their paths.
"""

import argparse

from dropout_lab.report import write_report

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a multirun folder (hydra.sweep.dir)")
    for path in write_report(parser.parse_args().sweep):
        print(path)
