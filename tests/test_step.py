"""The lean training step: no host sync inside it, torch's fused optimizer kernels, one
parameter group without weight decay, and epoch metrics summed on the device equal to the plain ones."""

from functools import partial

import torch
import torch.nn.functional as F

from dropout_lab.models import LeNet5
from dropout_lab.module import Classifier, fast_kwargs, param_groups

SYNC = "aten::_local_scalar_dense"  # what .item() / bool(tensor) dispatch to: a host sync on a GPU


def classifier() -> Classifier:
    torch.manual_seed(0)
    return Classifier(LeNet5(), partial(torch.optim.Adam, lr=1e-3), None, num_classes=10, dataset_size=64)


def test_training_step_synchronises_nothing_and_sums_on_the_device():
    module = classifier()
    batches = [(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))) for _ in range(3)]
    with torch.profiler.profile() as prof:
        losses = [module.training_step(batch, i) for i, batch in enumerate(batches)]
    assert sum(e.name == SYNC for e in prof.events()) == 0
    assert module.train_samples == 48
    torch.testing.assert_close(module.train_loss_sum, 16 * torch.stack(losses).detach().sum())
    assert 0 <= module.train_correct.item() <= 48 and module.train_correct.dtype == torch.long


def test_epoch_accuracy_is_the_fraction_of_correct_training_predictions():
    module = classifier().eval()  # eval: dropout is identity, so the step's logits are reproducible
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    module.training_step((x, y), 0)
    with torch.no_grad():
        logits = module.model(x)
    assert module.train_correct.item() == (logits.argmax(1) == y).sum().item()
    torch.testing.assert_close(module.train_loss_sum / 32, F.cross_entropy(logits, y))


def test_fused_kernels_where_torch_has_them():
    cpu = torch.device("cpu")
    assert fast_kwargs(partial(torch.optim.Adam, lr=1e-3), cpu) == {"fused": True}
    assert fast_kwargs(partial(torch.optim.SGD, lr=0.1), cpu) == {"fused": True}
    assert fast_kwargs(partial(torch.optim.Adadelta, lr=1.0), cpu) == {}  # no fused kernel, no CPU foreach kernel
    assert fast_kwargs(partial(torch.optim.Adam, lr=1e-3, foreach=False), cpu) == {}  # the user's choice stands
    optimizer = classifier().configure_optimizers()
    assert all(group["fused"] for group in optimizer.param_groups)


def test_one_parameter_group_without_weight_decay():
    model = LeNet5()
    assert len(param_groups(model, 0.0)) == 1 and len(param_groups(model, 1e-4)) == 2
    assert sum(len(g["params"]) for g in param_groups(model, 1e-4)) == len(list(model.parameters()))
