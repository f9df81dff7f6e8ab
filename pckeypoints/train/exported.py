"""A detector as a ``torch.export`` program (``.pt2``): its graph and weights without the Python model code.

:func:`export_program` writes one from a checkpoint (``pckeypoints export RUN -o model.pt2``); the file also
holds the run's config, so that :func:`load_program` gives what ``pckeypoints predict`` needs. The program
takes clouds ``(1, N, 3)`` of any ``N`` from ``knn_k + 1`` to ``max_points``.

:func:`load_program` never unpickles code: before ``torch.export.load`` it refuses any archive that holds more
than a program's graph, its plain tensor payloads and JSON (pickled weights or constants, Python or TorchScript
objects, compiled AOTInductor code, legacy or extra entries, sample inputs that need more than
``weights_only`` loading).
"""
from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from pckeypoints.train.checkpoint import load_checkpoint, resolve_checkpoint
from pckeypoints.config import TrainConfig
from pckeypoints.errors import CheckpointError, InputError, UsageError, write_error
from pckeypoints.core.head import KeypointMaps
from pckeypoints.train.tasks import Task, get_task

__all__ = ["ExportedDetector", "export_program", "load_program"]

FORMAT = "pckeypoints-program"
#: Version of the metadata :func:`export_program` writes beside the program.
FORMAT_VERSION = 1
#: Default largest cloud the program takes (a size guard that tracing the detector's kNN records allows 4096).
MAX_POINTS = 4096
_META = "pckeypoints.json"
#: The entries of a program archive that :func:`export_program` writes (below its top folder); nothing else loads.
_ENTRIES = re.compile(r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
                      r"models/model\.json|data/sample_inputs/model\.pt|extra/" + re.escape(_META) + "|"
                      r"data/weights/(model_weights_config\.json|weight_\d+)|"
                      r"data/constants/(model_constants_config\.json|tensor_\d+))")
#: The payload configs, and the file names their unpickled tensors may have.
_PAYLOADS = {"data/weights/model_weights_config.json": re.compile(r"weight_\d+"),
             "data/constants/model_constants_config.json": re.compile(r"tensor_\d+")}


class ExportedDetector(nn.Module):
    """A loaded program as a detector: ``points (1, N, 3)`` -> :class:`~pckeypoints.core.head.KeypointMaps`, with
    ``knn_k + 1 <= N <= max_points``; always in eval mode (the program was traced so)."""

    def __init__(self, program: torch.export.ExportedProgram, min_points: int, max_points: int):
        super().__init__()
        self.program = program.module()
        self.min_points, self.max_points = min_points, max_points

    def forward(self, points: Tensor) -> KeypointMaps:
        if points.ndim != 3 or points.shape[0] != 1 or points.shape[-1] != 3:
            raise InputError(f"the exported detector takes one cloud (1, N, 3), got {tuple(points.shape)}")
        if not self.min_points <= points.shape[1] <= self.max_points:
            raise InputError(f"the exported detector takes {self.min_points} to {self.max_points} points, "
                             f"got {points.shape[1]}")
        return self.program(points)

    def train(self, mode: bool = True) -> ExportedDetector:
        if mode:
            raise UsageError("an exported detector cannot be trained; train its checkpoint")
        return self


def export_program(checkpoint: str | Path, dest: str | Path, max_points: int = MAX_POINTS) -> Path:
    """Write the supervised detector of ``checkpoint`` (run folder, file or shipped name) to ``dest`` (a new
    ``.pt2`` file, never the checkpoint itself) as a ``torch.export`` program for clouds of up to ``max_points``
    points, with its config. A failed write (disk full) leaves no file."""
    dest = Path(dest)
    if dest.suffix != ".pt2":
        raise UsageError(f"-o {dest}: a program file's name ends in .pt2 (predict reads other names as checkpoints)")
    source = resolve_checkpoint(checkpoint, prefer_best=True)
    if dest.exists() and os.path.samefile(dest, source):
        raise UsageError(f"-o {dest} is the checkpoint being exported; give another file name")
    task, model, config, _ = load_checkpoint(source)
    if config.mode != "supervised":
        raise UsageError(f"export takes a detector (a supervised run); {checkpoint} is {config.mode}")
    min_points = config.model.knn_k + 1
    if max_points < min_points:
        raise UsageError(f"--max-points must be at least {min_points} (knn_k + 1), got {max_points}")
    points = torch.export.Dim("points", min=min_points, max=max_points)
    example = torch.rand(1, min(max_points, 2 * min_points), 3)
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({1: points},))
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "min_points": min_points, "max_points": max_points,
            "config": config.to_dict()}
    buffer = io.BytesIO()  # written to disk by Python: torch's C++ writer aborts the process on a full disk
    torch.export.save(program, buffer, extra_files={_META: json.dumps(meta)})
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, dest)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error(dest, err, "program") from None
    return dest


def load_program(path: str | Path) -> tuple[Task, ExportedDetector, TrainConfig]:
    """``(task, detector, config)`` of a program written by :func:`export_program`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"program {path} does not exist")
    _check_archive(path)
    import pointnet2._library  # noqa: F401  (registers the ops torch.ops.pointnet2.* that the graph calls)

    extra = {_META: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
        meta = json.loads(extra[_META]) if extra[_META] else {}
    except Exception as err:  # torch.export.load raises many types for damaged files  # noqa: BLE001
        raise CheckpointError(f"{path} is not a torch.export program ({type(err).__name__})") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a pckeypoints program of format {FORMAT_VERSION} "
                              f"(written by `pckeypoints export`)")
    config = TrainConfig.from_dict(meta["config"])
    return get_task(config.mode), ExportedDetector(program, meta["min_points"], meta["max_points"]), config


def _check_archive(path: Path) -> None:
    """Refuse, with a one-line :class:`CheckpointError`, a program archive that ``torch.export.load`` would have
    to unpickle (objects, pickled tensors, non-``weights_only`` sample inputs) or that holds other entries."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            top = names[0].split("/")[0] + "/" if names else ""
            inner = [name[len(top):] if name.startswith(top) else name for name in names]
            odd = next((n for n, i in zip(names, inner) if not n.startswith(top) or not _ENTRIES.fullmatch(i)), None)
            if odd is not None or len(set(names)) != len(names):
                raise CheckpointError(f"{path} is not a program written by `pckeypoints export`: it holds "
                                      f"{odd or 'duplicate entries'!r}; not loading it")
            for config, allowed in _PAYLOADS.items():
                payloads = json.loads(archive.read(top + config))["config"].values()
                if any(p["use_pickle"] is not False or not allowed.fullmatch(p["path_name"]) for p in payloads):
                    raise CheckpointError(f"{path} holds pickled weights or constants (which could run code); "
                                          f"not loading it")
            torch.load(io.BytesIO(archive.read(top + "data/sample_inputs/model.pt")), weights_only=True)
    except CheckpointError:
        raise
    except Exception as err:  # a damaged zip, JSON or sample-input file: many types  # noqa: BLE001
        raise CheckpointError(f"{path} is not a torch.export program ({type(err).__name__})") from None
