"""The lean training step (issue 12): no host sync inside it, torch's fused optimizer kernels, one
parameter group without weight decay, and epoch metrics summed on the device equal to the plain ones."""

import sys
from functools import partial

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from pytorch_lightning.profilers import PassThroughProfiler

from dropout_lab.models import LeNet5
from dropout_lab.module import Classifier, fast_kwargs, param_groups
from dropout_lab.profilers import NullProfiler, trainer_profiler

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


def python_calls(run) -> int:
    """Python-level function calls (``sys.setprofile`` "call" events) made by ``run()``, the lambda excluded."""
    calls = 0

    def tracer(frame, event, arg):
        nonlocal calls
        calls += event == "call"

    sys.setprofile(tracer)
    try:
        run()
    finally:
        sys.setprofile(None)
    return calls - 1


def test_lightning_hook_name_is_stored_without_module_bookkeeping():
    module = classifier()
    # nn.Module.__setattr__ runs Parameter's and Buffer's Python __instancecheck__: 5 calls instead of 1
    assert python_calls(lambda: setattr(module, "_current_fx_name", "training_step")) == 1
    assert module._current_fx_name == "training_step" and "_current_fx_name" not in module._modules
    module.head = torch.nn.Linear(2, 2)  # every other attribute still goes through nn.Module
    assert module._modules["head"] is module.head


def test_default_profiler_enters_no_generator_and_a_configured_one_stands():
    profiler = trainer_profiler(OmegaConf.create({"max_epochs": 1}))
    assert isinstance(profiler, NullProfiler)

    def hook(profiler):
        return lambda: profiler.profile("[Callback]History.on_train_batch_start").__enter__()

    # profile and nullcontext.__enter__; Lightning's PassThroughProfiler: 7 (profile, contextlib's helper,
    # __init__ and __enter__, the generator, start, ...)
    assert python_calls(hook(profiler)) == 2
    assert python_calls(hook(PassThroughProfiler())) == 7
    assert trainer_profiler(OmegaConf.create({"profiler": "simple"})) == "simple"
