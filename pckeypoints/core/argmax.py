"""Soft-argmax and sampling-argmax over a :class:`~pckeypoints.core.basis.PointBasis`.

Soft-argmax returns the mean of the mixture, Σ_i π_i y_i. Sampling-argmax (Li et al. 2021, Eq. 11)
draws differentiable samples from the mixture p(y) = Σ_i π_i f_i(y): Gumbel-softmax weights
w = softmax((log π + g) / τ) over the locations, one draw ε_i from every basis, and the weighted
sum y = Σ_i w_i (y_i + ε_i). As τ → 0 the weights become one-hot and y is an exact mixture sample.

Samplers:

- ``"naive"``: the formula above, one basis draw per location and sample, ``(B, K, Ns, N, D)``
  noise; any basis kind.
- ``"gaussian"`` (low memory, Gaussian bases only): given w, Σ_i w_i ε_i with ε_i ~ N(0, σ_i²)
  independent is itself N(0, Σ_i w_i² σ_i²), so one draw per sample suffices. The Gumbel weights
  are processed in chunks of samples and recomputed in backward from the saved RNG state, so
  memory is O(B·K·N·chunk) instead of O(B·K·Ns·N).
- ``"fused"`` (Gaussian bases, D <= 3): the same distribution from the kernels of
  :mod:`pckeypoints.ops.fused` (C++/OpenMP on the CPU, Triton on CUDA): one pass over the points per
  sample with online softmax and counter-based Gumbel noise, never a ``(B, K, Ns, N)`` tensor. A
  cloud's keypoints read each sample's noise at different shifts (:mod:`pckeypoints.ops.fused.rng`): each
  keypoint's samples have exactly their distribution, other random numbers than the other samplers'.

Variants of the authors' public code (``../shared/reference/official_code.md`` of the project):

- ``gumbel="official"``: weights softmax(l + g / τ) instead of the paper's softmax((l + g) / τ), i.e. the
  paper's form over the logits τ·l (samples follow softmax(τ·l)); every sampler supports it.
- ``clipped=True``: the "clipped integral" gradient of the weighted sum (:func:`clipped_weighted_sum`):
  each weight's gradient is the amplitude :data:`CLIP_AMPLITUDE` σ_i times the sign of its (noisy) point against
  the sample. The ``"naive"`` sampler applies it to each sample's weights; the ``"fused"`` sampler, whose basis
  draws are summed analytically, uses that sign's expectation given the weights and the sample, an erf
  (:func:`pckeypoints.ops.fused.gaussian_samples`): the same expected gradient. ``"auto"`` picks ``"fused"`` where
  it can, else ``"naive"``.

Every sampler subtracts the maximum of l + g before dividing by τ, so any τ > 0 is safe (τ → 0
gives one-hot weights, never NaN). Only shapes are checked here (no host synchronisation); logit
values are checked once per call by :class:`~pckeypoints.core.losses.KeypointLoss`.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from pckeypoints.ops import fused
from pckeypoints.choices import GUMBEL_FORMS, SAMPLERS
from pckeypoints.core.basis import PointBasis
from pckeypoints.errors import InputError
from pckeypoints.ops.fused import rng

#: Gradient amplitude of the clipped integral, in basis bandwidths (grid cells on a grid).
CLIP_AMPLITUDE = 2.0


def soft_argmax(logits: Tensor, basis: PointBasis, *, clipped: bool = False) -> Tensor:
    """Expectation Σ_i π_i y_i of the map, ``(B, K, D)``, for logits ``(B, K, N)``; ``clipped``: with
    the gradient of :func:`clipped_weighted_sum` (amplitude :data:`CLIP_AMPLITUDE` bandwidths)."""
    probs = basis.probabilities(logits)
    if clipped:
        return clipped_weighted_sum(probs, basis.pos[:, None], CLIP_AMPLITUDE * basis.bandwidth[:, None])
    return probs @ basis.pos


def clipped_weighted_sum(weights: Tensor, points: Tensor, amplitude: Tensor) -> Tensor:
    """y = Σ_i w_i x_i with the authors' "clipped integral" gradient for the weights.

    Backward passes dL/dw_i = Σ_d a_id · sign_id · dL/dy_d, with sign_id = +1 where x_id >= y_d and -1
    where x_id < y_d, instead of Σ_d x_id · dL/dy_d (which equals Σ_d (x_id - y_d) · dL/dy_d up to a
    shift that a softmax ignores): the distance of each point to the estimate is replaced by the
    amplitude a (2 grid cells in the authors' code). ``points`` gets its ordinary gradient w_i · dL/dy.

    Args:
        weights: ``(..., N)``.
        points: ``(..., N, D)`` broadcastable against ``weights[..., None]``.
        amplitude: ``(..., N, D)`` broadcastable likewise, > 0 (no gradient).
    Returns:
        ``(..., D)``.

    Examples:
        >>> w = torch.tensor([0.5, 0.25, 0.25], requires_grad=True)
        >>> y = clipped_weighted_sum(w, torch.tensor([[0.0], [1.0], [3.0]]), torch.tensor(2.0))
        >>> y.backward(torch.ones(1)); y.item(), w.grad.tolist()
        (1.0, [-2.0, 2.0, 2.0])
    """
    return _ClippedWeightedSum.apply(weights, points, amplitude)


class _ClippedWeightedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights, points, amplitude):
        out = (weights[..., None] * points).sum(-2)
        ctx.save_for_backward(weights, points, amplitude, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        weights, points, amplitude, out = ctx.saved_tensors
        grad_weights = grad_points = None
        if ctx.needs_input_grad[0]:
            sign = torch.where(points >= out[..., None, :], 1.0, -1.0).to(grad.dtype)
            grad_weights = (sign * amplitude * grad[..., None, :]).sum(-1)
            grad_weights = _sum_to(grad_weights, weights.shape)
        if ctx.needs_input_grad[1]:
            grad_points = _sum_to(weights[..., None] * grad[..., None, :], points.shape)
        return grad_weights, grad_points, None


def _sum_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """``grad`` summed over the axes that were broadcast from ``shape``."""
    lead = grad.dim() - len(shape)
    grad = grad.sum(tuple(range(lead))) if lead else grad
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and grad.shape[i] != 1)
    return grad.sum(axes, keepdim=True) if axes else grad


def gumbel(shape, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel noise -log(-log U), U ~ U[0, 1), of ``shape``, dtype and device of ``like``.

    U = 0 gives -inf, a weight of exactly 0 for that location and sample (probability 2^-24 in
    float32), which is harmless. Uniform draws are vectorised on the CPU, unlike
    ``Tensor.exponential_``.
    """
    u = torch.rand(shape, dtype=like.dtype, device=like.device, generator=generator)
    return u.log_().neg_().log_().neg_()


def gumbel_softmax(logits: Tensor, noise: Tensor, tau: float) -> Tensor:
    """softmax((logits + noise) / τ) over the last axis, safe for any τ > 0: the maximum is
    subtracted before dividing, and 1/τ is clamped to the dtype's largest value."""
    t = logits + noise
    t = t - t.amax(-1, keepdim=True).detach()
    return t.mul_(min(1.0 / tau, torch.finfo(t.dtype).max)).softmax(-1)


def sampling_argmax(
    logits: Tensor,
    basis: PointBasis,
    num_samples: int,
    tau: float,
    *,
    generator: torch.Generator | None = None,
    sampler: str = "auto",
    chunk_size: int | None = None,
    validate: bool = True,
    gumbel: str = "paper",
    clipped: bool = False,
) -> Tensor:
    """Differentiable samples from the mixture defined by ``logits`` over ``basis``.

    Args:
        logits: ``(B, K, N)`` unnormalised log-probabilities.
        basis: the locations and their basis densities.
        num_samples: Ns samples per keypoint.
        tau: Gumbel-softmax temperature (> 0).
        generator: RNG for reproducible samples.
        sampler: ``"naive"``, ``"gaussian"`` (low memory), ``"fused"`` (kernels) or ``"auto"``
            (``"fused"`` for Gaussian bases of D <= 3 and float32/float64 logits when its kernel is available
            on the device, else ``"gaussian"`` for Gaussian bases (``"naive"`` with ``clipped``), else
            ``"naive"``).
        chunk_size: samples per chunk for the low-memory sampler. Its working memory is a few
            ``(B, chunk_size·K, N)`` tensors; the default fits 2^19 weights in each (at least 1
            sample). Larger chunks mean fewer, bigger kernels.
        validate: check that the logits are finite (a full pass; a training step that checked its
            inputs once passes False).
        gumbel: ``"paper"`` softmax((l + g) / τ) or ``"official"`` softmax(l + g / τ) (module doc).
        clipped: the clipped-integral gradient of the weighted sum (``"naive"`` and ``"fused"`` samplers).
    Returns:
        ``(B, K, Ns, D)`` samples. (For evaluation use :func:`soft_argmax`.)
    """
    basis.check_logits(logits, validate)
    sampler = _choose_sampler(logits, basis, num_samples, tau, sampler, gumbel, clipped)
    logits = basis.mask_logits(logits)
    if gumbel == "official":  # softmax(l + g/τ) = softmax((τ·l + g)/τ)
        logits = logits * tau
    b, k, n = logits.shape
    if sampler == "fused":
        seed = rng.draw_seed(generator, logits.device)
        clip = CLIP_AMPLITUDE if clipped else 0.0
        return fused.gaussian_samples(logits, basis.pos, basis.variance, int(num_samples), float(tau), seed,
                                     clip=clip)
    if sampler == "naive":
        return _naive_samples(logits, basis, num_samples, tau, generator, clipped)
    pos = basis.pos.expand(b, n, -1)
    scale = basis.bandwidth.expand(b, n, -1)
    if chunk_size is None:
        chunk_size = max(1, (1 << 19) // (b * k * n))
    if generator is None:
        generator = torch.Generator(logits.device)
        generator.manual_seed(int(torch.randint(1 << 62, (1,))))
    return _GaussianSampling.apply(logits, pos, scale, num_samples, tau, generator, chunk_size)


def _choose_sampler(logits: Tensor, basis: PointBasis, num_samples, tau, sampler: str, gumbel: str,
                    clipped: bool) -> str:
    """The sampler :func:`sampling_argmax` runs (``"auto"`` resolved), after checking its arguments."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
        raise InputError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not (math.isfinite(tau) and tau > 0):
        raise InputError(f"temperature tau must be a finite number > 0, got {tau!r}")
    if sampler not in SAMPLERS:
        raise InputError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if gumbel not in GUMBEL_FORMS:
        raise InputError(f"gumbel must be one of {GUMBEL_FORMS}, got {gumbel!r}")
    if sampler == "auto":
        sampler = "naive"
        if basis.kind == "gaussian":
            # under torch.compile the custom op finds its kernel when it runs (availability is a build: no graph)
            kernel = (logits.device.type in ("cpu", "cuda") if torch.compiler.is_compiling()
                      else fused.available(logits.device))
            fits = basis.dim <= fused.MAX_DIM and logits.dtype in fused.DTYPES and kernel
            sampler = "fused" if fits else "naive" if clipped else "gaussian"
    if sampler != "naive" and basis.kind != "gaussian":
        raise InputError(f"the {sampler!r} sampler needs a Gaussian basis, got {basis.kind!r}")
    if clipped and sampler == "gaussian":
        raise InputError("the clipped-integral gradient needs the 'naive' or 'fused' sampler, got "
                               "sampler='gaussian'")
    if sampler == "fused" and logits.dtype not in fused.DTYPES:
        raise InputError(f"the 'fused' sampler takes float32 or float64 logits, got {logits.dtype}; "
                               "use sampler='gaussian'")
    # under torch.compile the custom op finds the kernel when it runs (a build is no graph)
    if sampler == "fused" and (basis.dim > fused.MAX_DIM
                               or not (torch.compiler.is_compiling() or fused.available(logits.device))):
        raise InputError(f"the 'fused' sampler has no kernel for {basis.dim}-D points on {logits.device} "
                               "(C++ extension build failed, or no triton for CUDA); use sampler='gaussian'")
    return sampler


def _naive_samples(logits: Tensor, basis: PointBasis, num_samples: int, tau: float,
                   generator: torch.Generator | None, clipped: bool) -> Tensor:
    """y_s = Σ_i w_si (y_i + ε_si), ``(B, K, Ns, D)``, for masked logits ``(B, K, N)``."""
    b, k, n = logits.shape
    weights = gumbel_softmax(logits[:, :, None, :], gumbel((b, k, num_samples, n), logits, generator), tau)
    noise = basis.unit_noise((b, k, num_samples, n, basis.dim), generator)
    scale = basis.bandwidth.expand(b, n, -1)[:, None, None]  # (B, 1, 1, N, D)
    pos = basis.pos.expand(b, n, -1)
    if clipped:
        return clipped_weighted_sum(weights, pos[:, None, None] + noise * scale, CLIP_AMPLITUDE * scale)
    offsets = torch.einsum("bksn,bksnd->bksd", weights, noise * scale)
    return torch.einsum("bksn,bnd->bksd", weights, pos) + offsets


class _GaussianSampling(torch.autograd.Function):
    """y_s = Σ_i w_si y_i + sqrt(Σ_i w_si² σ_i²) ε_s with w_s = softmax((l + g_s) / τ).

    Forward and backward walk the samples in chunks; backward regenerates each chunk's Gumbel
    noise from the generator state saved in forward instead of storing ``(B, K, Ns, N)`` weights.
    Noise is drawn sample-major, so the samples do not depend on the chunk size.
    """

    @staticmethod
    def forward(ctx, logits, pos, scale, num_samples, tau, generator, chunk_size):
        b, k, n = logits.shape
        eps = torch.randn((b, k, num_samples, pos.shape[-1]), dtype=logits.dtype, device=logits.device, generator=generator)
        state = generator.get_state()
        var_basis = scale.square()
        mean, var = torch.empty_like(eps), torch.empty_like(eps)
        for s0 in range(0, num_samples, chunk_size):
            w = _chunk_weights(logits, tau, min(chunk_size, num_samples - s0), generator)  # (B, c·K, N)
            c = w.shape[1] // k
            mean[:, :, s0 : s0 + c] = (w @ pos).view(b, c, k, -1).transpose(1, 2)
            var[:, :, s0 : s0 + c] = (w.square_() @ var_basis).view(b, c, k, -1).transpose(1, 2)
        std = var.sqrt_()
        ctx.save_for_backward(logits, pos, scale, eps, std)
        ctx.state, ctx.device, ctx.tau, ctx.chunk_size = state, generator.device, tau, chunk_size
        return mean.addcmul_(std, eps)

    @staticmethod
    def backward(ctx, grad):
        logits, pos, scale, eps, std = ctx.saved_tensors
        b, k, n = logits.shape
        num_samples = eps.shape[2]
        generator = torch.Generator(ctx.device)
        generator.set_state(ctx.state)
        var_basis = scale.square()
        coef = grad * eps / std  # 2 · dL/d(variance of the sample), (B, K, Ns, D)
        grad_logits, grad_pos, grad_var = torch.zeros_like(logits), torch.zeros_like(pos), torch.zeros_like(pos)
        for s0 in range(0, num_samples, ctx.chunk_size):
            w = _chunk_weights(logits, ctx.tau, min(ctx.chunk_size, num_samples - s0), generator)  # (B, c·K, N)
            c = w.shape[1] // k
            g = grad[:, :, s0 : s0 + c].transpose(1, 2).reshape(b, c * k, -1)
            a = coef[:, :, s0 : s0 + c].transpose(1, 2).reshape(b, c * k, -1)
            # dL/dw_i = g·y_i + w_i Σ_d a_d σ_id², then through the softmax.
            dw = (g @ pos.transpose(1, 2)).addcmul_(w, a @ var_basis.transpose(1, 2))
            grad_pos.baddbmm_(w.transpose(1, 2), g)
            grad_var.baddbmm_(w.square().transpose(1, 2), a)
            dw -= (dw * w).sum(-1, keepdim=True)
            grad_logits += dw.mul_(w).view(b, c, k, n).sum(1)
        grad_logits *= min(1.0 / ctx.tau, torch.finfo(grad_logits.dtype).max)
        grad_scale = grad_var.mul_(scale)  # dL/dσ = 2σ · dL/dσ², and a carries 2 · dL/dvariance
        return (
            grad_logits,
            grad_pos if ctx.needs_input_grad[1] else None,
            grad_scale if ctx.needs_input_grad[2] else None,
            None,
            None,
            None,
            None,
        )


def _chunk_weights(logits: Tensor, tau: float, count: int, generator: torch.Generator) -> Tensor:
    """Gumbel-softmax weights for ``count`` consecutive samples, ``(B, count·K, N)``.

    The noise is drawn sample-major, ``(count, B, K, N)``, so samples do not depend on the chunk
    size; it is then laid out per cloud for batched matrix products.
    """
    b, k, n = logits.shape
    w = gumbel_softmax(logits, gumbel((count, b, k, n), logits, generator), tau)
    return w.transpose(0, 1).reshape(b, count * k, n)
