"""The dataset a :class:`~pckeypoints.config.TrainConfig` names: KeypointNet or a folder of your own models."""
from __future__ import annotations

from torch.utils.data import Dataset, Subset

from pckeypoints.config import AugmentConfig, TrainConfig
from pckeypoints.data import transforms
from pckeypoints.data.folder import KeypointFolder
from pckeypoints.data.keypointnet import KeypointNet


def dataset_from_config(config: TrainConfig, split: str | None, train: bool) -> Dataset:
    """Normalised items of ``split`` (``None``: every model) of ``data.folder`` (a
    :class:`~pckeypoints.data.KeypointFolder`) or else of KeypointNet's ``data.category``; ``train`` adds
    the ``[augment]`` transforms; at most ``data.max_models`` items."""
    data = config.data
    augment = augmentation(config.augment) if train else None
    if data.folder is not None:
        dataset = KeypointFolder(data.folder, split, normalize=True, transform=augment,
                                 min_points=config.model.knn_k + 1)
    else:
        dataset = KeypointNet(data.root, data.category, split, normalize=True, transform=augment)
    if data.max_models is not None and data.max_models < len(dataset):
        dataset = Subset(dataset, range(data.max_models))
    return dataset


def source_of(dataset: Dataset) -> KeypointNet | KeypointFolder:
    """The :class:`KeypointNet` or :class:`KeypointFolder` under a :func:`dataset_from_config` result."""
    return dataset.dataset if isinstance(dataset, Subset) else dataset


def augmentation(augment: AugmentConfig) -> transforms.Compose | None:
    """The training transforms of ``augment`` (rotation about up, scaling, jitter), or ``None``."""
    steps = []
    if augment.rotate:
        steps.append(transforms.RandomRotateUp())
    if (augment.scale_lo, augment.scale_hi) != (1.0, 1.0):
        steps.append(transforms.RandomScale(augment.scale_lo, augment.scale_hi))
    if augment.jitter > 0:
        steps.append(transforms.Jitter(augment.jitter, clip=5 * augment.jitter))
    return transforms.Compose(steps) if steps else None
