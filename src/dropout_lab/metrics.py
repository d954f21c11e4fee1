"""Every metric a run logs, named once: the modules that log them, the summary, the HParams spec, the progress
bar, the checkpoints and the report all take their names from here."""

from __future__ import annotations

TRAIN_LOSS, TRAIN_ACC = "train/loss", "train/acc"
VAL_ACC, VAL_LOSS = "val/acc", "val/loss"
#: the best validation accuracy so far; ``hp_metric`` repeats it for TensorBoard's HParams tab
VAL_ACC_BEST, HP_METRIC = "val/acc_best", "hp_metric"
#: the realised drop fraction and equivalent Bernoulli rate, means over sites (per site: ``dropout/<site>/<stat>``)
DROPOUT, DROP_FRACTION, P_EQ = "dropout", "dropout/drop_fraction", "dropout/p_eq"
#: the test of the last epoch's network and of the best-validation epoch's network (``test_best/*``)
TEST, TEST_BEST = "test", "test_best"
#: what each test reports: accuracy, loss (NLL), expected calibration error, Brier score
TEST_SCORES = ("acc", "loss", "ece", "brier")
#: Monte-Carlo dropout test metrics (``eval.mc_samples`` > 0)
MC = ("test/mc_acc", "test/mc_nll", "test/mc_ece", "test/mc_brier")


def test(score: str, prefix: str = TEST) -> str:
    """``test/<score>`` (or ``test_best/<score>``): ``test("acc")`` -> ``"test/acc"``."""
    return f"{prefix}/{score}"


def variant(score: str, name: str, prefix: str = TEST) -> str:
    """A score of an evaluation variant (EDropout's full network): ``variant("acc", "full")`` -> ``"test/acc_full"``."""
    return f"{prefix}/{score}_{name}"
