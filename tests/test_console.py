"""A quiet console: a real CLI run prints its progress bar and one closing line, a multirun one line per job
and 'N ok, M failed' with the report command; Lightning's start-up notices never appear."""

from __future__ import annotations

import re

import pytest

from conftest import run_cli

#: 4 training batches an epoch, fewer than log_every_n_steps (50): Lightning's warning about it must not show
TINY = ["dataset.subset={train: 256, val: 128, test: 128}", "dataset.batch_size=64"]
#: what the console showed before, none of which may come back
NOISE = (
    "was configured",
    "litlogger",
    "LeafSpec",
    "srun",
    "GPU available",
    "TPU available",
    "Seed set",
    "Trainer.fit` stopped",
    "smaller than the logging interval",
)
CLOSING = (
    r"\[[^]]+\]\[dropout_lab\.train\]\[INFO\] - test/acc=0\.\d{4} val/acc_best=0\.\d{4}; summary in (\S+)/metrics\.json"
)


def lines(result) -> list[str]:
    """Non-blank console lines of stdout and stderr (a progress bar's redraws, split on carriage returns, count once)."""
    text = (result.stdout + result.stderr).replace("\r", "\n")
    return list(dict.fromkeys(line.rstrip() for line in text.splitlines() if line.strip()))


@pytest.mark.slow
def test_single_run_prints_bar_and_one_closing_line(tmp_path):
    result = run_cli(["trainer.max_epochs=2", *TINY, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = lines(result)
    assert not [line for line in shown if any(noise in line for noise in NOISE)], shown
    closing = [line for line in shown if re.fullmatch(CLOSING, line)]
    assert len(closing) == 1 and re.fullmatch(CLOSING, closing[0]).group(1) == str(tmp_path / "run"), shown
    bar = [line for line in shown if line not in closing]
    # everything else is the tqdm bar (its redraws split on carriage returns): training, validation and test
    assert all(re.match(r"(Training|Epoch \d+|Validation|Testing)\b|\s*(\x1b\[A)?$", line) for line in bar), shown
    assert any(line.startswith("Epoch 1:") for line in bar) and any(line.startswith("Testing") for line in bar), shown
    assert "train/loss=" in " ".join(bar) and "val/acc=" in " ".join(bar), shown


@pytest.mark.slow
def test_multirun_prints_a_line_per_job_and_the_tally(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", "dropout.p=0.2,1.5", "trainer=smoke", *TINY, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode != 0  # the p=1.5 job fails
    out = [line for line in result.stdout.splitlines() if line.strip()]
    assert re.search(r"\[HYDRA\] sweep of 2 jobs prepared in \d+\.\d s$", out[0]), out
    assert re.search(r"\[HYDRA\] Launching 2 jobs locally$", out[1]), out
    assert len([line for line in out if re.search(r"\[HYDRA\] \t#\d : dropout\.p=", line)]) == 2, out
    progress = [line for line in out if "dropout_lab.progress" in line]
    assert [line.split(" - ")[1].split(";")[0] for line in progress] == [
        "[1/2] 1 ok, 0 failed, 1 left",
        "[2/2] 1 ok, 1 failed, 0 left",
    ]
    assert len([line for line in out if re.fullmatch(CLOSING, line)]) == 1, out
    assert out[-1].startswith("1 ok, 1 failed; resume: python ") and "resume=true" in out[-1], out
    assert out[-1].endswith(f" hydra.sweep.dir={sweep}; report: python scripts/report.py {sweep}"), out
    assert len(out) == 9, out  # + the jobs' result / error lines
    assert not [line for line in lines(result) if any(noise in line for noise in NOISE)]


@pytest.mark.slow
def test_the_progress_bar_draws_every_epoch_of_a_short_epoch_run(tmp_path):
    """16-batch epochs (a flagship job's) with the bar's refresh_rate of 50 batches: each epoch still draws
    its complete bar (tqdm redraws at an epoch's last batch)."""
    result = run_cli(
        [
            f"hydra.run.dir={tmp_path / 'run'}",
            "dataset.subset={train: 1000, val: 200, test: 200}",
            "dataset.batch_size=64",
            "trainer.max_epochs=3",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    drawn = {line.split(":")[0] for line in lines(result) if re.match(r"Epoch \d: 100%\|.*\| 16/16", line)}
    assert drawn == {"Epoch 0", "Epoch 1", "Epoch 2"}, lines(result)
