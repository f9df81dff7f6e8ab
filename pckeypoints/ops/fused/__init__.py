"""Fused Gaussian sampling-argmax: samples without a ``(B, K, Ns, N)`` tensor.

A sample is y = Σ_i w_i y_i + sqrt(Σ_i w_i² σ_i²) ε with Gumbel-softmax weights w = softmax((l + g) / τ)
(see :mod:`pckeypoints.core.argmax`). The kernels compute the two moments of every sample in one pass over
the points (online softmax), drawing the Gumbel noise g from the counter-based hash of :mod:`.rng`,
and regenerate it in the backward pass instead of saving it. Memory is O(B·K·Ns·D + B·K·N).

Backends, picked by the tensors' device under ``"auto"``:

- ``"cpu"``: C++/OpenMP (``csrc/sampling_argmax.cpp``, JIT-built and cached like pointnet2's ops).
- ``"triton"``: Triton kernels for CUDA tensors (on CPU tensors with ``TRITON_INTERPRET=1``, for tests).
- ``"reference"``: pure PyTorch (:mod:`.reference`), dense, any device.

The kernels run as the custom op ``torch.ops.pckeypoints.gumbel_moments`` (with a fake kernel and a registered
backward, itself the op ``gumbel_moments_backward``), so ``torch.compile(fullgraph=True)`` traces through the
sampler.

With ``clip > 0`` the weights get the authors' clipped-integral gradient instead of the exact one
(:func:`gaussian_samples`); the samples are the same.

Every backend draws the same samples for the same seed (within float rounding).
"""
from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from pckeypoints.errors import InputError
from pckeypoints.ops.fused import reference, rng

BACKENDS = ("auto", "cpu", "triton", "reference")
MAX_DIM = 3
#: dtypes the kernels take.
DTYPES = (torch.float32, torch.float64)


def gaussian_samples(
    logits: Tensor, pos: Tensor, var: Tensor, num_samples: int, tau: float, seed: Tensor, *, backend: str = "auto",
    clip: float = 0.0,
) -> Tensor:
    """Differentiable samples ``(B, K, Ns, D)`` of the Gaussian mixture Σ_i softmax(l)_i N(y_i, var_i).

    A sample is s = Σ_i w_i y_i + sqrt(Σ_i w_i² σ_i²) ε: the basis draws of the naive estimator
    Σ_i w_i (y_i + ε_i) summed analytically. Its clipped-integral gradient (``clip = c > 0``, the authors'
    estimator) gives weight i, per unit gradient of axis d, the naive clipped estimator's c σ_id ·
    sign(y_id + ε_id − s_d) in expectation given the weights and the sample, an erf of the point's offset
    (:func:`.reference.clipped_weight_grads`), instead of y_id; so both have the same expected gradient. The
    variance term adds nothing to the weights' gradient then; the basis' gradients stay exact.

    Args:
        logits: ``(B, K, N)``, -inf at padding.
        pos, var: ``(Bp, N, D)`` centres and per-axis variances (Bp 1 or B, D <= 3).
        num_samples: Ns.
        tau: Gumbel-softmax temperature (> 0; any tiny τ is safe: the softmax subtracts its maximum
            before dividing by τ).
        seed: ``(2,)`` int64 from :func:`.rng.draw_seed`, on any device; equal seeds give equal samples.
        backend: one of :data:`BACKENDS`. Under ``torch.compile`` the kernels are the custom op
            ``torch.ops.pckeypoints.gumbel_moments``, which resolves ``backend`` when it runs (no fallback
            to the reference there: a kernel that cannot be built is an error).
        clip: the clipped-integral gradient's amplitude c in basis standard deviations; 0: the exact gradient.
    """
    inv_tau = 1.0 / tau
    seed = seed.to(logits.device)  # the kernels read it on the logits' device
    pos_t, var_t = pos.transpose(1, 2), var.transpose(1, 2)
    if backend == "reference" or (not torch.compiler.is_compiling() and resolve(backend, logits.device) is None):
        b, k, _ = logits.shape
        noise = rng.normal(seed, (b, k, num_samples, pos.shape[-1]), logits.dtype)
        mean, variance = reference.gumbel_moments(logits, pos_t, var_t, seed, num_samples, inv_tau, noise, clip)
    else:  # the kernels draw the normal noise too: one launch instead of a few hundred small ops
        mean, variance, _, _, noise = gumbel_moments(
            logits.contiguous(), pos_t.contiguous(), var_t.contiguous(), seed, num_samples, inv_tau, float(clip),
            backend)
    return mean + variance.sqrt() * noise


def available(device: torch.device) -> bool:
    """Whether ``"auto"`` has a fused kernel for tensors on ``device``."""
    return resolve("auto", device) is not None


def resolve(backend: str, device: torch.device) -> ModuleType | None:
    """The kernels (``forward``, ``backward``) of ``backend`` on ``device``; None for the reference."""
    if backend not in BACKENDS:
        raise InputError(f"fused backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return None
    if backend == "auto":
        if device.type == "cpu":
            return _cpu_or_warn()
        return _checked_triton(device) if device.type == "cuda" else None
    if backend == "cpu":
        if device.type != "cpu":
            raise InputError(f"fused backend 'cpu' needs CPU tensors, got {device}")
        return _cpu()
    kernels = _triton()
    if kernels is None:
        raise InputError("fused backend 'triton' needs the triton package")
    return kernels


@cache
def _cpu() -> ModuleType:
    from pointnet2.build import load_extension

    source = Path(__file__).parent / "csrc" / "sampling_argmax.cpp"
    # -fno-trapping-math lets the compiler vectorise the branch-free selects of the float loops;
    # fused multiply-adds (in the AVX2 / AVX-512 clones) change results by rounding only
    return load_extension("pckeypoints_sampling_argmax", (source,), ("-fno-trapping-math", "-fno-math-errno",
                                                                     "-ffp-contract=fast"))


@cache
def _cpu_or_warn() -> ModuleType | None:
    from pointnet2.build import load_or_warn

    return load_or_warn(_cpu, "the fused sampling-argmax CPU kernel", "sampler='auto' uses the Python 'gaussian' "
                        "sampler", stacklevel=4)


@cache
def _triton() -> ModuleType | None:
    try:
        from pckeypoints.ops.fused import triton_kernels
    except ImportError:
        return None
    return triton_kernels


@cache
def _checked_triton(device: torch.device) -> ModuleType | None:
    """The Triton kernels if they compile and match the reference on a small problem on ``device``
    (checked once per process), else None with a warning: ``"auto"`` then uses the Python sampler."""
    kernels = _triton()
    if kernels is None:
        return None
    g = torch.Generator(device).manual_seed(0)
    logits = torch.randn(2, 3, 200, device=device, generator=g, requires_grad=True)
    pos = torch.rand(2, 3, 200, device=device, generator=g)
    var = torch.full_like(pos, 1e-3)
    seed = torch.tensor([1, 2], device=device)
    try:
        got, _, _, _, noise = gumbel_moments(logits, pos, var, seed, 5, 2.0, 0.0, "triton")
        want = reference.gumbel_moments(logits, pos, var, seed, 5, 2.0)[0]
        grads = [torch.autograd.grad(y.square().sum(), logits)[0] for y in (got, want)]
        ok = (torch.allclose(got, want, rtol=1e-3, atol=1e-4) and torch.allclose(*grads, rtol=1e-3, atol=1e-4)
              and torch.allclose(noise, rng.normal(seed, tuple(noise.shape), noise.dtype), rtol=1e-3, atol=1e-4))
        error = "" if ok else "results differ from the reference"
    except Exception as err:  # a Triton or driver version that cannot compile the kernels
        error = f"{type(err).__name__}: {err}"
    if error:
        warnings.warn(f"the fused Triton sampling-argmax kernels failed their check on {device} ({error}); "
                      "sampler='auto' uses the Python 'gaussian' sampler", RuntimeWarning, stacklevel=4)
        return None
    return kernels


def _kernels(backend: str, device: torch.device) -> ModuleType:
    kernels = resolve(backend, device)
    if kernels is None:
        raise InputError(f"the fused sampling-argmax kernels ({backend!r}) are unavailable on {device}; "
                         "use sampler='gaussian'")
    return kernels


@torch.library.custom_op("pckeypoints::gumbel_moments", mutates_args=())
def gumbel_moments(logits: Tensor, pos: Tensor, var: Tensor, seed: Tensor, num_samples: int, inv_tau: float,
                   clip: float, backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The kernels' ``(mean, variance, row_max, log_sum, noise)``: the two moments ``(B, K, Ns, D)`` of each
    sample's weights, the online softmax's max and log-sum ``(B, K, Ns)`` (for the backward) and each sample's
    standard normal draw ``(B, K, Ns, D)`` (no gradient); ``pos``, ``var`` channels first ``(Bp, D, N)``.
    ``clip`` (> 0: the clipped-integral gradient, :func:`gaussian_samples`) changes only the backward."""
    mean, variance, row_max, log_sum, noise = _kernels(backend, logits.device).forward(
        logits, pos, var, seed, num_samples, inv_tau)
    return mean, variance, row_max, log_sum, noise


@gumbel_moments.register_fake
def _(logits, pos, var, seed, num_samples, inv_tau, clip, backend):
    b, k, _ = logits.shape
    mean = logits.new_empty(b, k, num_samples, pos.shape[1])
    row_max = logits.new_empty(b, k, num_samples)
    return mean, torch.empty_like(mean), row_max, torch.empty_like(row_max), torch.empty_like(mean)


@torch.library.custom_op("pckeypoints::gumbel_moments_backward", mutates_args=())
def gumbel_moments_backward(logits: Tensor, pos: Tensor, var: Tensor, seed: Tensor, inv_tau: float,
                            row_max: Tensor, log_sum: Tensor, mean: Tensor, variance: Tensor, grad_mean: Tensor,
                            grad_var: Tensor, need_pos: bool, need_var: bool, sample: Tensor, clip: float,
                            backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`gumbel_moments`' moments for ``logits (B, K, N)`` and the basis ``(B, D, N)``;
    the basis ones empty unless ``need_pos`` / ``need_var``. The Gumbel noise is regenerated, not saved.
    With ``clip > 0`` the logits' gradient is the clipped one around ``sample`` ``(B, K, Ns, D)``."""
    grads = _kernels(backend, logits.device).backward(logits, pos, var, seed, inv_tau, row_max, log_sum, mean,
                                                      variance, grad_mean, grad_var, need_pos, need_var, sample,
                                                      clip)
    return tuple(logits.new_empty(0) if g is None else g for g in grads)


@gumbel_moments_backward.register_fake
def _(logits, pos, var, seed, inv_tau, row_max, log_sum, mean, variance, grad_mean, grad_var, need_pos, need_var,
      sample, clip, backend):
    b, _, n = logits.shape
    basis = lambda need: logits.new_empty(b, pos.shape[1], n) if need else logits.new_empty(0)
    return torch.empty_like(logits), basis(need_pos), basis(need_var)


def _setup_backward(ctx, inputs, output):
    logits, pos, var, seed, _, inv_tau, clip, backend = inputs
    mean, variance, row_max, log_sum, noise = output
    ctx.save_for_backward(logits, pos, var, seed, mean, variance, row_max, log_sum, noise)
    ctx.inv_tau, ctx.clip, ctx.backend = inv_tau, clip, backend
    ctx.mark_non_differentiable(row_max, log_sum, noise)


def _backward(ctx, grad_mean, grad_var, _grad_max, _grad_log_sum, _grad_noise):
    logits, pos, var, seed, mean, variance, row_max, log_sum, noise = ctx.saved_tensors
    need_pos, need_var = ctx.needs_input_grad[1:3]
    zero = lambda g, like: torch.zeros_like(like) if g is None else g.contiguous()
    sample = mean + variance.sqrt() * noise if ctx.clip > 0 else mean.new_empty(0)
    grad_logits, grad_pos, grad_var_basis = gumbel_moments_backward(
        logits, pos, var, seed, ctx.inv_tau, row_max, log_sum, mean, variance, zero(grad_mean, mean),
        zero(grad_var, variance), need_pos, need_var, sample, ctx.clip, ctx.backend)
    if pos.shape[0] == 1:  # one basis broadcast over the batch
        grad_pos = grad_pos.sum(0, keepdim=True) if need_pos else None
        grad_var_basis = grad_var_basis.sum(0, keepdim=True) if need_var else None
    return (grad_logits, grad_pos if need_pos else None, grad_var_basis if need_var else None,
            None, None, None, None, None)


gumbel_moments.register_autograd(_backward, setup_context=_setup_backward)
