"""Run a keypoint detector over a dataset and collect what every metric needs, in dataset units.

For each cloud and keypoint: the estimate of every :mod:`~pckeypoints.readouts` readout, the map's peak
probability, and for every readout the mixture's own probability that the target lies within the PCK
radius of it (:func:`~pckeypoints.metrics.within_radius_probability`). :mod:`pckeypoints.metrics.summary`
turns the result into numbers.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .metrics.calibration import within_radius_probability
from .readouts import READOUTS, read_out

#: The PCK threshold of the tables, in dataset units (KeypointNet's PCK@0.01).
THRESHOLD = 0.01


@torch.no_grad()
def collect_readouts(model: nn.Module, loader: DataLoader, readouts: tuple[str, ...] = READOUTS,
                        threshold: float = THRESHOLD, progress: bool = False) -> dict:
    """Run ``model`` over ``loader``: a detector returning :class:`~pckeypoints.head.KeypointMaps`, or a
    model whose output has such ``maps``.

    Returns a dict, everything on the CPU and in the dataset's original coordinates:
    ``pred`` ``{readout: (M, K, 3)}``, ``within`` ``{readout: (M, K)}`` P(target within ``threshold`` of
    that estimate) under the map's mixture, ``peak (M, K)`` max π, ``target (M, K, 3)``, ``mask (M, K)``,
    ``points (M, N, 3)``, ``point_index (M, K)`` and ``model_id`` (M strings).
    """
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list] = {k: [] for k in ("peak", "target", "mask", "points", "point_index")}
    pred: dict[str, list] = {r: [] for r in readouts}
    within: dict[str, list] = {r: [] for r in readouts}
    model_ids: list[str] = []
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        output = model(batch["points"].to(device))
        maps = getattr(output, "maps", output)
        probs, basis = maps.probabilities, maps.basis
        scale, center = batch["scale"].double(), batch["center"].double()
        sigma = basis.scale[..., 0].expand(probs.shape[0], -1)
        for readout in readouts:
            estimate = read_out(probs, basis, readout)
            pred[readout].append(estimate.cpu().double() * scale[:, None, None] + center[:, None])
            within[readout].append(within_radius_probability(estimate, probs, basis.pos, sigma,
                                                             threshold / scale.to(device)).cpu())
        parts["peak"].append(probs.amax(-1).cpu())
        parts["target"].append(batch["keypoints"].double() * scale[:, None, None] + center[:, None])
        parts["points"].append(batch["points"].double() * scale[:, None, None] + center[:, None])
        parts["mask"].append(batch["mask"])
        parts["point_index"].append(batch["point_index"])
        model_ids += batch["model_id"]
    if not model_ids:
        raise ValueError("cannot evaluate on an empty split")
    return {**{k: torch.cat(v) for k, v in parts.items()},
            "pred": {r: torch.cat(v) for r, v in pred.items()},
            "within": {r: torch.cat(v) for r, v in within.items()},
            "model_id": model_ids}

