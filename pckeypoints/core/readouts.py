"""Readouts: one keypoint estimate from a probability map over a Gaussian point basis.

A map π over the points y_i of a cloud, read with its bases, is the mixture
p(y) = Σ_i π_i N(y; y_i, σ_i² I). Four ways to turn it into one point:

- ``"expectation"``: the mixture mean Σ_i π_i y_i (soft-argmax; what the soft-argmax loss trains).
- ``"snapped"``: the expectation moved to its nearest cloud point.
- ``"top"``: the point of highest probability, argmax_i π_i.
- ``"mode"``: the highest mode of the mixture density
  (:meth:`~pckeypoints.core.basis.PointBasis.log_density`), found by mean-shift from the most probable points.

All functions take probabilities ``(B, K, N)`` (zero at padding) and the basis positions ``(B, N, D)``
(``B`` may be 1 and broadcast); ``mask`` ``(B, N)`` marks real points.
"""
from __future__ import annotations

from torch import Tensor

from pckeypoints.choices import READOUTS
from pckeypoints.core.basis import PointBasis
from pckeypoints.ops.neighbors import knn_points, pad_far
from pckeypoints.errors import InputError



def nearest_point(query: Tensor, basis: PointBasis) -> Tensor:
    """Index ``(B, K)`` of the real basis point nearest to each ``query (B, K, D)``."""
    pos = basis.pos.expand(query.shape[0], -1, -1)
    if basis.mask is not None:
        pos = pad_far(pos, basis.mask)
    return knn_points(query, pos, 1).index[..., 0]


def points_at(index: Tensor, basis: PointBasis) -> Tensor:
    """Positions ``(B, K, D)`` of the basis points ``index (B, K)``."""
    pos = basis.pos.expand(index.shape[0], -1, -1)
    return pos.gather(1, index[..., None].expand(-1, -1, pos.shape[-1]))


def mixture_mode(probs: Tensor, basis: PointBasis, candidates: int = 5, steps: int = 30) -> Tensor:
    """Highest mode ``(B, K, D)`` of the Gaussian mixture Σ_i π_i N(y_i, σ_i² I).

    Mean-shift from the ``candidates`` most probable points: y ← Σ_i w_i y_i / Σ_i w_i with
    w_i = π_i N(y; y_i, σ_i² I) / σ_i², the fixed point of ∇p(y) = 0, which climbs the density
    monotonically. Of the ``candidates`` end points the one of highest density wins.
    """
    if basis.kind != "gaussian":
        raise InputError(f"the mixture mode needs a Gaussian basis, got {basis.kind!r}")
    b, k, n = probs.shape
    top = probs.topk(min(candidates, n), dim=-1).indices  # (B, K, M)
    pos = basis.pos.expand(b, -1, -1)
    y = pos.gather(1, top.reshape(b, -1, 1).expand(-1, -1, pos.shape[-1])).view(b, k, -1, pos.shape[-1])
    inv_var = basis.bandwidth[..., 0].expand(b, n).square().reciprocal()  # (B, N), isotropic σ_i
    for _ in range(steps):
        weights = (basis.log_components(y, probs) + inv_var.log()[:, None, None]).softmax(-1)  # (B, K, M, N)
        y = weights @ pos[:, None]
    best = basis.log_density(y, probs).argmax(-1)  # (B, K)
    return y.gather(2, best[..., None, None].expand(-1, -1, 1, y.shape[-1])).squeeze(2)


def read_out(probs: Tensor, basis: PointBasis, readout: str = "expectation") -> Tensor:
    """The keypoint ``(B, K, D)`` of each map by ``readout`` (one of :data:`READOUTS`)."""
    if readout == "expectation":
        return probs @ basis.pos
    if readout == "snapped":
        return points_at(nearest_point(probs @ basis.pos, basis), basis)
    if readout == "top":
        return points_at(probs.argmax(-1), basis)
    if readout == "mode":
        return mixture_mode(probs, basis)
    raise InputError(f"readout must be one of {READOUTS}, got {readout!r}")
