"""Supervised keypoints: one :class:`~pckeypoints.models.KeypointDetector` per KeypointNet category.

The network sees normalised clouds (unit radius); predictions are mapped back with each item's
``center`` and ``scale`` so that every metric is in the dataset's own units, where KeypointNet's
PCK@0.01 threshold is defined. The predicted keypoint is ``eval.readout`` of its map
(:mod:`pckeypoints.core.readouts`); its confidence is the map's probability that the keypoint lies within
PCK@0.01 of it (:func:`~pckeypoints.metrics.within_radius_probability`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from pckeypoints.config import TrainConfig
from pckeypoints.data.from_config import dataset_from_config, source_of
from pckeypoints.errors import ConfigError, ReadError
from pckeypoints.evaluation.inference import collect_readouts, evaluate_model, predict_keypoints
from pckeypoints.core.losses import KeypointLoss
from pckeypoints.metrics.results import COARSE_THRESHOLD, KeypointEvaluation
from pckeypoints.metrics.summary import is_correct, keypoint_records, records_metrics
from pckeypoints.models import KeypointDetector
from pckeypoints.evaluation.report import gallery_items, gallery_title, markdown_table, save_records, write_metrics


class SupervisedTask:
    """Supervised semantic keypoints (see :class:`pckeypoints.train.tasks.Task`)."""

    def dataset(self, config: TrainConfig, split: str, train: bool) -> Dataset:
        return dataset_from_config(config, split, train)

    def configure(self, config: TrainConfig, dataset: Dataset) -> TrainConfig:
        num_keypoints = int(source_of(dataset).num_keypoints)
        source = source_of(dataset)
        num_keypoints = int(source.num_keypoints)
        if config.model.num_keypoints not in (None, num_keypoints):
            raise ConfigError(f"{config.data.label} has {num_keypoints} semantic keypoints, config field "
                              f"model.num_keypoints asks for {config.model.num_keypoints}")
        ids = getattr(source, "semantic_ids", None)  # own data: the annotated ids, not always 0..K-1
        ids = None if ids is None or ids == list(range(num_keypoints)) else list(ids)
        if config.model.semantic_ids not in (None, ids):
            raise ConfigError(f"the data's semantic ids {ids} are not the config's {config.model.semantic_ids}")
        if config.data.folder is not None:  # own data: every keypoint the model predicts is one it was trained on
            untrained = np.flatnonzero(~source.annotated(getattr(dataset, "indices", None)))
            if len(untrained):
                semantic_id = (ids or list(range(num_keypoints)))[untrained[0]]
                raise ReadError(f"{config.data.folder}: semantic id {semantic_id} is annotated in no model of the "
                                f"train split ({len(untrained)} such id(s)); annotate it in a train model or remove it")
        return config.replace(num_keypoints=num_keypoints, semantic_ids=ids)

    def build_model(self, config: TrainConfig) -> nn.Module:
        return KeypointDetector(**config.model.arguments())

    def loss(self, model: nn.Module, batch: dict, config: TrainConfig, tau: float) -> tuple[Tensor, dict[str, float]]:
        # no value checks inside the step: the datasets checked their clouds when they read them
        maps = model(batch["points"], validate=False)
        return self.criterion(config, validate=False)(maps, batch["keypoints"], mask=batch["mask"], tau=tau), {}

    @staticmethod
    def criterion(config: TrainConfig, validate: bool = True) -> KeypointLoss:
        """The :class:`~pckeypoints.core.losses.KeypointLoss` of the ``[loss]`` section (``validate``: its value
        checks of every call)."""
        loss = config.loss
        return KeypointLoss(loss.method, metric=loss.metric, num_samples=loss.num_samples, reg_weight=loss.reg_weight,
                            target_sigma=loss.target_sigma, sampler=loss.sampler, gumbel=loss.gumbel,
                            clipped_integral=loss.clipped_integral, validate=validate)

    def evaluate(self, model: nn.Module, loader: DataLoader, config: TrainConfig) -> KeypointEvaluation:
        """Euclidean PCK of ``eval.readout`` (cheap: run after every epoch to select ``best.pt``)."""
        predictions = collect_readouts(model, loader, (config.eval.readout,), temperature=config.eval.temperature)
        return records_metrics(keypoint_records(predictions, geodesic=False), config.eval.readout)

    def report(self, model: nn.Module, loader: DataLoader, config: TrainConfig, out_dir: Path,
               figures=None) -> KeypointEvaluation:
        """Every readout's metrics (:mod:`pckeypoints.metrics.summary`) in ``metrics.md``/``metrics.json`` and
        the per-keypoint records in ``records.pt`` in ``out_dir``; with ``figures`` (the :mod:`viz` module or
        anything with its ``plot_pck_curves``, ``plot_calibration`` and ``render_gallery``) also
        ``pck_curve.png``, ``calibration.png`` and ``gallery.png`` (the first 8 clouds)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        readout = config.eval.readout
        result = evaluate_model(model, loader, readout, temperature=config.eval.temperature)
        predictions, records, metrics = result.predictions, result.records, result.metrics
        title = f"{config.data.label} {config.loss.method}"
        save_records({"records": records, "model_id": predictions["model_id"]}, out_dir / "records.pt")
        write_metrics(out_dir, config, metrics.to_dict(), title, self.summary(metrics, config))
        if figures is not None:
            figures.plot_pck_curves({title: (list(metrics.curve), list(metrics.curve.values()))},
                                    out_dir / "pck_curve.png", title=f"PCK on {config.data.label}")
            figures.plot_calibration(records[f"within/{readout}"].numpy(),
                                     is_correct(records, readout, threshold=metrics.threshold).numpy(),
                                     out_dir / "calibration.png", before=records[f"within_raw/{readout}"].numpy())
            figures.render_gallery(gallery_items(predictions, readout, 8), out_dir / "gallery.png",
                                   title=gallery_title(config, loader, readout), legend=True, if_available=True)
        return metrics

    def summary(self, metrics: KeypointEvaluation, config: TrainConfig) -> str:
        """One row per readout (``*``: the run's ``eval.readout``): Euclidean and official (geodesic) PCK@t,
        PCK@0.05, mean error and the ECE of the within-t probability at the run's temperature and at T = 1."""
        t, coarse = f"{metrics.threshold:.2f}", f"{COARSE_THRESHOLD:.2f}"
        rows = [[r + ("*" if r == config.eval.readout else ""),
                 *(math.nan if v is None else v for v in (s.pck, s.geo_pck, s.pck_coarse, s.mean_error, s.ece,
                                                         s.ece_raw))]
                for r, s in metrics.readouts.items()]
        header = ["readout", f"pck@{t}", f"geo_pck@{t} (official)", f"pck@{coarse}", "mean_error", "ece",
                  "ece (T = 1)"]
        return markdown_table(header, rows) + (
            f"\npck: Euclidean d <= t; geo_pck: KeypointNet's official geodesic d < t from the estimate snapped "
            f"to the cloud; distances in the dataset's units; ece: of the confidence P(within {t}) at the "
            f"temperature T = {config.eval.temperature:.3g} of `pckeypoints calibrate`, and at T = 1.\n")

    def predict(self, model: nn.Module, points: Tensor, config: TrainConfig) -> dict:
        """See :func:`~pckeypoints.evaluation.inference.predict_keypoints`."""
        return predict_keypoints(model, points, config)
