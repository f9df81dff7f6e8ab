"""Report pieces shared by the tasks: a metrics table in markdown and gallery items for :mod:`viz`."""
from __future__ import annotations

import math

import numpy as np

from .evaluation import THRESHOLD


def metrics_markdown(title: str, metrics: dict[str, float]) -> str:
    """The metrics of one model as a markdown table."""
    def fmt(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.4f}"

    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {fmt(value)} |" for name, value in metrics.items()]
    return "\n".join(lines) + "\n"


def gallery_items(predictions: dict, readout: str, count: int) -> list[dict]:
    """Up to ``count`` clouds of :func:`~pckeypoints.evaluation.collect_readouts` with their annotated and
    ``readout`` keypoints, for :func:`viz.render_gallery`."""
    items = []
    for i in range(min(count, len(predictions["model_id"]))):
        mask = predictions["mask"][i]
        pred = predictions["pred"][readout][i]
        error = (pred - predictions["target"][i])[mask].norm(dim=-1)
        items.append({
            "points": predictions["points"][i].numpy(),
            "keypoints": predictions["target"][i][mask].numpy(),
            "pred": pred[mask].numpy(),
            "semantic_ids": np.flatnonzero(mask.numpy()),
            "title": f"{predictions['model_id'][i][:8]} PCK {float((error <= THRESHOLD).double().mean()):.2f}",
        })
    return items
