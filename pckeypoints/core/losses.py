"""Keypoint losses over probability maps, with masks for missing keypoints.

Shapes: logits ``(B, K, N)``, targets ``(B, K, D)``, mask ``(B, K)`` (True = annotated),
samples ``(B, K, Ns, D)``. Every loss returns the mean over annotated keypoints (0 with a
gradient when there are none).
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from pckeypoints.choices import GUMBEL_FORMS, METHODS, METRICS, SAMPLERS
from pckeypoints.core.argmax import sampling_argmax, soft_argmax
from pckeypoints.core.basis import PointBasis
from pckeypoints.errors import InputError
from pckeypoints.core.head import KeypointMaps, RaggedKeypointMaps
from pckeypoints.validation import check_finite



def distance(a: Tensor, b: Tensor, metric: str = "l1") -> Tensor:
    """Distance over the last axis: ``"l1"`` Σ_d |a_d - b_d|, ``"l2"`` Euclidean."""
    diff = a - b
    if metric == "l1":
        return diff.abs().sum(-1)
    if metric == "l2":
        return diff.square().sum(-1).sqrt()
    raise InputError(f"metric must be one of {METRICS}, got {metric!r}")


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values (B, K)`` over the entries where ``mask`` is True.

    Examples:
        >>> masked_mean(torch.tensor([[1.0, 2.0], [3.0, 40.0]]), torch.tensor([[True, True], [True, False]]))
        tensor(2.)
    """
    if mask is None:
        return values.mean()
    return torch.where(mask, values, 0).sum() / mask.sum().clamp(min=1)


def check_keypoint_target(
    target: Tensor, mask: Tensor | None, num_keypoints: int, dim: int | None = None, validate: bool = True
) -> None:
    """Raise unless ``target`` is ``(B, K, D)`` with a bool ``mask (B, K)``, finite where annotated."""
    d = "D" if dim is None else str(dim)
    if target.dim() != 3 or target.shape[1] != num_keypoints or (dim is not None and target.shape[2] != dim):
        raise InputError(f"target must be (B, K={num_keypoints}, {d}) keypoints, got shape {tuple(target.shape)}")
    if mask is not None and (mask.dtype != torch.bool or mask.shape != target.shape[:2]):
        raise InputError(
            f"mask must be bool {tuple(target.shape[:2])} (True = annotated), got {mask.dtype} {tuple(mask.shape)}"
        )
    if validate:
        check_finite(target if mask is None else target[mask], "target keypoints",
                     "values (mark missing keypoints with the mask)")


def expectation_of_error(
    samples: Tensor, target: Tensor, mask: Tensor | None = None, *, metric: str = "l1", validate: bool = True
) -> Tensor:
    """Sampling-argmax loss: mean over samples of d(y_s, y_t), ``samples (B, K, Ns, D)``.

    Examples:
        >>> samples = torch.tensor([[[[0.0, 0.0], [2.0, 0.0]]]])  # (B, K, Ns, D) = (1, 1, 2, 2)
        >>> expectation_of_error(samples, torch.tensor([[[1.0, 1.0]]]))
        tensor(2.)
    """
    check_keypoint_target(target, mask, samples.shape[1], samples.shape[-1], validate)
    return masked_mean(distance(samples, target[:, :, None], metric).mean(-1), mask)


def error_of_expectation(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, *, metric: str = "l1", validate: bool = True
) -> Tensor:
    """Soft-argmax loss: d(Σ π_i y_i, y_t) for predictions ``(B, K, D)``."""
    check_keypoint_target(target, mask, pred.shape[1], pred.shape[-1], validate)
    return masked_mean(distance(pred, target, metric), mask)


def discrete_expectation(
    logits: Tensor,
    basis: PointBasis,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    metric: str = "l1",
    validate: bool = True,
) -> Tensor:
    """Expected distance over the discrete map, Σ_i π_i d(y_t, y_i) (paper Eq. 4).

    Examples:
        >>> basis = PointBasis.grid((3,), kind="uniform")  # points 0, 1, 2
        >>> logits = torch.tensor([[[0.2, 0.5, 0.3]]]).log()
        >>> round(discrete_expectation(logits, basis, torch.tensor([[[0.5]]])).item(), 4)
        0.8
    """
    check_keypoint_target(target, mask, logits.shape[1], basis.dim, validate)
    probs = basis.probabilities(logits)
    dist = distance(basis.pos[:, None], target[:, :, None], metric)  # (B, K, N)
    return masked_mean((probs * dist).sum(-1), mask)


def variance_regularization(
    logits: Tensor, basis: PointBasis, target_variance: float, mask: Tensor | None = None
) -> Tensor:
    """Nibali et al.'s variance loss Σ_d (Var_d[π] - σ_t²)² with Var_d the map's variance
    Σ_i π_i (y_id - μ_d)² along axis d."""
    probs = basis.probabilities(logits)
    mean = probs @ basis.pos  # (B, K, D)
    second = probs @ basis.pos.square()
    var = (second - mean.square()).clamp(min=0)
    return masked_mean((var - target_variance).square().sum(-1), mask)


def js_regularization(
    logits: Tensor,
    basis: PointBasis,
    target: Tensor,
    target_sigma: float,
    mask: Tensor | None = None,
    *,
    validate: bool = True,
) -> Tensor:
    """Nibali et al.'s distribution loss: Jensen-Shannon divergence between π and the Gaussian
    N(y_t, target_sigma² I) evaluated on the basis positions and normalised over each cloud (nats).
    """
    check_keypoint_target(target, mask, logits.shape[1], basis.dim, validate)
    log_p = basis.mask_logits(logits).log_softmax(-1)
    sq = (basis.pos[:, None] - target[:, :, None]).square().sum(-1)  # (B, K, N)
    log_q = basis.mask_logits(-sq / (2 * target_sigma**2)).log_softmax(-1)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2)

    def kl_to_m(log_a: Tensor) -> Tensor:
        a = log_a.exp()
        return torch.where(a > 0, a * (log_a - log_m), 0).sum(-1)

    return masked_mean(0.5 * (kl_to_m(log_p) + kl_to_m(log_q)), mask)


class KeypointLoss(nn.Module):
    """Training objective of a keypoint map, by method.

    - ``"soft"``: error of the expectation of soft-argmax.
    - ``"soft+var"``: ... + ``reg_weight`` · variance regularisation towards ``target_sigma``².
    - ``"soft+js"``: ... + ``reg_weight`` · JS regularisation towards N(y_t, ``target_sigma``²).
    - ``"discrete"``: discrete expectation of the error, Σ π_i d(y_t, y_i).
    - ``"sampling"``: expectation of the error over ``num_samples`` sampling-argmax samples at the
      temperature ``tau`` passed to each call (from a :mod:`~pckeypoints.core.schedules` schedule).
    - ``"sampling+js"``: ... + ``reg_weight`` · JS regularisation towards N(y_t, ``target_sigma``²).

    Args:
        method, metric: see above; metric ``"l1"`` or ``"l2"``.
        num_samples: Ns of ``"sampling"``.
        reg_weight, target_sigma: the regularisers' weight and target σ (0.02: twice the fixed basis σ of
            the default config, in the units of clouds of radius 1).
        sampler: sampling-argmax sampler (see :func:`~pckeypoints.core.argmax.sampling_argmax`).
        gumbel: Gumbel-softmax form of the sampling methods: ``"paper"`` softmax((l + g) / τ) or
            ``"official"`` softmax(l + g / τ), the authors' public code.
        clipped_integral: the authors' clipped-integral gradient of the weighted sum
            (:func:`~pckeypoints.core.argmax.clipped_weighted_sum`) for the soft and sampling methods;
            sampling then needs the ``"naive"`` or ``"fused"`` sampler (``"auto"`` picks one).
        validate: check the values of every call's input (finite logits and annotated targets);
            shapes and dtypes are always checked.

    Shapes:
        - **input:** logits ``(B, K, N)`` and their basis, or the maps of a
          :class:`~pckeypoints.core.head.KeypointHead` (dense or ragged); target ``(B, K, D)``, mask
          ``(B, K)`` bool (True = annotated)
        - **output:** scalar, the mean over annotated keypoints

    Examples:
        >>> basis = PointBasis.grid((8,), kind="triangular")
        >>> logits, target = torch.zeros(1, 2, 8), torch.tensor([[[2.0], [5.0]]])
        >>> loss = KeypointLoss("sampling", num_samples=4)
        >>> loss(logits, target, basis=basis, tau=0.5, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([])
        >>> KeypointLoss("soft")(logits, target, basis=basis)
        tensor(1.5000)
        >>> from pckeypoints.core.head import KeypointReadout
        >>> maps = KeypointReadout(knn_k=2)(torch.zeros(1, 2, 8), basis.pos)  # what a head returns
        >>> KeypointLoss("soft")(maps, target)
        tensor(1.5000)
    """

    def __init__(
        self,
        method: str = "sampling",
        *,
        metric: str = "l1",
        num_samples: int = 30,
        reg_weight: float = 1.0,
        target_sigma: float = 0.02,
        sampler: str = "auto",
        validate: bool = True,
        gumbel: str = "paper",
        clipped_integral: bool = False,
    ):
        super().__init__()
        if method not in METHODS:
            raise InputError(f"method must be one of {METHODS}, got {method!r}")
        if metric not in METRICS:
            raise InputError(f"metric must be one of {METRICS}, got {metric!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise InputError(f"num_samples must be an integer >= 1, got {num_samples!r}")
        if not _is_real(target_sigma) or not (math.isfinite(target_sigma) and target_sigma > 0):
            raise InputError(f"target_sigma must be a finite number > 0, got {target_sigma!r}")
        if not _is_real(reg_weight) or not (math.isfinite(reg_weight) and reg_weight >= 0):
            raise InputError(f"reg_weight must be a finite number >= 0, got {reg_weight!r}")
        if gumbel not in GUMBEL_FORMS:
            raise InputError(f"gumbel must be one of {GUMBEL_FORMS}, got {gumbel!r}")
        if sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if gumbel != "paper" and not method.startswith("sampling"):
            raise InputError(f"gumbel applies to the sampling methods, not {method!r}")
        if clipped_integral and method == "discrete":
            raise InputError("clipped_integral applies to the soft and sampling methods, not 'discrete'")
        if clipped_integral and method.startswith("sampling") and sampler == "gaussian":
            raise InputError("clipped_integral needs the 'naive' or 'fused' sampler, got 'gaussian'")
        self.gumbel, self.clipped_integral = gumbel, clipped_integral
        self.method, self.metric, self.num_samples = method, metric, num_samples
        self.reg_weight, self.target_sigma, self.sampler, self.validate = reg_weight, target_sigma, sampler, validate

    def forward(
        self,
        maps_or_logits: Tensor | KeypointMaps | RaggedKeypointMaps,
        target: Tensor,
        mask: Tensor | None = None,
        *,
        basis: PointBasis | None = None,
        tau: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``loss(maps, target, mask=None, *, tau, generator=None)`` with the maps a head returns (dense or
        ragged; they carry their basis), or ``loss(logits, target, mask=None, *, basis, tau, generator=None)``
        with raw logits ``(B, K, N)``. ``tau``: the sampling methods' temperature of this step."""
        logits, basis = _logits_and_basis(maps_or_logits, basis)
        if not isinstance(target, Tensor) or not (mask is None or isinstance(mask, Tensor)):
            raise TypeError(f"loss(maps_or_logits, target, mask=None, *, basis=None, tau=None, generator=None) takes "
                            f"tensors for target and mask, got {type(target).__name__} and {type(mask).__name__}")
        basis.check_logits(logits, self.validate)
        check_keypoint_target(target, mask, logits.shape[1], basis.dim, self.validate)
        if target.shape[0] != logits.shape[0]:
            raise InputError(f"target has batch size {target.shape[0]} but logits have {logits.shape[0]}")
        if self.method.startswith("sampling"):
            if tau is None:
                raise InputError("the sampling loss needs the temperature of this step: loss(..., tau=schedule.value)")
            samples = sampling_argmax(logits, basis, self.num_samples, tau, generator=generator, sampler=self.sampler,
                                      validate=False, gumbel=self.gumbel, clipped=self.clipped_integral)
            loss = expectation_of_error(samples, target, mask, metric=self.metric, validate=False)
        elif self.method == "discrete":
            return discrete_expectation(logits, basis, target, mask, metric=self.metric, validate=False)
        else:
            loss = error_of_expectation(soft_argmax(logits, basis, clipped=self.clipped_integral), target, mask,
                                        metric=self.metric, validate=False)
        if self.method == "soft+var":
            loss = loss + self.reg_weight * variance_regularization(logits, basis, self.target_sigma**2, mask)
        elif self.method.endswith("+js"):
            loss = loss + self.reg_weight * js_regularization(logits, basis, target, self.target_sigma, mask,
                                                                 validate=False)
        return loss

    def extra_repr(self) -> str:
        reg = f", reg_weight={self.reg_weight}, target_sigma={self.target_sigma}"
        sampling = f", num_samples={self.num_samples}" + (f", gumbel={self.gumbel!r}" if self.gumbel != "paper" else "")
        extra = {"sampling": sampling, "sampling+js": sampling + reg, "soft+var": reg, "soft+js": reg}
        clipped = ", clipped_integral=True" if self.clipped_integral else ""
        return f"method={self.method!r}, metric={self.metric!r}" + extra.get(self.method, "") + clipped


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _logits_and_basis(maps_or_logits, basis) -> tuple[Tensor, PointBasis]:
    """The dense logits ``(B, K, N)`` and basis of :meth:`KeypointLoss.forward`'s first argument: maps carry
    their basis, raw logits need ``basis=``."""
    if isinstance(maps_or_logits, (KeypointMaps, RaggedKeypointMaps)):
        if basis is not None:
            raise TypeError("maps carry their basis: loss(maps, target, mask, tau=...) takes no basis=")
        maps = maps_or_logits.to_dense() if isinstance(maps_or_logits, RaggedKeypointMaps) else maps_or_logits
        return maps.logits, maps.basis
    if not isinstance(basis, PointBasis):
        raise TypeError("raw logits need their basis by keyword: loss(logits, target, mask, basis=basis, tau=...), "
                        f"got basis={type(basis).__name__}")
    return maps_or_logits, basis
