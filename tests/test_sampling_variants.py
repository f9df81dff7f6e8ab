"""Variants of sampling-argmax from the authors' public code and beyond: the Gumbel form, the clipped
integral, the official τ schedule, sampling + JS and a learned per-point bandwidth."""
import math

import pytest
import torch
from torch.func import functional_call

from pckeypoints.core.argmax import clipped_weighted_sum, sampling_argmax, soft_argmax
from pckeypoints.core.basis import PointBasis
from pckeypoints.core.head import KeypointHead
from pckeypoints.core.losses import KeypointLoss, expectation_of_error, js_regularization
from pckeypoints.core.schedules import make_schedule

D = torch.float64


def naive_by_hand(logits, basis, num_samples, tau, seed, form):
    """The naive sampler's draws replayed from its generator (Gumbel noise first, then the basis noise):
    weights (B, K, Ns, N) as a function of ``logits`` and the shifted points z_i = y_i + ε_i h_i."""
    b, k, n = logits.shape
    g = torch.Generator().manual_seed(seed)
    gumbel = -torch.rand((b, k, num_samples, n), dtype=logits.dtype, generator=g).log().neg().log()
    noise = basis.unit_noise((b, k, num_samples, n, basis.dim), g)
    l = logits[:, :, None]
    weights = ((l + gumbel) / tau if form == "paper" else l + gumbel / tau).softmax(-1)
    return weights, basis.pos[:, None, None] + noise * basis.bandwidth[:, None, None]


@pytest.mark.parametrize("form", ["paper", "official"])
def test_gumbel_forms_by_hand(form):
    basis = PointBasis.grid((5,), spacing=0.5, kind="triangular", dtype=D)
    logits = torch.tensor([[[0.3, -1.0, 2.0, 0.5, 0.0]]], dtype=D)
    samples = sampling_argmax(logits, basis, 6, 0.4, generator=torch.Generator().manual_seed(4), sampler="naive", gumbel=form)
    weights, z = naive_by_hand(logits, basis, 6, 0.4, 4, form)
    torch.testing.assert_close(samples, (weights[..., None] * z).sum(-2))


@pytest.mark.parametrize("sampler", ["naive", "gaussian", "fused"])
def test_official_form_is_the_paper_form_over_tau_times_the_logits(sampler):
    g = torch.Generator().manual_seed(1)
    basis = PointBasis.from_points(torch.rand(2, 20, 3, dtype=D, generator=g), k=3)
    logits = torch.randn(2, 3, 20, dtype=D, generator=g, requires_grad=True)
    run = lambda l, form: sampling_argmax(l, basis, 5, 0.3, generator=torch.Generator().manual_seed(2), sampler=sampler, gumbel=form)
    official = run(logits, "official")
    torch.testing.assert_close(official, run(0.3 * logits, "paper"))
    assert not torch.allclose(official, run(logits, "paper"))
    assert torch.autograd.gradcheck(lambda l: run(l, "official"), (logits,))


def test_clipped_weighted_sum_by_hand():
    w = torch.tensor([0.2, 0.3, 0.5], dtype=D, requires_grad=True)
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0]], dtype=D, requires_grad=True)
    y = clipped_weighted_sum(w, x, torch.tensor(2.0, dtype=D))
    torch.testing.assert_close(y, torch.tensor([1.8, 1.1], dtype=D))
    y.backward(torch.tensor([1.0, -2.0], dtype=D))
    # signs of x - y: axis 0 (-, -, +), axis 1 (-, +, -); dL/dw_i = Σ_d 2 · sign · grad_d
    torch.testing.assert_close(w.grad, torch.tensor([2.0 * -1 + 2.0 * 2, 2.0 * -1 - 2.0 * 2, 2.0 + 2.0 * 2], dtype=D))
    torch.testing.assert_close(x.grad, torch.tensor([[0.2, -0.4], [0.3, -0.6], [0.5, -1.0]], dtype=D))
    # a point exactly at the estimate counts as above it (+), per-point amplitudes scale each row
    w = torch.tensor([0.25, 0.5, 0.25], dtype=D, requires_grad=True)
    clipped_weighted_sum(w, torch.tensor([[0.0], [1.0], [2.0]], dtype=D), torch.tensor([[1.0], [2.0], [3.0]], dtype=D)
                         ).backward(torch.ones(1, dtype=D))
    assert w.grad.tolist() == [-1.0, 2.0, 3.0]


def test_clipped_soft_argmax_gradient_by_hand():
    basis = PointBasis.grid((4,), spacing=2.0, kind="uniform")  # points 0, 2, 4, 6; amplitude 2 · 2 = 4
    logits = torch.tensor([[[0.0, 1.0, 0.5, -1.0]]], requires_grad=True)
    y = soft_argmax(logits, basis, clipped=True)
    torch.testing.assert_close(y, soft_argmax(logits, basis))
    y.backward(torch.tensor([[[0.5]]]))
    p = logits.detach().softmax(-1)[0, 0]
    c = 4.0 * 0.5 * torch.where(basis.pos[0, :, 0] >= y.detach()[0, 0, 0], 1.0, -1.0)
    torch.testing.assert_close(logits.grad[0, 0], p * (c - (p * c).sum()))


def test_clipped_sampling_gradient_by_hand():
    basis = PointBasis.grid((3, 4), spacing=1.5, kind="gaussian", dtype=D)
    logits = torch.randn(2, 2, 12, dtype=D, generator=torch.Generator().manual_seed(0), requires_grad=True)
    grad = torch.randn(2, 2, 5, 2, dtype=D, generator=torch.Generator().manual_seed(1))
    samples = sampling_argmax(logits, basis, 5, 0.7, generator=torch.Generator().manual_seed(3), sampler="naive", clipped=True)
    weights, z = naive_by_hand(logits, basis, 5, 0.7, 3, "paper")
    y = (weights[..., None] * z).sum(-2)
    torch.testing.assert_close(samples, y)
    (got,) = torch.autograd.grad(samples, logits, grad)
    rule = (2 * 1.5 * torch.where(z >= y[..., None, :].detach(), 1.0, -1.0) * grad[..., None, :]).sum(-1)
    (want,) = torch.autograd.grad(weights, logits, rule)
    torch.testing.assert_close(got, want)
    plain = sampling_argmax(logits, basis, 5, 0.7, generator=torch.Generator().manual_seed(3), sampler="naive")
    (plain,) = torch.autograd.grad(plain, logits, grad)
    assert not torch.allclose(got, plain)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(clipped=True, sampler="gaussian"), "clipped-integral gradient needs the 'naive' or 'fused' sampler"),
        (dict(gumbel="authors"), "gumbel must be one of"),
    ],
)
def test_sampler_variant_errors(kwargs, match):
    basis = PointBasis.from_points(torch.rand(1, 12, 3), k=3)
    with pytest.raises(ValueError, match=match):
        sampling_argmax(torch.randn(1, 2, 12), basis, 3, 1.0, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="sampling", clipped_integral=True, sampler="gaussian"), "needs the 'naive' or 'fused' sampler"),
        (dict(method="discrete", clipped_integral=True), "not 'discrete'"),
        (dict(method="soft+js", gumbel="official"), "gumbel applies to the sampling methods"),
        (dict(method="sampling", gumbel="x"), "gumbel must be one of"),
        (dict(method="sampling", sampler="fast"), "sampler must be one of"),  # issue 31: was caught in forward only
    ],
)
def test_keypoint_loss_variant_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KeypointLoss(**kwargs)


def test_sampling_plus_js_is_the_sum_of_its_terms():
    g = torch.Generator().manual_seed(5)
    basis = PointBasis.from_points(torch.rand(2, 10, 3, dtype=D, generator=g), k=3)
    logits = torch.randn(2, 3, 10, dtype=D, generator=g, requires_grad=True)
    target, mask = torch.rand(2, 3, 3, dtype=D, generator=g), torch.tensor([[True, True, False], [True, True, True]])
    loss = KeypointLoss("sampling+js", metric="l2", num_samples=4, reg_weight=0.7, target_sigma=0.2, sampler="naive")
    run = lambda l: loss(l, target, mask, basis=basis, generator=torch.Generator().manual_seed(1), tau=0.5)
    samples = sampling_argmax(logits, basis, 4, 0.5, generator=torch.Generator().manual_seed(1), sampler="naive")
    want = expectation_of_error(samples, target, mask, metric="l2") + 0.7 * js_regularization(logits, basis, target, 0.2, mask)
    torch.testing.assert_close(run(logits), want)
    assert torch.autograd.gradcheck(run, (logits,))
    assert "method='sampling+js'" in repr(loss) and "reg_weight=0.7" in repr(loss)


def test_official_schedule_is_linear_two_to_half_over_25_epochs():
    schedule = make_schedule("linear", 2.0, 0.5, epochs=26)  # epoch 0 at 2, epoch 25 and after at 0.5
    for epoch in range(60):
        assert schedule.value == pytest.approx(max(0.5, 2 - 3 * epoch / 50)), epoch
        schedule.step()


def learned_sigma_problem():
    g = torch.Generator().manual_seed(3)
    head = KeypointHead(6, 2, hidden_channels=8, knn_k=3, learn_sigma=True).double()
    with torch.no_grad():
        head.sigma_head.weight.normal_(0, 0.5, generator=g)
    x, pos = torch.randn(2, 15, 6, dtype=D, generator=g), torch.rand(2, 15, 3, dtype=D, generator=g)
    return head, x, pos, torch.rand(2, 2, 3, dtype=D, generator=g)


def test_learned_sigma_starts_at_the_knn_sigma_and_scales_it_per_point():
    head, x, pos, _ = learned_sigma_problem()
    knn = PointBasis.from_points(pos, k=3).bandwidth
    head.reset_parameters()
    torch.testing.assert_close(head(x, pos).basis.bandwidth, knn)
    with torch.no_grad():
        head.sigma_head.weight.fill_(0.1)
    factor = torch.nn.functional.softplus(x @ torch.full((6, 1), 0.1, dtype=D) + math.log(math.e - 1))
    torch.testing.assert_close(head(x, pos).basis.bandwidth, knn * factor)
    # ragged clouds: the same σ per point
    ragged = head(x.reshape(30, 6), pos.reshape(30, 3), torch.arange(2).repeat_interleave(15)).to_dense()
    torch.testing.assert_close(ragged.basis.bandwidth, knn * factor)


@pytest.mark.parametrize("sampler", ["naive", "gaussian", "fused"])
def test_learned_sigma_gradient_matches_finite_differences(sampler):
    head, x, pos, target = learned_sigma_problem()
    loss = KeypointLoss("sampling", metric="l2", num_samples=5, sampler=sampler)

    def f(weight, bias):
        maps = functional_call(head, {"sigma_head.weight": weight, "sigma_head.bias": bias}, (x, pos))
        return loss(maps, target, generator=torch.Generator().manual_seed(0), tau=0.5)

    params = (head.sigma_head.weight.detach().requires_grad_(), head.sigma_head.bias.detach().requires_grad_())
    assert torch.autograd.gradcheck(f, params)
    assert params[0].grad is None and torch.autograd.grad(f(*params), params[0])[0].abs().sum() > 0


def test_learned_sigma_needs_in_channels():
    with pytest.raises(ValueError, match="learn_sigma needs in_channels"):
        KeypointHead(None, 3, mlp=torch.nn.Linear(4, 3), learn_sigma=True)
