"""``pckeypoints viz``: show or render a cloud with ground-truth and/or predicted keypoints."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``viz`` subcommand."""
    parser.add_argument("pcd", nargs="?", help="a .pcd cloud (instead of --category/--model-id)")
    parser.add_argument("--category", help="KeypointNet category of a shared model, e.g. bathtub")
    parser.add_argument("--model-id", help="ShapeNet model id within --category (default: first of --split)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help="split searched for the first model when --model-id is not given (default: test)")
    parser.add_argument("--data", help="KeypointNet folder (default: $PCKP_DATA or ../shared/data/keypointnet)")
    parser.add_argument("--keypoints", help='JSON from `pckeypoints predict`: {"keypoints": [[x, y, z], ...], '
                                            '"semantic_ids": [...]}; drawn against the ground truth when known')
    parser.add_argument("--png", help="write the render here instead of opening a window")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)


def _shared_model(args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points (N, 3), keypoints (K, 3), semantic ids (K,)) of a KeypointNet model, original coordinates."""
    from pckeypoints.data import KeypointNet

    dataset = KeypointNet(args.data, args.category, split=None if args.model_id else args.split)
    if args.model_id is None:
        index = 0
    elif args.model_id in dataset.model_ids:
        index = dataset.model_ids.index(args.model_id)
    else:
        raise ValueError(f"model {args.model_id!r} is not an annotated {dataset.category} model")
    item = dataset[index]
    mask = item["mask"].numpy()
    return item["points"].numpy(), item["keypoints"].numpy()[mask], np.flatnonzero(mask)


def _predictions(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints (K, 3), semantic ids (K,)) from a ``pckeypoints predict`` JSON file."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "keypoints" not in data:
        raise ValueError(f"{path}: expected a JSON object with a 'keypoints' list")
    keypoints = np.asarray(data["keypoints"], dtype=np.float64).reshape(-1, 3)
    ids = np.asarray(data.get("semantic_ids", range(len(keypoints))), dtype=np.int64)
    if ids.shape != (len(keypoints),):
        raise ValueError(f"{path}: {len(keypoints)} keypoints but {ids.size} semantic_ids")
    return keypoints, ids


def run(args) -> int:
    """Render (``--png``) or show the cloud; returns the exit code."""
    from viz.offscreen import has_display
    from viz.render import render_keypoints

    if (args.pcd is None) == (args.category is None):
        print("viz: give either a .pcd file or --category (with optional --model-id)", file=sys.stderr)
        return 2
    if args.png is None and not has_display():
        print("viz: no display available; pass --png OUT.png to render to a file", file=sys.stderr)
        return 2
    if args.pcd is not None:
        from pckeypoints.data import read_pcd

        points, truth, truth_ids = read_pcd(args.pcd), None, None
    else:
        points, truth, truth_ids = _shared_model(args)

    keypoints, ids, pred = truth, truth_ids, None
    if args.keypoints:
        predicted, predicted_ids = _predictions(args.keypoints)
        if truth is None:
            keypoints, ids = predicted, predicted_ids
        else:
            common = np.intersect1d(truth_ids, predicted_ids)
            keypoints = truth[np.searchsorted(truth_ids, common)]
            pred = predicted[[np.flatnonzero(predicted_ids == i)[0] for i in common]]
            ids = common
    render_keypoints(points, keypoints, ids, png=args.png, pred=pred, width=args.width, height=args.height)
    if args.png:
        print(f"wrote {args.png}")
    return 0
