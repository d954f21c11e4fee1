"""Common random numbers: one seed, independent random streams (docs/sweeps.md, "Replicates and pairing").

A replicate's ``seed`` fixes every source of randomness of a job, each from its own generator, so that
two methods run with the same seed share everything but their own masks (the variance-reduction
technique of simulation studies: Law & Kelton, "Simulation Modeling and Analysis", ch. 11;
../shared/comparison.md §2):

* ``dataset.split_seed`` (``${seed}`` by default): the training / validation subsets
  (:func:`dropout_lab.data.splits.stratified_prefix`);
* :data:`INIT`: torch's global generator while the network is built (its initial weights);
* :data:`ORDER`: the data module's own generator (batch order and augmentation of every epoch);
* :data:`METHOD`: torch's global generator from the moment the dropout method is attached (masks,
  populations, permutations), checkpointed with the run (:class:`dropout_lab.checkpoints.RNGState`).

Within one seed every method therefore starts from the same weights and sees the same batches in the same
order in every epoch, whatever its masks draw; ``none`` and a method that draws masks but changes nothing
train identically.
"""

from __future__ import annotations

import numpy as np

INIT, ORDER, METHOD = "init", "order", "method"
STREAMS = (INIT, ORDER, METHOD)


def stream_seed(seed: int, stream: str) -> int:
    """The seed of ``stream`` (one of :data:`STREAMS`) of replicate ``seed``: 32 bits of NumPy's
    ``SeedSequence([seed, index])`` (the range ``seed_everything`` accepts), so streams of one seed and
    equal streams of different seeds are statistically independent.

    Raises:
        ValueError: for an unknown stream.
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; one of {', '.join(STREAMS)}")
    return int(np.random.SeedSequence([int(seed), STREAMS.index(stream)]).generate_state(1, np.uint32)[0])
