"""The fused sampler (pckeypoints.ops.fused): counter RNG, C++ and Triton kernels against the dense reference."""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pckeypoints.ops import fused
from pckeypoints.core.argmax import sampling_argmax
from pckeypoints.core.basis import PointBasis
from pckeypoints.ops.fused import gaussian_samples, rng

ROOT = Path(__file__).resolve().parents[1]


def lowbias32(x: int) -> int:
    """The mix round on plain Python ints (an independent implementation of rng.mix)."""
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x735A2D97) & 0xFFFFFFFF
    return x ^ (x >> 15)


def test_mix_matches_plain_integer_arithmetic():
    values = [0, 1, 2, 12345, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, 0xFFFFFFFF]
    assert rng.mix(torch.tensor(values)).tolist() == [lowbias32(v) for v in values]


def test_gumbel_noise_is_a_function_of_seed_and_index():
    seed = torch.tensor([7, 9])
    g = rng.gumbel(seed, (2, 3, 4, 50), torch.float64)
    # one entry by hand: sample (b, k, s) = (1, 2, 3) at point 17 reads the cloud's noise of sample 3
    # (keys of (1, 0, 3)) at column (17 + 2 * 50 // 3) mod 50 = 0
    h = lowbias32(lowbias32(7) ^ 9)
    h = lowbias32(lowbias32(lowbias32(h ^ 1) ^ 0) ^ 3)
    bits = lowbias32(lowbias32(0 ^ h) ^ lowbias32(h ^ 0x9E3779B9))
    u = ((bits >> 9) + 0.5) * 2.0**-23
    assert g[1, 2, 3, 17].item() == pytest.approx(-math.log(-math.log(u)), rel=1e-12)
    # a prefix of the samples draws the same noise
    assert torch.equal(rng.gumbel(seed, (2, 3, 2, 50), torch.float64), g[:, :, :2])


def test_keypoints_read_shifted_windows_of_their_clouds_noise():
    """Keypoint k's noise is keypoint 0's rolled by floor(k N / K): the same values (so i.i.d. Gumbel over
    the points), never the same window for two keypoints, different for other clouds and samples."""
    g = rng.gumbel(torch.tensor([3, 4]), (2, 5, 3, 40), torch.float64)
    for k in range(5):
        assert torch.equal(g[:, k], g[:, 0].roll(-(k * 40 // 5), dims=-1))
        assert all(not torch.equal(g[:, k], g[:, j]) for j in range(k))
    assert not torch.equal(g[0], g[1]) and not torch.equal(g[:, :, 0], g[:, :, 1])


def test_keypoints_sharing_noise_draw_uncorrelated_samples():
    """Two keypoints with the same broad map on a cloud in random order: with shared (shifted) noise their
    samples are still uncorrelated across seeds, as with independent noise."""
    g = torch.Generator().manual_seed(0)
    basis = PointBasis(torch.rand(1, 400, 3, generator=g), 0.01)
    logits = torch.randn(1, 1, 400, generator=g).expand(1, 2, 400)
    y = torch.stack([gaussian_samples(logits, basis.pos, basis.variance, 50, 0.3, torch.tensor([seed, 1]),
                                      backend="reference")[0] for seed in range(40)])  # (40 seeds, K = 2, 50, 3)
    first, second = y[:, 0].reshape(-1, 3), y[:, 1].reshape(-1, 3)
    for d in range(3):
        r = torch.corrcoef(torch.stack([first[:, d], second[:, d]]))[0, 1].item()
        assert abs(r) < 0.1  # 2000 pairs: the standard error of r is ~0.022
    assert first[:, 0].std() > 0.2  # broad maps: each keypoint's samples spread over the cloud


def test_gumbel_and_normal_noise_have_the_right_moments():
    seed = torch.tensor([1, 2])
    g = rng.gumbel(seed, (4, 5, 100, 500), torch.float64)
    assert g.mean().item() == pytest.approx(0.5772156649, abs=0.01)  # Euler-Mascheroni
    assert g.var().item() == pytest.approx(math.pi**2 / 6, rel=0.02)
    eps = rng.normal(seed, (50, 40, 100, 3), torch.float64)
    assert abs(eps.mean().item()) < 0.01 and eps.var().item() == pytest.approx(1.0, rel=0.02)


# Sample 12 of (b, k) = (0, 0) under this seed draws the largest 24-bit word at column 33: u = 1 in float32
# under the first formula (u = ((bits >> 8) + 0.5) 2^-24), whose Gumbel noise was infinite.
EXTREME_SEED = (843, 3)


def test_the_largest_random_word_gives_finite_noise():
    keys = rng.row_keys(torch.tensor(EXTREME_SEED), torch.tensor(0), torch.tensor(0), torch.tensor(12))
    assert rng.mix(rng.mix(torch.tensor(33) ^ keys[0]) ^ keys[1]).item() >> 8 == 2**24 - 1
    g = rng.gumbel(torch.tensor(EXTREME_SEED), (1, 1, 13, 34), torch.float32)
    assert torch.isfinite(g).all()
    assert g[0, 0, 12, 33].item() == pytest.approx(-math.log(-math.log(1 - 2**-24)), rel=1e-3)


def problem(dtype=torch.float64, b=2, k=3, n=300, d=3, shared_basis=False, padded=True, seed=0, isotropic=False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, n, dtype=dtype, generator=g)
    if padded:
        logits[-1, :, n - 37 :] = float("-inf")  # a ragged cloud's padding
    bp = 1 if shared_basis else b
    pos = torch.rand(bp, n, d, dtype=dtype, generator=g)
    var = 0.01 + 0.05 * torch.rand(bp, n, 1 if isotropic else d, dtype=dtype, generator=g)
    return logits.requires_grad_(), pos.requires_grad_(), var.expand(-1, -1, d).clone().requires_grad_()


def samples_and_grads(backend, logits, pos, var, num_samples=5, tau=0.5, seed=(123, 456), clip=0.0):
    y = gaussian_samples(logits, pos, var, num_samples, tau, torch.tensor(seed), backend=backend, clip=clip)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).view_as(y)
    return (y, *torch.autograd.grad((y * weights).sum(), (logits, pos, var)))


needs_cpu_kernel = pytest.mark.skipif(not fused.available(torch.device("cpu")), reason="C++ kernel did not build")


@needs_cpu_kernel
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("d, shared", [(3, False), (2, True), (1, False)])
@pytest.mark.parametrize("clip, isotropic", [(0.0, False), (2.0, False), (2.0, True)])
def test_cpu_kernel_matches_the_reference(dtype, tol, d, shared, clip, isotropic):
    """Isotropic bases (one σ per point: the fixed and k-NN ones) take the clipped kernel's isotropic path."""
    if clip:  # the clipped gradient divides by sqrt(1 − ρ), ill-conditioned for the near one-hot samples (w ≈ 1 − 1e-11) here
        tol = {torch.float64: 1e-9, torch.float32: 2e-4}[dtype]
    inputs = problem(dtype, d=d, shared_basis=shared, isotropic=isotropic)
    for got, want in zip(samples_and_grads("cpu", *inputs, num_samples=13, seed=EXTREME_SEED, clip=clip),
                         samples_and_grads("reference", *inputs, num_samples=13, seed=EXTREME_SEED, clip=clip)):
        assert torch.isfinite(want).all() and torch.allclose(got, want, rtol=tol, atol=tol)


def test_clipped_reference_by_hand():
    """The clipped gradient of the logits is w (dw − Σ w dw) / τ with dw_i = Σ_d c σ_id E[sign(y_id + ε_id − s_d) | w, s]
    dL/ds_d (an erf, :func:`pckeypoints.ops.fused.reference.clipped_weight_grads`); the samples and the basis' gradients
    are those of the exact estimator."""
    logits, pos, var = problem(torch.float64, b=1, k=2, n=7, d=2, padded=False)
    seed, tau, c = torch.tensor([5, 8]), 0.6, 2.0
    y, *grads = samples_and_grads("reference", logits, pos, var, num_samples=3, tau=tau, seed=(5, 8), clip=c)
    exact_y, *exact = samples_and_grads("reference", logits, pos, var, num_samples=3, tau=tau, seed=(5, 8))
    torch.testing.assert_close(y, exact_y)
    torch.testing.assert_close(grads[1:], exact[1:])
    w = ((logits.detach()[:, :, None] + rng.gumbel(seed, (1, 2, 3, 7), torch.float64)) / tau).softmax(-1)
    dy = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)  # the upstream gradient of samples_and_grads
    y_i, var_i = pos.detach()[0], var.detach()[0]  # (N, D)
    m = torch.einsum("bksn,nd->bksd", w, y_i)
    v = torch.einsum("bksn,nd->bksd", w.square(), var_i)
    w_, s_, m_, v_ = w[..., None], y.detach()[..., None, :], m[..., None, :], v[..., None, :]  # (1, 2, 3, N|1, D|1)
    expected_sign = torch.erf((y_i - s_ + w_ * var_i / v_ * (s_ - m_))
                              / ((2 * var_i).sqrt() * (1 - w_.square() * var_i / v_).sqrt()))
    dw = (c * var_i.sqrt() * expected_sign * dy[..., None, :]).sum(-1)
    want = (w * (dw - (w * dw).sum(-1, keepdim=True)) / tau).sum(2)
    torch.testing.assert_close(grads[0], want)
    assert not torch.allclose(grads[0], exact[0])


@needs_cpu_kernel
def test_fused_and_naive_clipped_estimators_agree_in_expectation():
    """The naive estimator's clipped gradient, sign(y_i + ε_i − s) per basis draw, and the fused one, its expectation
    given the weights and the sample: the same mean gradient of an L1 loss (overlapping bases, soft weights) within
    4 standard errors, while the exact gradient's mean differs by more than 8 (and so does the expected sign over
    the point's own draw alone, erf((y_i − s) / (√2 σ_i)), an earlier definition that ignored the draw's share of s)."""
    basis = PointBasis(torch.tensor([[[0.0], [0.2], [0.5], [0.6], [1.0]]], dtype=torch.float64), 0.15)
    logits = torch.tensor([[[0.5, 1.0, -0.3, 0.2, 0.0]]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0.45], dtype=torch.float64)

    def mean_grad(sampler, clipped):
        grads = []
        for seed in range(4):
            y = sampling_argmax(logits, basis, 40_000, 0.8, generator=torch.Generator().manual_seed(seed), sampler=sampler,
                                clipped=clipped)
            grads.append(torch.autograd.grad((y - target).abs().mean(), logits)[0][0, 0])
        grads = torch.stack(grads)
        return grads.mean(0), grads.std(0) / 2  # mean and its standard error

    (naive, se_naive), (fused_clip, se_fused) = mean_grad("naive", True), mean_grad("fused", True)
    exact, se_exact = mean_grad("fused", False)
    assert ((naive - fused_clip).abs() < 4 * (se_naive.square() + se_fused.square()).sqrt()).all()
    assert ((exact - fused_clip).abs() > 8 * (se_exact.square() + se_fused.square()).sqrt()).any()


@needs_cpu_kernel
def test_cpu_kernel_passes_gradcheck():
    logits, pos, var = problem(torch.float64, b=2, k=2, n=40, padded=True)
    f = lambda l, p, v: gaussian_samples(l, p, v, 3, 0.7, torch.tensor([5, 6]), backend="cpu")
    assert torch.autograd.gradcheck(f, (logits, pos, var))


@needs_cpu_kernel
def test_cpu_kernel_does_not_depend_on_the_thread_count():
    inputs = problem(torch.float32, b=3, k=4, n=1000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = samples_and_grads("cpu", *inputs, num_samples=7)
        torch.set_num_threads(3)
        three = samples_and_grads("cpu", *inputs, num_samples=7)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, three))


@needs_cpu_kernel
def test_same_seed_same_samples_and_samples_do_not_depend_on_their_count():
    basis = PointBasis(torch.rand(2, 100, 3), 0.02)
    logits = torch.randn(2, 4, 100)
    run = lambda ns, seed: sampling_argmax(logits, basis, ns, 0.3, generator=torch.Generator().manual_seed(seed), sampler="fused")
    assert torch.equal(run(6, 1), run(6, 1))
    assert not torch.allclose(run(6, 1), run(6, 2))
    seed = rng.draw_seed(torch.Generator().manual_seed(1), torch.device("cpu"))
    few = gaussian_samples(logits, basis.pos, basis.variance, 2, 0.3, seed, backend="cpu")
    assert torch.equal(few, gaussian_samples(logits, basis.pos, basis.variance, 6, 0.3, seed, backend="cpu")[:, :, :2])


@needs_cpu_kernel
@pytest.mark.parametrize("tau", [1e-45, 1e-300])
def test_tiny_temperature_gives_one_hot_weights_not_nan(tau):
    logits, pos, var = problem(torch.float32, padded=True)
    y, *grads = samples_and_grads("cpu", logits, pos, var, tau=tau)
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)
    # one-hot weights: the moments are those of one point, the Gumbel argmax
    t = logits[:, :, None, :].detach() + rng.gumbel(torch.tensor([123, 456]), (2, 3, 5, 300), torch.float32)
    picked = pos.detach().expand(2, -1, -1).gather(1, t.argmax(-1).flatten(1)[..., None].expand(-1, -1, 3))
    spread = 4 * var.detach().max().sqrt()
    assert ((y.flatten(1, 2) - picked).abs() < spread).all()


def test_every_tensor_handed_to_the_kernels_is_on_the_logits_device(monkeypatch):
    """The Triton launcher rejects a CPU pointer on CUDA ("Pointer argument (at 3) cannot be accessed from
    Triton (cpu tensor?)": argument 3, the seed, was a CPU tensor). Meta stands in for the GPU (the ops' fake
    kernels run on it): every tensor reaching the kernels' two ops is on the logits' device, though the seed
    comes from the CPU, as the tests' ``torch.tensor(seed)`` and a CPU generator give it."""
    seen = {}
    for name in ("gumbel_moments", "gumbel_moments_backward"):
        def recording(*args, _op=getattr(fused, name), _name=name):
            seen[_name] = [(i, x.device) for i, x in enumerate(args) if isinstance(x, torch.Tensor)]
            return _op(*args)

        monkeypatch.setattr(fused, name, recording)
    monkeypatch.setattr(fused, "resolve", lambda backend, device: fused.reference)  # a kernel "exists" on meta
    logits, pos, var = (x.detach().to("meta").requires_grad_() for x in problem(torch.float32))
    y = gaussian_samples(logits, pos, var, 4, 0.5, torch.tensor([1, 2]), backend="triton")
    y.sum().backward()
    assert set(seen) == {"gumbel_moments", "gumbel_moments_backward"}  # both ops ran
    assert (3, logits.device) in seen["gumbel_moments"]  # the seed, argument 3, among them
    assert all(device == logits.device for devices in seen.values() for _, device in devices), seen


# Triton reads TRITON_INTERPRET when it is imported, so the interpreted kernels run in a subprocess.
TRITON_RUN = """
import sys, torch
from pckeypoints.ops.fused import triton_kernels as kernels
inputs = torch.load(sys.argv[1])
results = []
for block_n, block_s in [(128, 16), (32, 4)]:  # results do not depend on the tiling
    fwd = kernels.forward(*inputs["forward"], block_n, block_s)
    sample = fwd[0] + fwd[1].sqrt() * fwd[4]
    for clip in (0.0, 2.0):
        bwd = kernels.backward(*inputs["backward"][:5], *fwd[2:4], *fwd[:2], *inputs["backward"][5:], sample, clip,
                               block_n, block_s)
        results.append(fwd + bwd)
torch.save(results, sys.argv[2])
"""


@needs_cpu_kernel
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_triton_kernels_match_the_cpu_kernel(tmp_path, dtype, tol):
    pytest.importorskip("triton")
    logits, pos, var = (x.detach() for x in problem(dtype, b=2, k=2, n=200, shared_basis=dtype == torch.float32))
    seed, inv_tau = torch.tensor(EXTREME_SEED), 1 / 0.4
    pos, var = pos.transpose(1, 2).contiguous(), var.transpose(1, 2).contiguous()
    cpu = fused.resolve("cpu", torch.device("cpu"))
    fwd = cpu.forward(logits, pos, var, seed, 13, inv_tau)
    grads = [torch.randn_like(fwd[0]), torch.randn_like(fwd[1])]
    sample = fwd[0] + fwd[1].sqrt() * fwd[4]
    bwd = [cpu.backward(logits, pos, var, seed, inv_tau, fwd[2], fwd[3], fwd[0], fwd[1], *grads, True, True, sample,
                        clip) for clip in (0.0, 2.0)]
    inputs = {"forward": (logits, pos, var, seed, 13, inv_tau),
              "backward": (logits, pos, var, seed, inv_tau, *grads, True, True)}
    torch.save(inputs, tmp_path / "in.pt")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # triton may live there
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    subprocess.run([sys.executable, "-c", TRITON_RUN, tmp_path / "in.pt", tmp_path / "out.pt"], env=env, check=True)
    results = torch.load(tmp_path / "out.pt")
    assert len(results) == 4  # two tilings, without and with clip
    clip_tol = {torch.float64: 1e-9, torch.float32: 2e-4}[dtype]  # ill-conditioned at one-hot samples, as above
    for i, got in enumerate(results):
        for a, b in zip(got, fwd + bwd[i % 2]):
            assert torch.allclose(a, b, rtol=clip_tol if i % 2 else tol, atol=clip_tol if i % 2 else tol)


@pytest.mark.skipif(not (torch.cuda.is_available() and fused.available(torch.device("cuda"))), reason="needs CUDA + triton")
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("clip", [0.0, 2.0])
def test_triton_kernels_on_cuda_match_the_reference(dtype, tol, clip):
    inputs = [x.detach().cuda().requires_grad_() for x in problem(dtype, b=2, k=3, n=700)]
    got = samples_and_grads("triton", *inputs, num_samples=20, clip=clip)
    want = samples_and_grads("reference", *inputs, num_samples=20, clip=clip)
    assert all(torch.allclose(a, b, rtol=tol, atol=tol) for a, b in zip(got, want))
