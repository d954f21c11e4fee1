"""The default sweeper trains every effective configuration once, and every run of the sweep shows
TensorBoard's HParams plugin the same columns and metrics (read with TensorBoard's own readers)."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from conftest import run_cli
from dropout_lab.report import write_report
from dropout_lab.summary import HPARAM_METRICS

TINY = ["trainer=smoke", "dataset.subset={train: 256, val: 128, test: 128}", "dataset.batch_size=64"]


@pytest.mark.slow
def test_sweep_trains_none_once_per_model_and_declares_one_hparams_experiment(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", f"hydra.sweep.dir={sweep}", *TINY, "model=mlp", "model.hidden_sizes=[32],[16,16]",
                    "dropout=none,standard", "dropout.p=0.1,0.3", "seed=0"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dedup: 2 of 8 jobs duplicate another job" in proc.stderr + proc.stdout
    runs = {p.parent: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    jobs = sorted((s["hparams"]["method"], s["hparams"]["model.hidden_sizes"]) for s in runs.values())
    assert jobs == [("none", "[16, 16]"), ("none", "[32]"), *[("standard", h) for h in ("[16, 16]", "[16, 16]", "[32]", "[32]")]]

    experiments, sessions = set(), []
    for folder in runs:
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        content = events.PluginTagToContent(metadata.PLUGIN_NAME)
        experiments.add(metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG]).SerializeToString(deterministic=True))
        sessions.append(metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG]).hparams)
        for tag in set(HPARAM_METRICS) & set(events.Tags()["scalars"]):  # real values only: nothing at step 0
            assert min(e.step for e in events.Scalars(tag)) > 0, tag
    assert len(experiments) == 1  # identical in every run: the table does not depend on which run is read first
    experiment = metadata.parse_experiment_plugin_data(
        EventAccumulator(str(next(iter(runs)))).Reload().PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG])
    columns = {h.name: h for h in experiment.hparam_infos}
    assert [v.string_value for v in columns["method"].domain_discrete.values] == ["none", "standard"]
    assert [v.string_value for v in columns["model.hidden_sizes"].domain_discrete.values] == ["[16, 16]", "[32]"]
    assert {"dataset", "model", "p", "seed"} <= set(columns) and "model.activation" not in columns  # only swept args
    assert [m.name.tag for m in experiment.metric_infos] == list(HPARAM_METRICS)
    assert sorted(s["model.hidden_sizes"].string_value for s in sessions) == sorted(h for _, h in jobs)

    write_report(sweep)
    md = (sweep / "report.md").read_text()
    assert "duplicate" not in md and md.count("## mnist / lenet5") == 0 and md.count("## mnist / mlp [model.hidden_sizes=") == 2
