"""The dataset a :class:`~pckeypoints.config.TrainConfig` names: KeypointNet or a folder of your own models."""
from __future__ import annotations

from torch.utils.data import Dataset, Subset

from ..config import TrainConfig
from . import transforms
from .folder import KeypointFolder
from .keypointnet import KeypointNet


def dataset_from_config(config: TrainConfig, split: str | None, train: bool) -> Dataset:
    """Normalised items of ``split`` (``None``: every model) of ``config.data`` (a
    :class:`~pckeypoints.data.KeypointFolder`) or else of KeypointNet's ``config.category``; ``train`` adds
    the config's augmentations; at most ``config.max_models`` items."""
    augment = augmentation(config) if train else None
    if config.data is not None:
        dataset = KeypointFolder(config.data, split, normalize=True, transform=augment, min_points=config.knn_k + 1)
    else:
        dataset = KeypointNet(config.data_root, config.category, split, normalize=True, transform=augment)
    if config.max_models is not None and config.max_models < len(dataset):
        dataset = Subset(dataset, range(config.max_models))
    return dataset


def source_of(dataset: Dataset) -> KeypointNet | KeypointFolder:
    """The :class:`KeypointNet` or :class:`KeypointFolder` under a :func:`dataset_from_config` result."""
    return dataset.dataset if isinstance(dataset, Subset) else dataset


def augmentation(config: TrainConfig) -> transforms.Compose | None:
    """The training augmentations of ``config`` (rotation about up, scaling, jitter), or ``None``."""
    steps = []
    if config.rotate:
        steps.append(transforms.RandomRotateUp())
    if (config.scale_lo, config.scale_hi) != (1.0, 1.0):
        steps.append(transforms.RandomScale(config.scale_lo, config.scale_hi))
    if config.jitter > 0:
        steps.append(transforms.Jitter(config.jitter, clip=5 * config.jitter))
    return transforms.Compose(steps) if steps else None
