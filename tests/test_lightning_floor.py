"""scripts/benchlib.py's Lightning floor (the flagship benchmark's fourth run) does the bare loop's work."""

from benchlib import bare_loop, lightning_floor

from bench_harness import FLAGSHIP


def test_lightning_floor_trains_validates_and_tests_as_the_bare_loop(cfg_factory):
    """Same seed, batches and fused Adam: the barebones Trainer's last weights test to the bare loop's accuracy after
    the same 2 epochs, and its best-validation weights are one of the two epochs' (each tested by a bare loop of 1 and
    of 2 epochs), so the floor's time is the same arithmetic's time."""
    cfg = cfg_factory([*FLAGSHIP, "dataset.subset={train: 1000, val: 500, test: 1000}"])
    after = {n: bare_loop(cfg, n, validate=True, test_best=True)[1] for n in (1, 2)}
    last, best = lightning_floor(cfg, 2)
    assert last == after[2]
    assert best in after.values()
