"""The configuration of a training run: :class:`TrainConfig`, stored in every checkpoint.

This module imports neither the trainer nor the tasks, so anything (tasks, CLI, checkpoint loader) can
import it. Every field is checked on construction, type first, then value, and each problem raises one
:class:`~pckeypoints.errors.ConfigError` naming the field (and the TOML file it came from).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .schedules import SCHEDULES

__all__ = ["TrainConfig", "config_fields", "MODES", "LR_SCHEDULES", "OPTIMIZERS"]

#: Training modes (the tasks of :data:`pckeypoints.tasks.TASKS`).
MODES = ("supervised", "unsupervised")
LR_SCHEDULES = ("constant", "cosine", "step")  # step: halved every lr_step_epochs (the paper's)
OPTIMIZERS = ("adamw", "sgd")
SPLITS = ("train", "val", "test")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in its checkpoints. Load with :meth:`from_toml`."""

    # problem
    mode: str = "supervised"
    category: str = "bathtub"
    num_keypoints: int | None = None  # supervised: None = every semantic id of the category
    semantic_ids: list[int] | None = None  # supervised: the data's semantic id of each keypoint; None = 0..K-1
    # keypoint maps and loss (see pckeypoints.losses.KeypointLoss)
    method: str = "sampling"
    metric: str = "l1"
    num_samples: int = 30
    readout: str = "snapped"  # test-time estimate (pckeypoints.readouts): best on experiments/results/evidence
    sampler: str = "auto"  # sampling-argmax sampler: "auto" (the fused kernels where built, else "gaussian"), "naive", "gaussian" or "fused"
    tau_schedule: str = "exponential"
    tau_start: float = 1.0
    tau_end: float = 0.1
    sigma: str | float = "knn"  # "knn" (σ_i from the k nearest neighbours) or a fixed σ in normalised units
    knn_k: int = 8
    reg_weight: float = 1.0
    target_sigma: float = 0.02  # σ of soft+var / soft+js, in normalised units
    loss_weights: dict[str, float] = field(default_factory=dict)  # task-specific loss terms
    # model
    width: float = 0.5
    msg: bool = False
    radius_scale: float = 2.0  # PointNet++ radii suit radius-0.5 clouds; inputs are normalised to radius 1
    hidden_channels: int = 128
    freeze_norm: bool = False  # keep BatchNorm in eval mode (running statistics) while training
    # optimisation
    epochs: int = 15
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9)
    lr_schedule: str = "cosine"
    lr_step_epochs: int = 10  # lr_schedule "step": the lr halves every this many epochs
    # data
    data_root: str | None = None
    data: str | None = None  # folder of your own annotated models (pckeypoints.data.folder); None: KeypointNet
    max_models: int | None = None  # first n models of each split (smoke runs, tests)
    rotate: bool = False  # random rotation about the up axis
    jitter: float = 0.0  # std of per-point Gaussian jitter, normalised units
    scale_lo: float = 1.0
    scale_hi: float = 1.0
    num_workers: int = 0
    # run
    seed: int = 0
    out: str = "runs"
    name: str | None = None  # run folder under out; default <category>_<method> (+ _2, _3, ... if taken)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N" or "mps"
    eval_every: int = 1
    eval_split: str = "val"

    def __post_init__(self):
        _check_types(self)
        _check_values(self)

    @property
    def fixed_sigma(self) -> float | None:
        """The basis σ for the models: ``None`` for the k-NN estimate, else the fixed value."""
        return None if self.sigma == "knn" else float(self.sigma)

    @property
    def run_name(self) -> str:
        """The run folder's name: ``name``, else ``<category>_<method>`` (``<data folder name>_<method>``)."""
        return self.name or f"{Path(self.data).resolve().name if self.data else self.category}_{self.method}"

    @classmethod
    def from_toml(cls, path: str | Path | None = None, **overrides) -> "TrainConfig":
        """Config from a TOML file of field = value pairs (``None`` overrides are ignored)."""
        values = {}
        if path is not None:
            try:
                values = tomllib.loads(Path(path).read_text())
            except OSError as err:
                raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from err
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
                raise ConfigError(f"invalid TOML in config file {path}: {err}") from err
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.from_dict(values)
        except ConfigError as err:
            raise ConfigError(f"config file {path}: {err}" if path is not None else str(err)) from None

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Config from ``{field: value}``; unknown fields are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_fields() -> list[tuple[str, type, object]]:
    """``(name, scalar type, default)`` of each TrainConfig field settable from a command line."""
    result = []
    for f in dataclasses.fields(TrainConfig):
        kinds = _field_types()[f.name]
        scalar = str if str in kinds else kinds[0]
        if scalar in (bool, int, float, str) and dict not in kinds:
            result.append((f.name, scalar, f.default))
    return result


# ---------------------------------------------------------------------------------------------- checks
@functools.cache
def _field_types() -> dict[str, tuple[type, ...]]:
    """``{field: accepted types}`` from the annotations (``None`` as ``type(None)``)."""
    hints = typing.get_type_hints(TrainConfig)
    result = {}
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        result[f.name] = tuple(typing.get_origin(a) or a for a in args)
    return result


def _type_name(kinds: tuple[type, ...]) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             dict: "a table of numbers", list: "a list of integers", type(None): "unset"}
    return " or ".join(names[k] for k in kinds)


def _check_types(config: TrainConfig) -> None:
    """Every field holds one of its annotated types (an integer is a number; ``True`` is not an integer);
    number fields are converted to ``float``."""
    for name, kinds in _field_types().items():
        value = getattr(config, name)
        if isinstance(value, bool):
            ok = bool in kinds
        elif isinstance(value, int):
            ok = int in kinds or float in kinds
            if ok and int not in kinds:
                setattr(config, name, float(value))
        elif isinstance(value, list):
            ok = list in kinds and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        elif isinstance(value, dict):
            ok = dict in kinds and all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                                       for k, v in value.items())
        else:
            ok = isinstance(value, tuple(k for k in kinds if k not in (dict, list)))
        if not ok:
            raise ConfigError(f"config field {name} must be {_type_name(kinds)}, got {value!r} "
                              f"({type(value).__name__})")


def _check_values(config: TrainConfig) -> None:
    from .argmax import SAMPLERS
    from .readouts import READOUTS
    from .losses import METHODS, METRICS

    c = config
    choices = {"mode": MODES, "method": METHODS, "metric": METRICS, "sampler": SAMPLERS,
               "tau_schedule": tuple(SCHEDULES), "optimizer": OPTIMIZERS, "lr_schedule": LR_SCHEDULES,
               "eval_split": SPLITS, "readout": READOUTS}
    for name, allowed in choices.items():
        if getattr(c, name) not in allowed:
            raise ConfigError(f"config field {name} must be one of {tuple(allowed)}, got {getattr(c, name)!r}")
    if isinstance(c.sigma, str) and c.sigma != "knn":
        try:
            c.sigma = float(c.sigma)
        except ValueError:
            raise ConfigError(f"config field sigma must be 'knn' or a number, got {c.sigma!r}") from None
    if not _DEVICE.fullmatch(c.device):
        raise ConfigError(f"config field device must be auto, cpu, cuda, cuda:N or mps, got {c.device!r}")
    if c.name is not None and (not c.name or c.name in (".", "..") or "/" in c.name or "\\" in c.name
                               or not c.name.isprintable()):
        raise ConfigError(f"config field name must be a folder name (no path separators), got {c.name!r}")
    for name in ("category", "out", "data_root"):
        if "\x00" in (getattr(c, name) or ""):
            raise ConfigError(f"config field {name} must not contain a NUL character")
    at_least = {"epochs": 1, "batch_size": 1, "num_samples": 1, "eval_every": 1, "lr_step_epochs": 1, "knn_k": 1,
                "hidden_channels": 1, "num_keypoints": 1, "max_models": 1, "num_workers": 0, "seed": 0}
    positive = ("tau_start", "tau_end", "lr", "width", "radius_scale", "target_sigma", "scale_lo", "sigma")
    non_negative = ("reg_weight", "weight_decay", "jitter")
    for name in at_least.keys() | set(positive) | set(non_negative):
        value = getattr(c, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config field {name} must be finite, got {value}")
    for name, low in at_least.items():
        value = getattr(c, name)
        if value is not None and value < low:
            raise ConfigError(f"config field {name} must be >= {low}, got {value}")
    for name in positive:
        value = getattr(c, name)
        if isinstance(value, float) and not value > 0:
            raise ConfigError(f"config field {name} must be > 0, got {value}")
    for name in non_negative:
        if getattr(c, name) < 0:
            raise ConfigError(f"config field {name} must be >= 0, got {getattr(c, name)}")
    if c.scale_hi < c.scale_lo:
        raise ConfigError(f"config field scale_hi must be >= scale_lo, got scale_lo={c.scale_lo}, "
                          f"scale_hi={c.scale_hi}")
    ids = c.semantic_ids
    if ids is not None and (len(set(ids)) != len(ids) or min(ids, default=0) < 0
                            or c.num_keypoints not in (None, len(ids))):
        raise ConfigError(f"config field semantic_ids must be num_keypoints distinct ids >= 0, got {ids[:8]}"
                          f"{' ...' if len(ids) > 8 else ''}")
    for key, value in c.loss_weights.items():
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"config field loss_weights[{key!r}] must be a finite number >= 0, got {value}")
