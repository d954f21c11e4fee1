"""DropConnect (Wan et al. 2013): weight masks inside autograd, one per example by default at bounded
memory, the logits layer unmasked, Algorithm 2 inference at the activation that follows each layer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import make_cfg
from dropout_lab.config import attach
from dropout_lab.dropout.dropconnect import DropConnect, dropconnect_linear
from dropout_lab.dropout.sites import Site
from dropout_lab.models import AlexNet, LeNet5
from dropout_lab.models.resnet import resnet18
from layer_helpers import P, spec
from tolerance import binomial_tol, mean_tol


def dropconnect(in_features=64, out_features=32, **kw) -> tuple[DropConnect, nn.Linear]:
    linear = nn.Linear(in_features, out_features)
    return DropConnect.spec.build(spec(num_features=in_features, next=linear), p=P, **kw), linear


def test_dropconnect_masks_weights_not_activations():
    """Site activations pass unchanged; the Linear's weights are masked inside autograd, so only kept
    weights get gradient, and the output is F.linear with the masked, rescaled weights."""
    torch.manual_seed(0)
    method, linear = dropconnect(per_sample=False)
    method.train()
    x = torch.ones(16, 64)
    assert method(x) is x
    w0 = linear.weight.detach().clone()
    out = linear(method(x))
    out.sum().backward()
    assert torch.equal(linear.weight.detach(), w0)  # the parameter is never overwritten
    kept = linear.weight.grad != 0
    n = kept.numel()
    assert abs((~kept).float().mean().item() - P) < binomial_tol(P, n)
    assert torch.allclose(linear.weight.grad[kept], torch.full((int(kept.sum()),), 16 / (1 - P)))
    assert torch.allclose(out, F.linear(x, w0 * kept / (1 - P), linear.bias.detach()), atol=1e-5)
    assert method.stats()["drop_fraction"] == pytest.approx((~kept).float().mean().item())
    assert torch.all(out == out[:1])  # per_sample=false: one mask for all samples


def test_dropconnect_per_sample_masks_are_unbiased():
    """Paper form: one mask per example; E[u] = W v + b over examples."""
    torch.manual_seed(0)
    method, linear = dropconnect(per_sample=True)
    method.train()
    nn.init.ones_(linear.weight), nn.init.zeros_(linear.bias)
    out = linear(torch.ones(512, 64))
    assert not torch.all(out == out[:1])
    # out_i = sum_j m_ij / q: mean 64, std sqrt(64 p / q), i.i.d. over 512 x 32 (sample, unit) pairs
    assert abs(out.mean().item() - 64) < mean_tol(math.sqrt(64 * P / (1 - P)), out.numel())
    assert abs(method.stats()["drop_fraction"] - P) < binomial_tol(P, 512 * 32 * 64)


class Net(nn.Module):
    """site -> hidden Linear -> activation -> site -> logits Linear, with ``Site`` declarations."""

    def __init__(self, activation: nn.Module) -> None:
        super().__init__()
        self.site1, self.hidden, self.act = Site("fc", 16, next="hidden"), nn.Linear(16, 8), activation
        self.site2, self.logits = Site("fc", 8, prev="hidden", next="logits"), nn.Linear(8, 3)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.logits(self.site2(self.act(self.hidden(self.site1(v)))))


def net_with(activation: nn.Module = nn.ReLU(), **kw) -> tuple[Net, list[DropConnect]]:
    torch.manual_seed(0)
    net = Net(activation)
    methods = attach(
        net,
        {
            "_target_": "dropout_lab.dropout.dropconnect.DropConnect",
            "_partial_": True,
            "name": "dropconnect",
            "p": P,
            "sites": "fc",
            **kw,
        },
    )
    return net, methods


def moments(v: torch.Tensor, linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    mu = F.linear(v, linear.weight, linear.bias)
    return mu, (F.linear(v * v, linear.weight**2) * P / (1 - P)).sqrt()


@pytest.mark.parametrize("activation", [nn.ReLU(), nn.ReLU(inplace=True), nn.Sigmoid()])
def test_dropconnect_gaussian_inference_at_the_following_activation(activation):
    """Eval with inference=gaussian: the activation that follows the masked layer outputs E[a(u)],
    u ~ N(mu, sigma^2), mu = W v + b, sigma^2 = p/(1-p) (W*W)(v*v) (Wan et al. Algorithm 2): the
    closed form for ReLU, a 1-D quadrature for the sigmoid. Defect 2(c): the old code applied one
    configured ReLU whatever the model's activation (wrong for the sigmoid)."""
    net, _ = net_with(activation, inference="gaussian", inference_samples=20000)
    net.eval()
    v = torch.randn(4, 16)
    with torch.no_grad():
        hidden = []
        net.act.register_forward_hook(lambda m, a, out: hidden.append(out.clone()))
        net(v)
        mu, sigma = moments(v, net.hidden)
        z = torch.linspace(-8, 8, 4001)
        weights = torch.distributions.Normal(0.0, 1.0).log_prob(z).exp() * (z[1] - z[0])
        expected = (torch.sigmoid(mu[..., None] + sigma[..., None] * z) * weights).sum(-1)
        if isinstance(activation, nn.ReLU):
            normal = torch.distributions.Normal(0.0, 1.0)
            expected = mu * normal.cdf(mu / sigma) + sigma * normal.log_prob(mu / sigma).exp()
        assert torch.all((hidden[0] - expected).abs() < mean_tol(1.0, 20000) * sigma)


def test_dropconnect_gaussian_inference_leaves_logits_linear():
    """Defect 2(c): with mask_logits the logits layer is masked, and its gaussian inference is the
    mean E[u] = W v + b (no activation follows it), so logits can be negative (the old code applied
    ReLU to them: every eval logit was >= 0)."""
    net, methods = net_with(inference="gaussian", inference_samples=64, mask_logits=True)
    assert len(methods) == 2
    v = torch.randn(64, 16)
    hidden = []
    net.act.register_forward_hook(lambda m, a, o: hidden.append(o))
    with torch.no_grad():
        out = net.eval()(v)
        assert (
            torch.allclose(out, F.linear(hidden[0], net.logits.weight, net.logits.bias), atol=1e-5) and (out < 0).any()
        )


def test_dropconnect_mean_inference_is_the_plain_network():
    net, _ = net_with(inference="mean")
    net.eval()
    v = torch.randn(4, 16)
    with torch.no_grad():
        expected = net.logits(net.act(net.hidden(v)))
        assert torch.equal(net.eval()(v), expected)


def test_dropconnect_default_is_per_example_and_skips_the_logits_layer():
    """Defect 2(a, b): by default each example gets its own weight mask (identical inputs give
    different outputs), and the logits layer is not masked (one method, at the hidden layer)."""
    net, methods = net_with()
    assert [m.site.name for m in methods] == ["site1"] and methods[0].per_sample
    net.train()
    v = torch.ones(32, 16)
    hidden = []
    net.act.register_forward_hook(lambda m, a, o: hidden.append(o))
    net(v)
    assert not torch.all(hidden[0] == hidden[0][:1])
    assert not net.logits._forward_hooks  # the logits layer is untouched


def test_dropconnect_refuses_sites_that_only_feed_the_logits():
    with pytest.raises(ValueError, match=r"(?s)dropout.sites.*dropout.mask_logits=true"):
        attach(resnet18(), make_cfg(["dropout=dropconnect"], "unused").dropout)  # ResNet's only fc site feeds fc
    lenet = LeNet5()
    assert [m.site.name for m in attach(lenet, make_cfg(["dropout=dropconnect"], "unused").dropout)] == ["drop_fc1"]


def test_dropconnect_one_mask_per_masked_layer_on_alexnet():
    """Defect 2(d): with sites=all on AlexNet, drop_features and classifier.0 both feed classifier.1:
    one method (one hook, one mask) per masked layer, and classifier.6 (logits) unmasked."""
    model = AlexNet(num_classes=10, image_size=63)
    methods = attach(model, make_cfg(["dropout=dropconnect", "dropout.sites=all"], "unused").dropout)
    assert [m.site.next for m in methods] == [model.classifier[1], model.classifier[4]]
    assert len(model.classifier[1]._forward_hooks) == 1 and not model.classifier[6]._forward_hooks


def test_dropconnect_chunks_redraw_the_same_masks_in_backward():
    """Per-example masks in chunks of max_mask_elements: the backward pass recomputes each chunk with
    the same masks (RNG restored), so with W = 1 and v = 1 the gradients equal the kept counts of the
    forward: sum_i dL/dv_ni = sum_o u_no and sum(dL/dW) = sum(u) (L = sum u)."""
    torch.manual_seed(0)
    v, weight = torch.ones(10, 16, requires_grad=True), torch.ones(8, 16, requires_grad=True)
    out, fraction = dropconnect_linear(v, weight, None, P, per_sample=True, max_mask_elements=3 * 8 * 16)
    out.sum().backward()
    keep = 1 - P
    assert torch.allclose(v.grad.sum(1), out.detach().sum(1)) and weight.grad.sum().item() == pytest.approx(
        out.sum().item(), rel=1e-5
    )
    assert fraction.item() == pytest.approx(1 - out.sum().item() * keep / (10 * 8 * 16), abs=1e-6)
    assert not torch.all(out == out[:1])


def test_dropconnect_chunked_memory_is_bounded():
    """Autograd keeps O(max_mask_elements) for the per-example masks whatever the batch: counting the
    elements saved for backward, a batch of 64 in chunks of 4 examples saves no mask-sized tensor (the
    checkpointed chunks are recomputed), while one chunk of 64 saves 64 x out x in twice."""
    v, weight = torch.randn(64, 32), torch.randn(16, 32, requires_grad=True)

    def saved(max_mask_elements: int) -> int:
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            dropconnect_linear(v, weight, None, P, per_sample=True, max_mask_elements=max_mask_elements)
        return max(sizes)

    assert saved(64 * 16 * 32) >= 64 * 16 * 32
    assert saved(4 * 16 * 32) < 4 * 16 * 32


def test_dropconnect_needs_a_following_linear():
    with pytest.raises(ValueError, match="dropout.sites=fc"):
        DropConnect.spec.build(spec("conv", 6, next=nn.Conv2d(6, 16, 5)), p=P)
    with pytest.raises(ValueError, match="followed by nothing"):
        DropConnect.spec.build(spec(), p=P)
    with pytest.raises(ValueError, match="dropout.inference"):
        dropconnect(inference="sample")
