import pytest
import torch

from pckeypoints.core.argmax import sampling_argmax, soft_argmax
from pckeypoints.core.basis import PointBasis


def mixture_moments(probs, basis):
    """Mean (B, K, D) and per-axis variance of the mixture Σ π_i f_i."""
    b = probs.shape[0]
    pos = basis.pos.double().expand(b, -1, -1)
    var = basis.variance.double().expand(b, -1, -1)
    mean = probs.double() @ pos
    return mean, probs.double() @ (pos.square() + var) - mean.square()


def cloud_basis(seed=0, b=2, n=12):
    g = torch.Generator().manual_seed(seed)
    return PointBasis.from_points(torch.rand(b, n, 3, generator=g), k=3)


def test_soft_argmax_is_the_expectation():
    basis = cloud_basis()
    logits = torch.randn(2, 4, 12, generator=torch.Generator().manual_seed(1))
    probs = logits.softmax(-1)
    expected = torch.stack([sum(probs[b, :, i, None] * basis.pos[b, i] for i in range(12)) for b in range(2)])
    assert torch.allclose(soft_argmax(logits, basis), expected, atol=1e-6)


def test_soft_argmax_ignores_padding_of_ragged_clouds():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(10, 2, generator=g), torch.rand(6, 2, generator=g)
    ragged = PointBasis.from_points(torch.cat([a, b]), torch.tensor([0] * 10 + [1] * 6), k=3)
    logits = torch.randn(2, 3, 10, generator=g)
    out = soft_argmax(logits, ragged)
    assert torch.allclose(out[1], logits[1, :, :6].softmax(-1) @ b, atol=1e-6)


BASES = {
    "uniform grid": lambda: PointBasis.grid((7,), spacing=0.5, kind="uniform"),
    "triangular grid": lambda: PointBasis.grid((7,), spacing=0.5, kind="triangular"),
    "gaussian grid": lambda: PointBasis.grid((3, 4), spacing=1.0, kind="gaussian"),
    "cloud": lambda: cloud_basis(3, b=1, n=10),
}


@pytest.mark.parametrize(
    "name, sampler",
    [("uniform grid", "naive"), ("triangular grid", "naive"), ("gaussian grid", "naive"), ("gaussian grid", "gaussian"),
     ("gaussian grid", "fused"), ("cloud", "naive"), ("cloud", "gaussian"), ("cloud", "fused")],
)
def test_low_temperature_samples_have_the_mixture_moments(name, sampler):
    basis = BASES[name]()
    torch.manual_seed(0)
    n = basis.num_points
    logits = torch.randn(1, 2, n) * 1.5
    samples = sampling_argmax(logits, basis, 20000, tau=1e-4, generator=torch.Generator().manual_seed(5), sampler=sampler)
    mean, var = mixture_moments(logits.softmax(-1), basis)
    m, v = samples.double().mean(2), samples.double().var(2)
    se = (var / samples.shape[2]).sqrt()
    assert ((m - mean).abs() < 5 * se).all(), (m, mean)
    assert torch.allclose(v, var, rtol=0.06), (v, var)


@pytest.mark.parametrize("sampler", ["gaussian", "fused"])
def test_gaussian_samplers_match_naive_in_mean_and_variance(sampler):
    basis = cloud_basis(4, b=1, n=16)
    logits = torch.randn(1, 3, 16, generator=torch.Generator().manual_seed(6))
    kw = dict(num_samples=40000, tau=0.7)
    naive = sampling_argmax(logits, basis, generator=torch.Generator().manual_seed(1), sampler="naive", **kw).double()
    fast = sampling_argmax(logits, basis, generator=torch.Generator().manual_seed(2), sampler=sampler, **kw).double()
    se = (naive.var(2) / kw["num_samples"]).sqrt()
    assert ((naive.mean(2) - fast.mean(2)).abs() < 5 * 2**0.5 * se).all()
    assert torch.allclose(naive.var(2), fast.var(2), rtol=0.05)


def test_low_memory_sampler_is_chunk_invariant_and_reproducible():
    basis = cloud_basis(5)
    logits = torch.randn(2, 3, 12)
    run = lambda c: sampling_argmax(logits, basis, 7, 0.5, generator=torch.Generator().manual_seed(9), sampler="gaussian", chunk_size=c)
    assert torch.allclose(run(7), run(7))
    # One chunk or chunks of 3: the same noise in the same order.
    assert torch.allclose(run(7), run(3), atol=1e-6)


@pytest.mark.parametrize("sampler", ["naive", "gaussian", "fused"])
def test_sampler_gradients_pass_gradcheck(sampler):
    g = torch.Generator().manual_seed(7)
    pos = torch.rand(2, 6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    scale = (0.05 + 0.1 * torch.rand(2, 6, 1, dtype=torch.float64, generator=g)).requires_grad_()
    logits = torch.randn(2, 3, 6, dtype=torch.float64, generator=g, requires_grad=True)

    def f(logits, pos, scale):
        basis = PointBasis(pos, scale)
        return sampling_argmax(logits, basis, 5, 0.8, generator=torch.Generator().manual_seed(3), sampler=sampler, chunk_size=2)

    assert torch.autograd.gradcheck(f, (logits, pos, scale))


@pytest.mark.parametrize("sampler", ["naive", "gaussian", "fused"])
@pytest.mark.parametrize("tau", [1e-45, 1e-300])
def test_tiny_temperature_gives_finite_samples_and_gradients(sampler, tau):
    basis = cloud_basis(6, b=2, n=30)
    logits = torch.randn(2, 3, 30, generator=torch.Generator().manual_seed(2), requires_grad=True)
    samples = sampling_argmax(logits, basis, 4, tau, generator=torch.Generator().manual_seed(3), sampler=sampler)
    samples.sum().backward()
    assert torch.isfinite(samples).all() and torch.isfinite(logits.grad).all()
    # one-hot weights: every sample lies within a few σ of one of the points
    nearest = (samples[..., None, :] - basis.pos[:, None, None]).norm(dim=-1).amin(-1)  # (B, K, Ns)
    assert (nearest < 6 * basis.bandwidth.max() * 3**0.5).all()


def test_low_memory_gradient_with_padding():
    g = torch.Generator().manual_seed(8)
    pos = torch.rand(9, 2, dtype=torch.float64, generator=g)
    batch = torch.tensor([0] * 5 + [1] * 4)
    basis = PointBasis.from_points(pos, batch, k=2)
    logits = torch.randn(2, 2, 5, dtype=torch.float64, generator=g, requires_grad=True)
    f = lambda l: sampling_argmax(l, basis, 4, 0.5, generator=torch.Generator().manual_seed(1), sampler="gaussian", chunk_size=3)
    assert torch.autograd.gradcheck(f, (logits,))
    f(logits).sum().backward()
    assert logits.grad[1, :, 4].abs().max() == 0  # the padded slot gets no gradient


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(logits=torch.randn(1, 2, 11)), "do not match"),
        (dict(logits=torch.randn(2, 12)), r"\(B, K, N\)"),
        (dict(num_samples=0), "num_samples"),
        (dict(num_samples=2.5), "num_samples must be an integer"),
        (dict(tau=0.0), "tau"),
        (dict(tau=float("nan")), "tau"),
        (dict(tau=float("inf")), "tau"),
        (dict(sampler="fast"), "sampler"),
    ],
)
def test_bad_input_raises_clear_value_error(kwargs, match):
    args = dict(logits=torch.randn(1, 2, 12), basis=cloud_basis(b=1), num_samples=3, tau=1.0) | kwargs
    with pytest.raises(ValueError, match=match):
        sampling_argmax(**args)


@pytest.mark.parametrize("sampler", ["gaussian", "fused"])
def test_gaussian_samplers_reject_grids_of_other_kinds(sampler):
    with pytest.raises(ValueError, match="Gaussian"):
        sampling_argmax(torch.randn(1, 1, 5), PointBasis.grid((5,)), 3, 1.0, sampler=sampler)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_low_memory_sampler_on_cuda():
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(2, 50, 3, dtype=torch.float64, generator=g).cuda()
    basis = PointBasis(pos, 0.05)
    logits = torch.randn(2, 3, 50, dtype=torch.float64, generator=g).cuda().requires_grad_()
    f = lambda l: sampling_argmax(l, basis, 6, 0.5, generator=torch.Generator("cuda").manual_seed(1), sampler="gaussian", chunk_size=4)
    assert torch.autograd.gradcheck(f, (logits,))
    fast = sampling_argmax(logits, basis, 20000, 1e-4, generator=torch.Generator("cuda").manual_seed(2)).double()
    mean, var = mixture_moments(logits.softmax(-1).cpu(), PointBasis(pos.cpu(), 0.05))
    assert ((fast.mean(2).cpu() - mean).abs() < 5 * (var / 20000).sqrt()).all()
    assert torch.allclose(fast.var(2).cpu(), var, rtol=0.06)
