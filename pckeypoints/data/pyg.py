"""PyTorch Geometric view of a keypoint dataset (:class:`KeypointNet` or :class:`KeypointFolder`).

>>> from torch_geometric.loader import DataLoader
>>> loader = DataLoader(PyGKeypoints(KeypointFolder("my_chairs", "train", normalize=True)), batch_size=8)

A batch of ``B`` graphs has ``pos (ΣN, 3)`` and ``batch (ΣN,)`` (ragged, as PyG's point-cloud layers expect) and
``y (B, K, 3)``, ``mask (B, K)``, ``point_index (B, K)`` (per-cloud indices, -1 where missing), ``center (B, 3)``,
``scale (B,)`` and ``model_id`` (a list): what :class:`~pckeypoints.head.KeypointHead` ``(x, pos, batch)`` and
:class:`~pckeypoints.losses.KeypointLoss` take.
"""
from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.data import Dataset as PyGDataset

__all__ = ["KeypointData", "PyGKeypoints"]


class KeypointData(Data):
    """One cloud with its keypoints; batching stacks ``point_index (1, K)`` rows unchanged (indices into each
    graph's own points), where PyG would offset and concatenate ``*index`` attributes like ``edge_index``."""

    def __inc__(self, key: str, value: Any, *args, **kwargs) -> Any:
        return 0 if key == "point_index" else super().__inc__(key, value, *args, **kwargs)

    def __cat_dim__(self, key: str, value: Any, *args, **kwargs) -> Any:
        return 0 if key == "point_index" else super().__cat_dim__(key, value, *args, **kwargs)


class PyGKeypoints(PyGDataset):
    """Items of ``dataset`` (dicts as :class:`~pckeypoints.data.KeypointNet` returns) as :class:`KeypointData`.

    Args:
        dataset: a :class:`~pckeypoints.data.KeypointNet`, :class:`~pckeypoints.data.KeypointFolder` or any
            dataset of such items (normalise and augment there, so that keypoints follow the points).
        transform: a PyG transform applied to each :class:`KeypointData`.
    """

    def __init__(self, dataset: Dataset, transform=None):
        super().__init__(None, transform)
        self.dataset = dataset

    def len(self) -> int:
        return len(self.dataset)

    def get(self, idx: int) -> KeypointData:
        item = self.dataset[idx]
        return KeypointData(pos=item["points"], y=item["keypoints"][None], mask=item["mask"][None],
                            point_index=item["point_index"][None], center=item["center"][None],
                            scale=item["scale"], model_id=item["model_id"])
