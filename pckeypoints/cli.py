"""Command line: ``pckeypoints train | eval | predict | export | viz`` (also ``python -m pckeypoints``).

- ``train [--config FILE.toml] [--FIELD VALUE ...] [--resume RUN]``: every :class:`TrainConfig` field
  is a flag (``--num-samples 30`` sets ``[loss] num_samples``); flags override the file. Ends by evaluating
  the best checkpoint on the test split (``--no-test`` skips it). Multi-GPU/multi-node: ``torchrun --nproc-per-node 2 -m
  pckeypoints train ...``.
- ``eval RUN_OR_CKPT [--split test] [--out DIR]``: metrics tables (markdown + JSON) and figures.
- ``calibrate RUN_OR_CKPT [--split val] [-o OUT.pt]``: fit the temperature of the keypoints' confidence on the
  validation split and store it in the checkpoint (its ``best.pt``, else ``last.pt``, in place unless ``-o``).
- ``predict RUN_OR_CKPT FILE [-o OUT.json]``: keypoints of a ``.pcd``/``.ply``/``.obj``/... file;
  ``predict RUN_OR_CKPT FILE... | DIR [-o OUT_DIR]``: of many, with one model load (JSON lines on stdout, or
  ``OUT_DIR/NAME.json``); an input that cannot be read is skipped with a line naming it, and the command ends
  with status 1.
- ``export RUN_OR_CKPT -o model.pt2``: the detector as a ``torch.export`` program that ``predict`` takes.
- ``viz ...``: render a cloud with keypoints, or a gallery of a category's models (see ``pckeypoints viz --help``).

Every error a user can cause (a :class:`~pckeypoints.errors.PCKeypointsError`: bad file, config value, device,
folder, a full disk; an :data:`~pckeypoints.errors.AnyInputError` of pointnet2's ops; or an ``OSError`` of a file
the user named) prints one line and exits with 1; Ctrl-C and
SIGTERM print one line and, after the same cleanup, end the process by that signal (status 130 or 143 in a
shell); ``--debug`` shows the traceback instead, and any other exception (a bug) always does. Arguments and the
device are checked before any data is loaded.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from pckeypoints.config import UNSET, TrainConfig, config_fields
from pckeypoints.errors import AnyInputError, PCKeypointsError, UsageError, write_error

__all__ = ["MAX_POINTS", "build_parser", "main", "run"]

#: Most points ``predict`` feeds the model (its time grows faster than linearly; training clouds have 2048).
MAX_POINTS = 16384


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pckeypoints", description="Keypoints on point clouds with sampling-argmax.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    _add_eval(commands)
    _add_calibrate(commands)
    _add_predict(commands)
    _add_export(commands)
    viz_parser = commands.add_parser("viz", help="render or show a cloud with keypoints")
    try:
        from viz import cli as viz_cli
    except ImportError as err:
        viz_parser.set_defaults(viz_error=f"the viz package is unavailable ({err})")
    else:
        viz_cli.add_arguments(viz_parser)
    return parser


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: ...)`` to the options whose help does not state it (the config fields' flags do: their
    argparse default is ``None``, "not given")."""

    def _get_help_string(self, action):
        return action.help if "(default:" in (action.help or "") else super()._get_help_string(action)


def _add_train(commands) -> None:
    train = commands.add_parser("train", help="train a model (supervised or unsupervised)",
                                formatter_class=_DefaultsHelp)
    train.add_argument("--config", help="TOML file of a TrainConfig ([data], [model], [loss], [optim], ...); "
                       "flags override it")
    train.add_argument("--mode", choices=("supervised", "unsupervised"),
                       help="train a detector or unsupervised keypoints (default: the config file's, else supervised)")
    train.add_argument("--resume", help="continue a run: its folder or a checkpoint (uses the run's own config)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run of the same --name (else <category>_<method>) once the new run has "
                            "its first checkpoint")
    train.add_argument("--test", action=argparse.BooleanOptionalAction, default=True,
                       help="evaluate the best checkpoint on the test split at the end")
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    for f in config_fields():
        flag, where = "--" + f.name.replace("_", "-"), f"[{f.section}] {f.key}"
        if f.type is bool:
            train.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=f"{where} (default: {f.default_text})")
        else:
            train.add_argument(flag, dest=f.name, type=_nullable(f.type) if f.nullable else f.type, default=None,
                               metavar=f.type.__name__.upper(), help=f"{where} (default: {f.default_text}"
                               f"{'; none unsets it' if f.nullable else ''})")


def _add_eval(commands) -> None:
    evaluate = commands.add_parser("eval", help="evaluate a checkpoint: tables, PCK curve, gallery")
    evaluate.add_argument("checkpoint", help="run folder (uses best.pt, else last.pt) or checkpoint file")
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="test")
    evaluate.add_argument("--out", help="output folder (default: <run>/eval_<split>)")
    evaluate.add_argument("--data-root", help="KeypointNet folder (default: the run's, else $PCKP_DATA)")
    evaluate.add_argument("--max-models", type=positive_int, help="evaluate on the first n models only")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--readout", help="headline keypoint estimate: expectation, snapped, top or mode "
                          "(default: the run's)")


def _add_calibrate(commands) -> None:
    calibrate = commands.add_parser("calibrate", help="fit the confidence temperature of a detector on the "
                                    "validation split and store it in its checkpoint")
    calibrate.add_argument("checkpoint", help="run folder (its best.pt, else last.pt) or checkpoint file")
    calibrate.add_argument("--split", choices=("train", "val", "test"), default="val")
    calibrate.add_argument("-o", "--output", help="write the calibrated checkpoint here (default: in place)")
    calibrate.add_argument("--data-root", help="KeypointNet folder (default: the run's, else $PCKP_DATA)")
    calibrate.add_argument("--device", default="cpu")


def _add_predict(commands) -> None:
    predict = commands.add_parser("predict", help="predict keypoints of point cloud or mesh files")
    predict.add_argument("checkpoint", help="run folder, checkpoint file or exported program (.pt2)")
    predict.add_argument("files", nargs="+", metavar="FILE",
                         help=".pcd, .ply, .obj, ... files, or folders of them (meshes are sampled uniformly on the "
                         "surface); several inputs print one JSON line each, with its \"file\"")
    predict.add_argument("-o", "--output", help="one input: a JSON file (default: print to stdout); several: a "
                         "folder that gets one NAME.json per input")
    predict.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                         help="progress bar (on stderr) for several inputs")
    predict.add_argument("--num-points", type=bounded_int(MAX_POINTS), default=2048,
                         help=f"points sampled from a mesh; bigger clouds are subsampled to this many (at most "
                              f"{MAX_POINTS})")
    predict.add_argument("--device", default="cpu")
    predict.add_argument("--readout", help="keypoint estimate from each map: expectation, snapped, top or mode "
                         "(default: the run's)")


def _add_export(commands) -> None:
    export = commands.add_parser("export", help="write a detector as a torch.export program (.pt2) for predict")
    export.add_argument("checkpoint", help="run folder or checkpoint file of a supervised run")
    export.add_argument("-o", "--output", required=True, help="program file, e.g. model.pt2")
    export.add_argument("--max-points", type=positive_int, help="largest cloud the program takes "
                        "(default: pckeypoints.train.exported.MAX_POINTS)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handled = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if handled else None
    try:
        commands = {"train": _train, "eval": _eval, "calibrate": _calibrate, "predict": _predict, "export": _export,
                    "viz": _viz}
        return commands[args.command](args)
    except (PCKeypointsError, AnyInputError, OSError) as err:  # what a user can cause; anything else is a bug: its traceback
        if args.debug:
            raise
        print(f"pckeypoints {args.command}: error: {_first_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: the cleanup has run on the way up
        if args.debug:
            raise
        terminated = isinstance(err, _Terminated)
        print(f"pckeypoints {args.command}: {'terminated (SIGTERM)' if terminated else 'interrupted'}",
              file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        if handled:
            signal.signal(signal.SIGTERM, previous)


def run() -> None:
    """The ``pckeypoints`` command: :func:`main`, then a run stopped by Ctrl-C or SIGTERM ends by that signal
    (exit status 130 or 143 in a shell), as shells and schedulers expect."""
    code = main()
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(code - 128, signal.SIG_DFL)
        os.kill(os.getpid(), code - 128)
    sys.exit(code)


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, schedulers, ``docker stop``), handled as Ctrl-C."""


def _terminate(signum, frame):
    raise _Terminated


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def bounded_int(high: int, low: int = 1):
    """An argparse type: an integer in ``[low, high]``."""
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def _nullable(kind: type):
    """An argparse type of ``kind`` that reads ``none`` as :data:`~pckeypoints.config.UNSET`."""
    def parse(text: str):
        return UNSET if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its errors
    return parse


def _train(args) -> int:
    from pckeypoints.train.training import train

    _import_swallowers()

    overrides = {"mode": args.mode, **{f.name: getattr(args, f.name) for f in config_fields()}}
    started = time.perf_counter()
    if args.resume is not None:
        given = sorted(k for k, v in overrides.items() if v is not None)
        if given or args.config:
            raise UsageError(f"--resume continues with the run's own config; drop {given or ['--config']}")
        run_dir = train(resume=args.resume, progress=args.progress)
    else:
        run_dir = train(TrainConfig.from_toml(args.config, **overrides), progress=args.progress,
                        overwrite=args.overwrite)
    if _is_main_process():
        trained = time.perf_counter()
        print(f"trained in {trained - started:.0f} s (wall clock)")
        print(f"run: {run_dir}")
        if args.test:
            _report(run_dir, "test", run_dir / "eval_test")
            print(f"wall time: {time.perf_counter() - started:.0f} s (training {trained - started:.0f} s, test "
                  f"evaluation {time.perf_counter() - trained:.0f} s)")
    return 0


def _import_swallowers() -> None:
    """Import now the libraries whose import catches ``BaseException`` (trimesh's optional imports), so that a
    Ctrl-C or SIGTERM during training is never swallowed by a lazy import."""
    import importlib.util

    if importlib.util.find_spec("trimesh") is not None:
        import trimesh  # noqa: F401


def _eval(args) -> int:
    from pckeypoints.pretrained import pretrained_path

    given = Path(args.checkpoint)
    local = given.is_file() or any((given / name).is_file() for name in ("best.pt", "last.pt"))
    if args.out is None and not local and len(given.parts) == 1 and pretrained_path(args.checkpoint) is not None:
        raise UsageError(f"{args.checkpoint} is a shipped model, not a run folder: give --out DIR for its report")
    run_dir = given if given.is_dir() else given.parent
    out_dir = Path(args.out) if args.out else run_dir / f"eval_{args.split}"
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file, not a folder")
    _report(args.checkpoint, args.split, out_dir, data_root=args.data_root, max_models=args.max_models,
            device=args.device, readout=args.readout)
    return 0


def _calibrate(args) -> int:
    from pckeypoints.train.evaluate_checkpoint import calibrate_checkpoint

    path, fit = calibrate_checkpoint(args.checkpoint, args.split, args.device, args.output, data_root=args.data_root)
    print(f"temperature {fit.temperature:.4g} on {fit.num_keypoints} {args.split} keypoints: NLL {fit.nll_before:.4f} "
          f"-> {fit.nll_after:.4f}, ECE {fit.ece_before:.4f} -> {fit.ece_after:.4f}")
    print(f"calibrated checkpoint: {path}")
    return 0


def _report(checkpoint, split: str, out_dir: Path, data_root: str | None = None, max_models: int | None = None,
            device: str = "cpu", readout: str | None = None) -> None:
    """Evaluate ``checkpoint`` on ``split``, write the task's report into ``out_dir`` and print it."""
    from pckeypoints.train.evaluate_checkpoint import evaluate_checkpoint

    _check_writable(out_dir)
    try:
        result = evaluate_checkpoint(checkpoint, split, device, out_dir, figures=_figures(), data_root=data_root,
                                     max_models=max_models, readout=readout)
    except OSError as err:
        raise write_error(out_dir, err, "the report into") from None
    from pckeypoints.train.tasks import get_task

    config = result.config
    print(f"{config.mode} {config.data.label} {config.loss.method}, epoch {result.epoch}, {split} split, "
          f"{result.num_models} models:")
    print(get_task(config.mode).summary(result.metrics, config))
    print(f"report: {out_dir} (every metric in metrics.md)")


def _check_writable(folder: Path) -> None:
    """Raise a one-line :class:`~pckeypoints.errors.WriteError` unless files can be created in ``folder``
    (created for the check and removed again if missing, so that a later failure leaves nothing)."""
    import tempfile

    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise write_error(folder, err, "into") from None
    finally:
        for created in missing:
            try:
                created.rmdir()
            except OSError:
                break


def _predict(args) -> int:
    from tqdm.auto import tqdm

    from pckeypoints.train.checkpoint import load_checkpoint
    from pckeypoints.devices import resolve_device

    single = len(args.files) == 1 and not Path(args.files[0]).is_dir()
    inputs = [Path(args.files[0])] if single else _point_files(args.files)
    output = Path(args.output) if args.output else None
    if output is not None:
        _check_predict_output(output, inputs, single)
    device = resolve_device(args.device)
    if Path(args.checkpoint).suffix == ".pt2":
        from pckeypoints.train.exported import load_program

        task, model, config = load_program(args.checkpoint)
        if args.num_points > model.max_points:
            raise UsageError(f"{args.checkpoint} takes up to {model.max_points} points; lower --num-points")
    else:
        task, model, config, _ = load_checkpoint(args.checkpoint)
    if args.readout is not None:
        config = config.replace(readout=args.readout)
    model = model.to(device)
    if single:
        result = _predict_file(task, model, config, inputs[0], args.num_points)
        _write_prediction(result, output)
        return 0
    failed = []
    for path in tqdm(inputs, desc="predict", unit="cloud", file=sys.stderr, disable=not args.progress):
        try:
            result = _predict_file(task, model, config, path, args.num_points)
        except (PCKeypointsError, AnyInputError, OSError) as err:  # a bad input is skipped; a bug still stops with its traceback
            failed.append(path)
            tqdm.write(f"pckeypoints predict: skipped {path}: {_first_line(err)}", file=sys.stderr)
            continue
        if output is None:
            print(json.dumps({"file": str(path), **result}), flush=True)
        else:
            _write_prediction({"file": str(path), **result}, output / f"{path.stem}.json", quiet=True)
    if output is not None:
        print(f"{len(inputs) - len(failed)} predictions -> {output}")
    if failed:
        raise PCKeypointsError(f"{len(failed)} of {len(inputs)} inputs failed, first {failed[0]} (see above)")
    return 0


def _point_files(names: list[str]) -> list[Path]:
    """The inputs of ``predict``: each file as given, each folder as its point cloud and mesh files (sorted,
    not recursive)."""
    from pckeypoints.data.pcd import POINT_FILE_SUFFIXES

    inputs = []
    for name in map(Path, names):
        if not name.is_dir():
            inputs.append(name)
            continue
        found = sorted(p for p in name.iterdir() if p.is_file() and p.suffix.lower() in POINT_FILE_SUFFIXES)
        if not found:
            suffixes = ", ".join(sorted(POINT_FILE_SUFFIXES))
            raise UsageError(f"folder {name} has no point cloud or mesh files ({suffixes})")
        inputs += found
    return inputs


def _check_predict_output(output: Path, inputs: list[Path], single: bool) -> None:
    """Raise a one-line error, before the model loads, for a ``-o`` that cannot take the predictions."""
    if single:
        if output.is_dir():
            raise UsageError(f"-o {output} is a folder; give a file name, e.g. {output / 'keypoints.json'}")
        if output.exists() and inputs[0].exists() and os.path.samefile(output, inputs[0]):  # links too
            raise UsageError(f"-o {output} is the input file; give another file name")
        return
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {output} is a file; several inputs need a folder (one NAME.json per input)")
    stems: dict[str, Path] = {}
    for path in inputs:
        if stems.setdefault(path.stem, path) != path:
            raise UsageError(f"{stems[path.stem]} and {path} would both be written to {output / (path.stem + '.json')}")
    _check_writable(output)


def _predict_file(task, model, config: TrainConfig, path: Path, num_points: int) -> dict:
    import numpy as np

    from pckeypoints.data import read_points
    from pckeypoints.data.transforms import subsample_cloud

    points = subsample_cloud(read_points(path, num_points=num_points, dtype=np.float64), num_points)
    return task.predict(model, points, config)


def _write_prediction(result: dict, output: Path | None, quiet: bool = False) -> None:
    """``result`` as indented JSON into ``output`` (its folder created), or on stdout when ``output`` is None."""
    text = json.dumps(result, indent=2)
    if output is None:
        print(text)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    except OSError as err:
        raise write_error(output, err, "prediction") from None
    if not quiet:
        print(f"{len(result['keypoints'])} keypoints -> {output}")


def _export(args) -> int:
    from pckeypoints.train.exported import export_program

    limit = {} if args.max_points is None else {"max_points": args.max_points}
    print(f"program -> {export_program(args.checkpoint, args.output, **limit)}")
    return 0


def _viz(args) -> int:
    if getattr(args, "viz_error", None):
        raise UsageError(args.viz_error)
    from viz import cli as viz_cli

    return viz_cli.run(args)


def _figures():
    """The :mod:`viz` module for report figures, or ``None`` (tables only) where it cannot be imported."""
    try:
        import viz
    except ImportError:
        return None
    return viz


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


if __name__ == "__main__":
    run()
