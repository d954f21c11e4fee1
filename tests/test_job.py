"""One job record (dropout_lab.job): the identity the dedup, the report and the resume check share, and the
summary read in one place by the resume check, the sweep's closing line and the report."""

from __future__ import annotations

import json

from conftest import make_cfg
from dropout_lab.callbacks import sweep_counts
from dropout_lab.job import JOBS_FILE, SUMMARY_FILE, Job, changed_keys, identity
from dropout_lab.report.load import load_jobs
from dropout_lab.sweeplock import finished


def test_identity_leaves_out_neutral_keys_and_ignored_arguments(tmp_path):
    none_a = make_cfg(["dropout=none", "dropout.p=0.1", "resume=true"], tmp_path / "a")
    none_b = make_cfg(["dropout=none", "dropout.p=0.7"], tmp_path / "b")
    assert identity(none_a) == identity(none_b)  # none ignores p; resume and output_dir are neutral
    std_a, std_b = (make_cfg(["dropout=standard", f"dropout.p={p}"], tmp_path) for p in (0.1, 0.7))
    assert identity(std_a) != identity(std_b)
    saved = json.loads(json.dumps({"dropout": {"name": "none", "p": 0.3}, "seed": 1, "data_root": "/x"}))
    assert json.loads(identity(saved)) == {"dropout": {"name": "none"}, "seed": 1}  # a stored summary's config


def test_one_reader_of_a_jobs_summary_for_resume_closing_line_and_report(tmp_path):
    """Each status is read alike by the resume check, the sweep's closing line and the report."""
    cfg = make_cfg([], tmp_path / "ok")
    folders = {name: tmp_path / name for name in ("ok", "failed", "broken", "pending")}
    for folder in folders.values():
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text("- dropout.p=0.5\n- +extra=1\n")
    hparams = {"method": "standard", "p": 0.5, "model": "lenet5", "dataset": "mnist", "seed": 0}
    Job(folders["ok"]).write({"status": "ok", "hparams": hparams, "config": {}, "metrics": {"test/acc": 0.9}})
    Job(folders["failed"]).write({"status": "failed", "hparams": hparams, "error": "boom"})
    (folders["broken"] / SUMMARY_FILE).write_text('{"status": "o')
    (tmp_path / JOBS_FILE).write_text(json.dumps(list(folders)))

    assert {name: Job(f).status() for name, f in folders.items()} == {
        "ok": "ok",
        "failed": "failed",
        "broken": "unreadable",
        "pending": "not started",
    }
    assert Job(folders["ok"]).overrides() == {"dropout.p": "0.5", "extra": "1"}
    assert sweep_counts(tmp_path) == {"ok": 1, "failed": 1, "unreadable": 1, "not started": 1}
    jobs = load_jobs(tmp_path)
    assert dict(zip(jobs["folder"], jobs["status"])) == {
        "ok": "ok",
        "failed": "failed",
        "broken": "unreadable",
        "pending": "unfinished",
    }
    assert Job(folders["failed"]).finished() is None and Job(folders["broken"]).finished() is None
    assert finished(cfg, folders["failed"]) is None and finished(cfg, folders["pending"]) is None


def test_changed_keys_ignore_where_the_data_and_the_job_live():
    old = {"data_root": "/a", "dataset": {"root": "/a/mnist"}, "trainer": {"devices": [0]}, "seed": 1}
    new = {"data_root": "/b", "dataset": {"root": "/b/mnist"}, "trainer": {"devices": [1]}, "seed": 2}
    assert changed_keys(old, new) == ["seed"]
