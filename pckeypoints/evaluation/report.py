"""Report pieces shared by the tasks: metrics tables in markdown and gallery items for :mod:`viz`."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from torch.utils.data import DataLoader

from pckeypoints.config import TrainConfig
from pckeypoints.data.from_config import source_of
from pckeypoints.evaluation.inference import THRESHOLD


def save_records(records, path) -> None:
    """``torch.save`` ``records`` to ``path`` through a buffer, so that a failed write (disk full) is the
    ``OSError`` that the other report files raise, not the ``RuntimeError`` of torch's file writer."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(records, buffer)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


def markdown_table(header: list[str], rows: list[list], align: bool = True) -> str:
    """A markdown table, with ``align`` padded to aligned columns (readable as text too); floats with 4
    decimals, NaN as n/a."""
    def fmt(value) -> str:
        if isinstance(value, float):
            return "n/a" if math.isnan(value) else f"{value:.4f}"
        return str(value)

    cells = [header, *([fmt(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) if align else 0 for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) if align else "---" for w in widths) + "|")
    return "\n".join(lines) + "\n"


def metrics_markdown(title: str, metrics: dict[str, float], summary: str = "") -> str:
    """The metrics of one model as markdown: ``summary`` (e.g. :meth:`~pckeypoints.train.tasks.Task.summary`) first,
    then every metric in a table."""
    full = markdown_table(["metric", "value"], [[name, float(value)] for name, value in metrics.items()],
                          align=False)
    return f"# {title}\n\n" + (f"{summary}\n## All metrics\n\n" if summary else "") + full


def write_metrics(out_dir: Path, config: TrainConfig, metrics: dict[str, float], title: str, summary: str) -> None:
    """A report's ``metrics.json`` (``{"config": ..., "metrics": metrics}``, the flat ``to_dict()`` of a result of
    :mod:`pckeypoints.metrics.results`) and ``metrics.md`` (:func:`metrics_markdown`) in ``out_dir``."""
    (out_dir / "metrics.json").write_text(json.dumps({"config": config.to_dict(), "metrics": metrics}, indent=2))
    (out_dir / "metrics.md").write_text(metrics_markdown(title, metrics, summary))


def gallery_title(config: TrainConfig, loader: DataLoader, readout: str | None = None) -> str:
    """``"<run name>: <mode> <method> on <data> <split> split[, <readout> readout]"``: the model and the data of
    a report's gallery."""
    split = getattr(source_of(loader.dataset), "split", None) or "every"
    text = f"{config.run_name}: {config.mode} {config.loss.method} on {config.data.label} {split} split"
    return text + (f", {readout} readout" if readout else "")


def gallery_items(predictions: dict, readout: str, count: int) -> list[dict]:
    """Up to ``count`` clouds of :func:`~pckeypoints.evaluation.inference.collect_readouts` with their annotated and
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
