"""What a run reports: the flat hyper-parameters for TensorBoard's HParams tab, a per-epoch history,
and the ``metrics.json`` summary that the sweep report reads."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

SUMMARY_FILE = "metrics.json"

#: metrics declared to the HParams plugin (the dashboard shows the latest value of each scalar tag)
HPARAM_METRICS = ("hp_metric", "val/acc", "val/loss", "test/acc", "test/loss", "test/ece", "test/brier", "test_best/acc",
                  "dropout/drop_fraction", "dropout/p_eq")
#: per-example test predictions of a job (:func:`dropout_lab.train.run_test`)
PREDICTIONS_FILE = "predictions.npz"
#: declared too when a method of the sweep has evaluation variants (EDropout: full network F, docs/edropout.md)
VARIANT_METRICS = ("test/acc_full", "test/loss_full")
#: dropout config keys that are columns of their own (or not arguments)
_NOT_ARGS = ("_target_", "_partial_", "name", "p", "sites")


def target_name(node: DictConfig | dict | None) -> str:
    """Short name of a config node's ``_target_`` (``torch.optim.Adam`` -> ``adam``), ``none`` if absent."""
    target = (node or {}).get("_target_")
    return target.rsplit(".", 1)[-1].lower() if target else "none"


def _scalar(value: Any) -> bool | int | float | str:
    """An HParams cell: numbers, booleans and strings as they are, anything else (lists, None) as JSON text."""
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value)


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's hyper-parameters as scalar HParams cells (no None: TensorBoard would turn a numeric
    column into strings).

    Keys: method, p, sites, model, dataset, seed, optimizer, lr, weight_decay, scheduler,
    batch_size, epochs (every run), then ``dropout.<arg>`` and ``model.<arg>`` for the method's and the
    model's other arguments (lists and null as JSON text, e.g. ``model.hidden_sizes: "[800, 800]"``).
    """
    dropout = OmegaConf.to_container(cfg.dropout, resolve=True)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    return {
        "method": str(cfg.dropout.name),
        "p": float(cfg.dropout.get("p", 0.0)),
        "sites": str(cfg.dropout.get("sites", "default")),
        "model": target_name(cfg.model),
        "dataset": str(cfg.dataset.name),
        "seed": int(cfg.seed),
        "optimizer": target_name(cfg.optimizer),
        "lr": float(cfg.optimizer.lr),
        "weight_decay": float(cfg.optimizer.get("weight_decay", 0.0)),
        "scheduler": target_name(cfg.get("scheduler")),
        "batch_size": int(cfg.dataset.batch_size),
        "epochs": int(cfg.trainer.max_epochs),
        **{f"dropout.{k}": _scalar(v) for k, v in dropout.items() if k not in _NOT_ARGS},
        **{f"model.{k}": _scalar(v) for k, v in model.items() if k != "_target_"},
    }


def _number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


class History(pl.Callback):
    """Records per-epoch validation metrics, training time and throughput for the summary.

    Attributes:
        epochs: one dict per validation epoch with ``epoch``, ``step``, ``val/acc``, ``val/loss`` and
            any ``train/*``, ``dropout/*`` and ``actvar/*`` metric logged so far.
        train_seconds: wall time spent in training batches (validation, test and the other callbacks'
            epoch-end logging excluded: train.py lists this callback first), seconds.
        train_samples: training samples processed.
        first_step_time: ``time.time()`` at the first training batch (for start-up latency).
    """

    PREFIXES = ("train", "val", "dropout", "actvar")

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self.train_samples = 0
        self.first_step_time: float | None = None
        self._t0: float | None = None
        self._pending: dict[str, float] = {}  # this epoch's validation metrics, kept for a checkpoint

    def state_dict(self) -> dict:
        """Saved in Lightning checkpoints, so a resumed run keeps the epochs before the kill."""
        return {"epochs": self.epochs, "train_seconds": self.train_seconds, "train_samples": self.train_samples,
                "first_step_time": self.first_step_time, "_pending": self._pending}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch > 0:
            self._snapshot(trainer, trainer.current_epoch - 1)
        self._t0 = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first_step_time is None:
            self.first_step_time = time.time()
        self.train_samples += len(batch[1])

    def _stop_clock(self) -> None:
        if self._t0 is not None:
            self.train_seconds += time.perf_counter() - self._t0
            self._t0 = None

    def on_validation_epoch_start(self, trainer, pl_module):
        if trainer.training:
            self._stop_clock()

    def on_validation_end(self, trainer, pl_module):
        # runs before ModelCheckpoint's save (Lightning orders checkpoint callbacks last)
        self._pending = self._metrics(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._stop_clock()

    def on_fit_end(self, trainer, pl_module):
        if not self.epochs or self.epochs[-1]["epoch"] < trainer.current_epoch - 1:
            self._snapshot(trainer, trainer.current_epoch - 1)

    def _snapshot(self, trainer: pl.Trainer, epoch: int) -> None:
        # taken after the epoch's hooks have all logged (Lightning calls callbacks before the module)
        self.epochs.append({"epoch": epoch, "step": trainer.global_step, **self._pending, **self._metrics(trainer)})
        self._pending = {}

    def _metrics(self, trainer: pl.Trainer) -> dict[str, float]:
        return {k: _number(v) for k, v in trainer.callback_metrics.items() if k.split("/")[0] in self.PREFIXES}


def method_info(node: DictConfig | dict) -> dict[str, Any] | None:
    """``{"p_meaning", "p_is_rate"}`` of the method a ``dropout`` node names (docs/methods/README.md),
    or None if its ``_target_`` cannot be imported (a job that failed on that is still summarised)."""
    try:
        cls = get_class(node["_target_"])
    except Exception:  # noqa: BLE001 - the job's own error is reported; the summary must still be written
        return None
    return {"p_meaning": cls.p_meaning, "p_is_rate": cls.p_is_rate}


def publish(tmp: str | Path, target: str | Path) -> None:
    """Give the finished temporary file ``tmp`` the mode a newly created file gets under the process umask
    (``tempfile`` creates it 600: a colleague's report could not read it) and rename it over ``target``
    atomically (``os.replace``)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, target)


def write_summary(path: Path, summary: dict[str, Any], name: str = SUMMARY_FILE) -> Path:
    """Write ``summary`` as JSON to ``path/<name>`` (``metrics.json``) atomically (write a temp file with a
    unique name in the same folder, then :func:`publish`: the umask's mode, renamed; two writers never share
    a temp file); NaN and infinities become null."""
    clean = json.loads(json.dumps(summary, default=str), parse_constant=lambda _: None)
    target = Path(path) / name
    with tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=f".{name}.", suffix=".tmp", delete=False) as tmp:
        tmp.write(json.dumps(clean, indent=2))
    publish(tmp.name, target)
    return target


def build_summary(cfg: DictConfig, status: str, history: History | None, metrics: dict[str, float], wall_seconds: float,
                  error: str | None = None, trace: str | None = None) -> dict[str, Any]:
    """The run summary written to ``metrics.json``.

    Fields: status (ok | failed | interrupted), error (one line: the root cause,
    :func:`~dropout_lab.errors.headline`), traceback (the whole chain), hparams (:func:`flat_hparams`; empty for a config it cannot
    convert, such as ``dropout.p=abc``), config (the resolved config),
    best_val_acc, final val/test metrics, ``drop_fraction`` and ``p_eq`` (means over all training
    steps and sites), ``method_info`` (:func:`method_info`), epochs, wall_seconds, train_seconds,
    train_samples_per_s, first_step_time and the per-epoch history. Accuracies are fractions in [0, 1].
    """
    epochs = history.epochs if history else []
    train_seconds = history.train_seconds if history else 0.0
    try:
        hparams = flat_hparams(cfg)
    except (TypeError, ValueError):  # a job refused for a bad value (dropout.p=abc): no hparams, the config as given
        hparams = {}
    return {
        "status": status,
        "error": error,
        "traceback": trace,
        "hparams": hparams,
        "metrics": metrics,
        "best_val_acc": metrics.get("val/acc_best"),
        "test_acc": metrics.get("test/acc"),
        "drop_fraction": metrics.get("dropout/drop_fraction"),
        "p_eq": metrics.get("dropout/p_eq"),
        "method_info": method_info(cfg.dropout),
        "epochs": len(epochs),
        "wall_seconds": wall_seconds,
        "train_seconds": train_seconds,
        "train_samples_per_s": (history.train_samples / train_seconds) if history and train_seconds > 0 else None,
        "first_step_time": history.first_step_time if history else None,
        "history": epochs,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
