"""The logger group (conf/logger): each logger's run is read back through that logger's own reader, and its
hyper-parameters and final metrics equal the run's metrics.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from pytorch_lightning.core.saving import load_hparams_from_yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import SMOKE, make_cfg
from dropout_lab.errors import ConfigError
from dropout_lab.loggers import instantiate_loggers
from dropout_lab.train import train

TINY = [*SMOKE, "dataset.subset={train: 256, val: 128, test: 128}", "trainer.limit_train_batches=4"]


def run(tmp_path: Path, *overrides: str) -> tuple[Path, dict]:
    """Train a tiny run in-process into ``tmp_path/run``; return its folder and metrics.json."""
    cfg = make_cfg([*TINY, *overrides], tmp_path / "run")
    train(cfg)
    return tmp_path / "run", json.loads((tmp_path / "run" / "metrics.json").read_text())


def final(rows: list[dict[str, str]], key: str) -> float:
    """The last logged value of ``key`` in CSVLogger rows (empty cells are other steps' metrics)."""
    return [float(r[key]) for r in rows if r.get(key)][-1]


def test_csv_logger_reads_back(tmp_path):
    # before the logger group, CSVLogger.log_hyperparams(params, metrics) raised TypeError (TensorBoard's signature)
    out, summary = run(tmp_path, "logger=csv")
    assert load_hparams_from_yaml(out / "csv" / "hparams.yaml") == summary["hparams"]
    with open(out / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert final(rows, "test/acc") == pytest.approx(summary["test_acc"])
    assert final(rows, "val/acc_best") == pytest.approx(summary["best_val_acc"])
    assert not list(out.glob("events.out.tfevents.*"))  # TensorBoard only when chosen


def test_several_loggers_at_once_and_none(tmp_path):
    out, summary = run(tmp_path / "both", "logger=[tensorboard,csv]")
    events = EventAccumulator(str(out)).Reload()  # TensorBoard's own reader, over every events file of the folder
    assert events.Scalars("test/acc")[-1].value == pytest.approx(summary["test_acc"])
    assert (out / "csv" / "metrics.csv").exists()
    for off in ("logger=none", "~logger"):
        out, summary = run(tmp_path / off.strip("~=").replace("=", "_"), off)
        assert summary["status"] == "ok" and summary["test_acc"] is not None
        assert not list(out.glob("events.out.tfevents.*")) and not (out / "csv").exists()


def test_bad_logger_node_is_refused():
    with pytest.raises(ConfigError, match=r"logger.csv=.*a logger needs a _target_"):
        instantiate_loggers({"csv": {"save_dir": "."}})
    with pytest.raises(ConfigError, match=r"logger=.*expected named loggers"):
        instantiate_loggers({"_target_": "pytorch_lightning.loggers.CSVLogger"})


@pytest.mark.slow
def test_mlflow_logger_reads_back(tmp_path):
    pytest.importorskip("mlflow", reason="optional extra: pip install -e '.[mlflow]'")
    from mlflow.tracking import MlflowClient

    out, summary = run(tmp_path, "logger=mlflow", "logger.mlflow.run_name=tiny")
    client = MlflowClient(summary["config"]["logger"]["mlflow"]["tracking_uri"])
    (found,) = client.search_runs([client.get_experiment_by_name("dropout-lab").experiment_id])
    assert found.info.run_name == "tiny" and found.info.status == "FINISHED"
    assert found.data.params == {key: str(value) for key, value in summary["hparams"].items()}
    assert found.data.metrics["test/acc"] == pytest.approx(summary["test_acc"])
    assert found.data.metrics["val/acc_best"] == pytest.approx(summary["best_val_acc"])


def wandb_records(path: Path) -> list:
    """The records of a wandb transaction log (``run-<id>.wandb``): a 7-byte header (``:W&B``, magic,
    version), then LevelDB-log chunks in 32 KiB blocks, each with a 7-byte header (CRC, little-endian
    length, type 1 full / 2 first / 3 middle / 4 last), holding ``wandb.proto`` ``Record`` messages.
    (wandb 0.31 keeps its reader in the Go core; the format is in wandb's ``core/pkg/leveldb``.)"""
    from wandb.proto import wandb_internal_pb2

    raw, block, pos, chunk, records = path.read_bytes(), 32768, 7, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(raw[pos + 4 : pos + 6], "little"), raw[pos + 6]
        chunk, pos = chunk + raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


@pytest.mark.slow
def test_wandb_offline_logger_reads_back(tmp_path):
    pytest.importorskip("wandb", reason="optional extra: pip install -e '.[wandb]'")
    out, summary = run(tmp_path, "logger=wandb", "logger.wandb.name=tiny")
    (log,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    config, last = {}, {}
    key = lambda item: item.key or "/".join(item.nested_key)  # noqa: E731 - keys with '/' come as nested keys
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config |= {key(item): json.loads(item.value_json) for item in record.config.update}
        elif kind == "summary":
            last |= {key(item): json.loads(item.value_json) for item in record.summary.update}
    assert {key: config[key] for key in summary["hparams"]} == summary["hparams"]
    assert last["test/acc"] == pytest.approx(summary["test_acc"])
    assert last["val/acc_best"] == pytest.approx(summary["best_val_acc"])
