"""l2_dynamic: scores are the L2 norms of the incoming weights (docs/methods/l2_dynamic.md)."""

from __future__ import annotations

import pytest
import torch

from scored_nets import batch, install


def test_l2_larger_incoming_weights_larger_score():
    net, m = install("l2_dynamic")
    net.train()(batch()[0])
    assert torch.allclose(m.score, net.fc1.weight.norm(dim=1))
    assert int(m.score.argmax()) == 5 and float(m.rates[5]) == pytest.approx(m.lo)
