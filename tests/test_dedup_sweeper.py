"""The default sweeper trains every effective configuration once, and TensorBoard's HParams plugin
sees one experiment (columns, discrete domains, metrics) for the whole sweep and one session per job
(read with TensorBoard's own readers)."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import metadata

from conftest import CONF, run_cli
from dropout_lab import compat
from dropout_lab.report import write_report
from dropout_lab.summary import HPARAM_METRICS

TINY = ["trainer=smoke", "dataset.subset={train: 256, val: 128, test: 128}", "dataset.batch_size=64"]


@pytest.mark.slow
def test_sweep_trains_none_once_per_model_and_declares_one_hparams_experiment(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            f"hydra.sweep.dir={sweep}",
            *TINY,
            "model=mlp",
            "model.hidden_sizes=[32],[16,16]",
            "dropout=none,standard",
            "dropout.p=0.1,0.3",
            "seed=0",
            "hydra.sweeper.max_batch_size=4",  # two launches: the second numbers its jobs on from the first
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dedup: 2 of 8 jobs duplicate another job" in proc.stderr + proc.stdout
    assert [f"\t#{i} : " in proc.stdout + proc.stderr for i in range(7)] == [True] * 6 + [False]
    runs = {p.parent: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    jobs = sorted((s["hparams"]["method"], s["hparams"]["model.hidden_sizes"]) for s in runs.values())
    assert jobs == [
        ("none", "[16, 16]"),
        ("none", "[32]"),
        *[("standard", h) for h in ("[16, 16]", "[16, 16]", "[32]", "[32]")],
    ]

    # what the HParams plugin reads: one experiment (at the sweep root), one session per job
    tb = EventMultiplexer().AddRunsFromDirectory(str(sweep))
    tb.Reload()
    content = tb.PluginRunToTagToContent(metadata.PLUGIN_NAME)
    assert [run for run, tags in content.items() if metadata.EXPERIMENT_TAG in tags] == ["."]
    experiment = metadata.parse_experiment_plugin_data(content["."][metadata.EXPERIMENT_TAG])
    sessions = [
        metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG]).hparams
        for run, tags in content.items()
        if run != "."
    ]
    assert len(sessions) == 6 and all(sorted(s) == sorted(sessions[0]) for s in sessions)
    columns = {h.name: h for h in experiment.hparam_infos}
    assert [v.string_value for v in columns["method"].domain_discrete.values] == ["none", "standard"]
    assert [v.string_value for v in columns["model.hidden_sizes"].domain_discrete.values] == ["[16, 16]", "[32]"]
    assert {"dataset", "model", "p", "seed"} <= set(columns) and "model.activation" not in columns  # only swept args
    assert [m.name.tag for m in experiment.metric_infos] == list(HPARAM_METRICS)
    assert sorted(s["model.hidden_sizes"].string_value for s in sessions) == sorted(h for _, h in jobs)
    for folder in runs:  # real values only: no scalar point at step 0
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        events.Reload()
        for tag in set(HPARAM_METRICS) & set(events.Tags()["scalars"]):
            assert min(e.step for e in events.Scalars(tag)) > 0, tag

    write_report(sweep)
    md = (sweep / "report.md").read_text()
    assert (
        "duplicate" not in md
        and md.count("## mnist / lenet5") == 0
        and md.count("## mnist / mlp [model.hidden_sizes=") == 2
    )


def test_plan_derives_every_job_as_composing_it_whole_would(tmp_path):
    """dedup.plan composes one config per structure and derives the other jobs from their overrides; each
    job's identity, HParams row and validity equal what composing and validating that job alone gives."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from conftest import CONF, DATA_ROOT
    from dropout_lab.dedup import checked, plan
    from dropout_lab.job import identity
    from dropout_lab.summary import flat_hparams

    sweep = [
        "dropout=none,standard,dropblock",
        "dropout.p=0.1,0.3,abc",
        "seed=0,7",
        "optimizer.lr=0.01,0.1",
        "dataset.subset={train: 64}",
        f"data_root={DATA_ROOT}",
    ]
    jobs = compat.grid(OverridesParser.create().parse_overrides(sweep))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        load = lambda job: compose("config", overrides=list(job), return_hydra_config=True)  # noqa: E731 - one job, composed whole
        calls = []
        planned = plan(lambda job: calls.append(job) or load(job), jobs)
        whole = [load(job) for job in jobs]
    assert len(calls) == 3  # one composition per dropout method, not 36
    assert len(planned) == len(jobs) == 36
    for job, cfg in zip(planned, whole):
        config = checked(cfg)
        assert job.valid == (config is not None), job.overrides
        if job.valid:
            assert job.key == identity(cfg) and job.row == flat_hparams(config), job.overrides
    assert sum(job.valid for job in planned) == 24  # p=abc: 12 jobs invalid
    assert len({job.key for job in planned if job.valid}) == 20  # none ignores p: its 8 jobs are 4 configurations


DEDUP = "hydra_plugins.dropout_lab_sweeper.dedup_sweeper.DedupSweeper"


def sweeper(*overrides: str) -> str:
    """The ``_target_`` of the sweeper a command line selects."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra.sweeper._target_


def test_the_dedup_sweeper_is_the_default_under_its_own_name_and_presets_still_replace_it():
    from hydra_plugins.dropout_lab_sweeper.dedup_sweeper import DedupSweeper

    assert sweeper() == sweeper("experiment=dropout_zoo") == DEDUP
    assert sweeper("hydra/sweeper=dedup") == DEDUP
    # Hydra's own entry is Hydra's: nothing replaces it
    assert (
        sweeper("hydra/sweeper=basic")
        == sweeper("~hparams_search")
        == "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    )
    assert "split_arguments" not in vars(DedupSweeper) and "validate_batch_is_legal" not in vars(DedupSweeper)
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install -e '.[optuna]'")
    assert sweeper("hparams_search=dropout_p") == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
