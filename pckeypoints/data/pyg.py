"""PyTorch Geometric view of a keypoint dataset (:class:`KeypointNet` or :class:`KeypointFolder`).

>>> from torch_geometric.loader import DataLoader
>>> loader = DataLoader(PyGKeypoints(KeypointFolder("my_chairs", "train", normalize=True)), batch_size=8)

A batch of ``B`` graphs has ``pos (ΣN, 3)`` and ``batch (ΣN,)`` (ragged, as PyG's point-cloud layers expect) and
``y (B, K, 3)``, ``mask (B, K)``, ``point_index (B, K)`` (per-cloud indices, -1 where missing), ``center (B, 3)``,
``scale (B,)`` and ``model_id`` (a list): what :class:`~pckeypoints.core.head.KeypointHead` ``(x, pos, batch)`` and
:class:`~pckeypoints.core.losses.KeypointLoss` take.

PyG transforms given to :class:`PyGKeypoints` carry the keypoints with the points (:class:`FollowKeypoints`).
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.data import Dataset as PyGDataset

from pckeypoints.errors import InputError
from pckeypoints.data.transforms import keypoints_at

__all__ = ["FollowKeypoints", "KeypointData", "PyGKeypoints"]


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
        transform: a PyG transform applied to each :class:`KeypointData` (``T.NormalizeScale()``,
            ``T.FixedPoints(1024)``, ``T.Compose([...])``); the keypoints follow the points
            (:class:`FollowKeypoints`).
    """

    def __init__(self, dataset: Dataset, transform=None):
        super().__init__(None, None if transform is None else FollowKeypoints(transform))
        self.dataset = dataset

    def len(self) -> int:
        return len(self.dataset)

    def get(self, idx: int) -> KeypointData:
        item = self.dataset[idx]
        return KeypointData(pos=item["points"], y=item["keypoints"][None], mask=item["mask"][None],
                            point_index=item["point_index"][None], center=item["center"][None],
                            scale=item["scale"].reshape(1), model_id=item["model_id"])  # (1,): PyG indexes size(0)


class FollowKeypoints:
    """``transform`` of a :class:`KeypointData` with its keypoints moved along with its points.

    Keypoints are points of the cloud (``y[k] == pos[point_index[k]]``), so after the transform they are
    taken again at ``point_index``: whatever moved the points (``NormalizeScale``, ``RandomRotate``,
    ``RandomJitter``, ...) moved them. Transforms that drop or reorder points (``FixedPoints``) are followed
    through a node attribute ``node_id`` that they carry; a keypoint whose point was dropped goes to the
    nearest kept point. Where the transform is a translation and scaling of all points, ``center`` and
    ``scale`` take it in (``original = pos * scale + center`` still holds). A transform that makes new points
    (``GridSampling``) is refused with a one-line :class:`~pckeypoints.errors.InputError` naming it.
    """

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, data: KeypointData) -> KeypointData:
        before, index, mask = data.pos, data.point_index[0], data.mask[0]
        n = before.shape[0]
        if bool((mask & (index < 0)).any()):
            raise InputError(f"{self.transform!r}: keypoints without a point_index cannot follow the points")
        data = data.clone()
        data.node_id = torch.arange(n)
        data = self.transform(data)
        ids = data.node_id if isinstance(getattr(data, "node_id", None), torch.Tensor) else None
        del data.node_id
        after = data.pos
        if (ids is None or ids.dtype != torch.long or ids.shape != after.shape[:1]
                or (ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < n))):
            raise InputError(f"PyG transform {self.transform!r} does not keep track of the points (it makes new "
                             "ones), so the keypoints cannot follow them; apply it before the keypoints are annotated")
        if ids.shape[0] == n and torch.equal(ids, torch.arange(n)) and torch.equal(after, before):
            return data  # the points did not move
        where = torch.full((n,), -1, dtype=torch.long)
        where[ids.flip(0)] = torch.arange(ids.shape[0] - 1, -1, -1)  # each kept point's first new index
        new = where[index.clamp(min=0)]
        lost = mask & (new < 0)
        if bool(lost.any()):  # its point was dropped: the nearest kept one (in the coordinates before)
            exact = "donot_use_mm_for_euclid_dist"
            new[lost] = torch.cdist(before[index[lost]], before[ids], compute_mode=exact).argmin(1)
        data.point_index = torch.where(mask, new, -1)[None]
        data.y = keypoints_at(after, data.point_index[0], mask)[None]
        _follow_similarity(data, before[ids], after)
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


def _follow_similarity(data: KeypointData, before: torch.Tensor, after: torch.Tensor) -> None:
    """Fold ``before = after · a + b`` (a scalar, b a vector), where it holds, into ``center`` and ``scale``."""
    if before.shape[0] < 2:
        return
    x, y = after.double() - after.double().mean(0), before.double() - before.double().mean(0)
    a = float((x * y).sum() / x.square().sum().clamp(min=1e-300))
    b = before.double().mean(0) - a * after.double().mean(0)
    residual = (after.double() * a + b - before.double()).abs().max()
    if a > 0 and residual <= 1e-5 * max(float(y.abs().max()), 1e-12):
        scale = data.scale.double()
        data.center = (data.center.double() + b * scale).to(data.center.dtype)
        data.scale = (scale * a).to(data.scale.dtype)
