"""``pckeypoints viz``: show or render a cloud with ground-truth and/or predicted keypoints.

With ``--checkpoint`` the trained model runs on the cloud (through its task's ``predict``); ``--map ID``
paints keypoint ID's probability map (log scale) on the points and ``--samples N`` adds N sampling-argmax
samples of it, drawn at the run's final temperature ``tau_end``, all in the cloud's own coordinates.
``--gallery N`` draws the first N models of a category's split side by side in one PNG, keypoint k in one
colour on every shape (for an unsupervised model: the correspondence that DAS measures).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

from pckeypoints.errors import UsageError

#: Largest ``--width`` / ``--height`` (Open3D's offscreen buffers fail far beyond it).
MAX_PIXELS = 8192
#: Most ``--samples`` (each is a sphere in the scene).
MAX_SAMPLES = 100_000
#: Most ``--gallery`` tiles.
MAX_GALLERY = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``viz`` subcommand."""
    parser.add_argument("pcd", nargs="?", metavar="FILE",
                        help="a cloud or mesh (.pcd .ply .obj .off .stl .xyz .npy; meshes are sampled), instead of "
                             "--category/--model-id")
    parser.add_argument("--category", help="KeypointNet category of a shared model, e.g. bathtub")
    parser.add_argument("--model-id", help="ShapeNet model id within --category (default: first of --split)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help="split searched for the first model when --model-id is not given (default: test)")
    parser.add_argument("--data", help="KeypointNet folder (default: $PCKP_DATA or ../shared/data/keypointnet)")
    parser.add_argument("--keypoints", help='JSON from `pckeypoints predict`: {"keypoints": [[x, y, z], ...], '
                                            '"semantic_ids": [...]}; drawn against the ground truth when known')
    parser.add_argument("--checkpoint", "--model", metavar="RUN_CKPT_OR_NAME",
                        help="run folder, checkpoint or shipped model name (e.g. bathtub): draw its model's "
                             "predictions (against the ground truth when known)")
    parser.add_argument("--map", type=int, metavar="ID",
                        help="paint keypoint ID's probability map (log scale) on the points (needs --checkpoint)")
    parser.add_argument("--samples", type=int, metavar="N",
                        help="draw N sampling-argmax samples of the --map keypoint at the run's tau_end")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --samples draws (default: 0)")
    parser.add_argument("--gallery", type=int, metavar="N",
                        help="draw the first N models of --split of --category in one PNG (with --checkpoint: its "
                             "predictions, keypoint k in one colour on every shape); --width and --height are a "
                             "tile's")
    parser.add_argument("--png", help="write the render here instead of opening a window")
    parser.add_argument("--width", type=int, default=640, help=f"pixels, at most {MAX_PIXELS} (default: 640)")
    parser.add_argument("--height", type=int, default=480, help=f"pixels, at most {MAX_PIXELS} (default: 480)")


def _shared_models(args) -> list[dict]:
    """The KeypointNet models to draw: ``--model-id``, else the first (``--gallery N``: N) of ``--split``; each
    ``{"points" (N, 3), "keypoints" (K, 3), "semantic_ids" (K,), "model_id"}``, original coordinates."""
    from pckeypoints.data import KeypointNet

    dataset = KeypointNet(args.data, args.category, split=None if args.model_id else args.split)
    if args.model_id is None:
        indices = range(min(args.gallery or 1, len(dataset)))
    elif args.model_id in dataset.model_ids:
        indices = [dataset.model_ids.index(args.model_id)]
    else:
        raise UsageError(f"model {args.model_id!r} is not an annotated {dataset.category} model")
    models = []
    for index in indices:
        item = dataset[index]
        mask = item["mask"].numpy()
        models.append({"points": item["points"].numpy(), "keypoints": item["keypoints"].numpy()[mask],
                       "semantic_ids": np.flatnonzero(mask), "model_id": item["model_id"]})
    return models


def read_keypoints_json(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(keypoints (K, 3) float64, semantic ids (K,) int64)`` from a ``pckeypoints predict`` JSON file:
    ``{"keypoints": [[x, y, z], ...], "semantic_ids": [...]}`` (ids default to 0..K-1). Every problem is a
    :class:`~pckeypoints.errors.ReadError` naming the file."""
    from pckeypoints.errors import ReadError

    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except OSError as err:
        raise ReadError(f"cannot read keypoints {path}: {err.strerror or err}") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise ReadError(f"keypoints {path} is not valid JSON ({str(err)[:100]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("keypoints"), list):
        raise ReadError(f"keypoints {path}: expected a JSON object with a 'keypoints' list of [x, y, z]")
    rows = data["keypoints"]
    if not all(isinstance(row, list) and len(row) == 3 and all(_is_number(v) for v in row) for row in rows):
        raise ReadError(f"keypoints {path}: 'keypoints' must be a list of [x, y, z] number triples, e.g. "
                        f"[[0.1, 0.2, 0.3]], not a flat list or other values")
    keypoints = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(keypoints).all():
        raise ReadError(f"keypoints {path} has non-finite coordinates")
    ids = data.get("semantic_ids", list(range(len(keypoints))))
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ReadError(f"keypoints {path}: 'semantic_ids' must be a list of integers")
    if len(ids) != len(keypoints):
        raise ReadError(f"keypoints {path}: {len(keypoints)} keypoints but {len(ids)} semantic_ids")
    if len(set(ids)) != len(ids):
        raise ReadError(f"keypoints {path}: repeated semantic_ids")
    try:
        return keypoints, np.asarray(ids, dtype=np.int64)
    except OverflowError:
        raise ReadError(f"keypoints {path}: 'semantic_ids' out of range") from None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _model_view(checkpoint: tuple, points: np.ndarray, map_id: int | None, num_samples: int | None,
                seed: int) -> dict:
    """Run the task's ``predict`` of ``checkpoint`` (what :func:`~pckeypoints.train.checkpoint.load_checkpoint` returns)
    on ``points (N, 3)``; in the cloud's coordinates:

    ``keypoints (K, 3)`` and ``semantic_ids (K,)``; with ``map_id`` also ``log_probs (N,)``, that keypoint's log
    probability map, and ``samples (S, 3)`` drawn from it (``None`` when not asked for).
    """
    import torch

    from pckeypoints.core.argmax import sampling_argmax
    from pckeypoints.evaluation.inference import run_on_cloud

    task, model, config, _ = checkpoint
    cloud = torch.as_tensor(points, dtype=torch.float64)
    prediction = task.predict(model, cloud, config)
    view = {"keypoints": np.asarray(prediction["keypoints"]), "semantic_ids": np.asarray(prediction["semantic_ids"]),
            "log_probs": None, "samples": None}
    if map_id is None:
        return view
    if not 0 <= map_id < config.model.num_keypoints:
        raise UsageError(f"--map {map_id} is out of range: the model has keypoints 0..{config.model.num_keypoints - 1}")
    maps, center, scale = run_on_cloud(model, cloud, config)
    view["log_probs"] = maps.basis.mask_logits(maps.logits)[0, map_id].log_softmax(-1).cpu().numpy()
    if num_samples is not None:
        generator = torch.Generator(maps.logits.device).manual_seed(seed)
        with torch.no_grad():
            samples = sampling_argmax(maps.logits[:, [map_id]], maps.basis, num_samples, config.loss.tau_end,
                                      generator=generator, sampler=getattr(config.loss, "sampler", "auto"))[0, 0].cpu()
        view["samples"] = (samples * scale + center).numpy()
    return view


def _flag_error(args) -> str | None:
    """What is wrong with the combination of options, if anything."""
    if (args.pcd is None) == (args.category is None):
        return "give either a cloud or mesh file or --category (with optional --model-id)"
    if args.keypoints and args.checkpoint:
        return "give either --keypoints or --checkpoint, not both"
    if args.map is not None and not args.checkpoint:
        return "--map needs --checkpoint (the model whose probability map is drawn)"
    if args.samples is not None and args.map is None:
        return "--samples needs --map ID (the keypoint to sample)"
    if args.samples is not None and not 1 <= args.samples <= MAX_SAMPLES:
        return f"--samples must be in 1..{MAX_SAMPLES}, got {args.samples}"
    for name in ("width", "height"):
        if not 16 <= getattr(args, name) <= MAX_PIXELS:
            return f"--{name} must be in 16..{MAX_PIXELS}, got {getattr(args, name)}"
    if args.png is not None and (Path(args.png).is_dir() or Path(args.png).suffix.lower() != ".png"):
        return f"--png must name a .png file, got {args.png}"
    if args.gallery is not None:
        if args.pcd is not None or args.model_id is not None:
            return "--gallery draws the first N models of --split of --category; drop the file or --model-id"
        if args.keypoints or args.map is not None:
            return "--gallery draws the ground truth or --checkpoint's predictions; drop --keypoints, --map, --samples"
        if not 1 <= args.gallery <= MAX_GALLERY:
            return f"--gallery must be in 1..{MAX_GALLERY}, got {args.gallery}"
        if args.png is None:
            return "--gallery writes a PNG: pass --png OUT.png"
    return None


@contextlib.contextmanager
def _without_notebook_support():
    """Hide IPython while Open3D loads in a command-line process: Open3D imports Dash (for ``draw_plotly``),
    whose Jupyter support imports IPython and ipykernel when they are installed (a third to half of the import,
    ``experiments/bench_viz.md``), and a command line has no notebook. Does nothing where IPython is
    already loaded."""
    if "IPython" in sys.modules:
        yield
        return
    sys.modules["IPython"] = None  # makes `import IPython` raise ImportError, which Dash handles
    try:
        yield
    finally:
        if sys.modules.get("IPython", False) is None:
            del sys.modules["IPython"]


def run(args) -> int:
    """Render (``--png``) or show the cloud, or render the ``--gallery``; returns the exit code."""
    from viz.offscreen import has_display

    problem = _flag_error(args)
    if problem:
        print(f"viz: {problem}", file=sys.stderr)
        return 2
    if args.png is None and not has_display():
        print("viz: no display available; pass --png OUT.png to render to a file", file=sys.stderr)
        return 2
    with _without_notebook_support():
        import viz.scene  # noqa: F401  (Open3D)
    checkpoint = None
    if args.checkpoint:
        from pckeypoints.train.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(args.checkpoint)
        category = checkpoint[2].data.label
        if args.category not in (None, category):
            raise UsageError(f"{args.checkpoint} was trained on {category} models, not {args.category} ones")
    if args.pcd is not None:
        from pckeypoints.data import read_points
        from pckeypoints.data.transforms import subsample_cloud

        points = read_points(args.pcd, dtype=np.float64)
        if checkpoint is not None:  # the model sees what predict shows it
            points = subsample_cloud(points, 2048).numpy()
        clouds = [{"points": points, "keypoints": None, "semantic_ids": None}]
    else:
        clouds = _shared_models(args)
    drawn = [_drawn(args, checkpoint, cloud["points"], cloud["keypoints"], cloud["semantic_ids"]) for cloud in clouds]
    if args.gallery is not None:
        from viz.plots import render_gallery

        items = [{"points": cloud["points"], **view, "title": cloud["model_id"][:8]}
                 for cloud, view in zip(clouds, drawn)]
        supervised = checkpoint is not None and checkpoint[2].mode == "supervised"
        render_gallery(items, args.png, width=args.width, height=args.height, legend=supervised,
                       title=_gallery_title(args, checkpoint))
    else:
        from viz.render import render_keypoints

        view = drawn[0]
        render_keypoints(clouds[0]["points"], view["keypoints"], view["semantic_ids"], png=args.png, pred=view["pred"],
                         probs=view["probs"], samples=view["samples"], width=args.width, height=args.height,
                         probs_label="log p: low - high")
    if args.png:
        print(f"wrote {args.png}")
    return 0


def _drawn(args, checkpoint: tuple | None, points: np.ndarray, truth: np.ndarray | None,
           truth_ids: np.ndarray | None) -> dict:
    """What is drawn on the cloud ``points (N, 3)`` with annotated keypoints ``truth (K, 3)``, ``truth_ids (K,)``
    (``None`` if unknown): ``keypoints`` and ``semantic_ids`` (the truth, else the predictions), ``pred``
    (predictions of the truth's ids), ``probs`` and ``samples`` (see :func:`viz.render.render_keypoints`)."""
    drawn = {"keypoints": truth, "semantic_ids": truth_ids, "pred": None, "probs": None, "samples": None}
    predicted = None
    if args.keypoints:
        predicted, predicted_ids = read_keypoints_json(args.keypoints)
    elif checkpoint is not None:
        view = _model_view(checkpoint, points, args.map, args.samples, args.seed)
        drawn.update(probs=view["log_probs"], samples=view["samples"])
        if checkpoint[2].mode == "supervised":
            predicted, predicted_ids = view["keypoints"], view["semantic_ids"]
        else:  # learned keypoints have no semantic ids to match with the ground truth: coloured by index
            drawn.update(keypoints=view["keypoints"], semantic_ids=view["semantic_ids"])
    if predicted is not None:
        if truth is None:
            drawn.update(keypoints=predicted, semantic_ids=predicted_ids)
        else:
            common = np.intersect1d(truth_ids, predicted_ids)
            drawn.update(keypoints=truth[np.searchsorted(truth_ids, common)], semantic_ids=common,
                         pred=predicted[[np.flatnonzero(predicted_ids == i)[0] for i in common]])
    return drawn


def _gallery_title(args, checkpoint: tuple | None) -> str:
    """The gallery's title: its models, what is drawn and what a keypoint's colour means."""
    shapes = f"{args.category} {args.split} split"
    if checkpoint is None:
        return f"{shapes}: annotated keypoints, colour = semantic id"
    config = checkpoint[2]
    colour = "semantic id" if config.mode == "supervised" else "keypoint index"
    return f"{args.checkpoint} ({config.mode} {config.loss.method}) on {shapes}: colour = {colour}"
