"""The configuration of a training run: :class:`TrainConfig`, stored in every checkpoint.

A config is ``mode`` plus one section per concern, as in its TOML file::

    mode = "supervised"                  # or "unsupervised"
    [data]     category, root, folder, max_models, num_workers
    [augment]  rotate, jitter, scale_lo, scale_hi
    [model]    width, msg, radius_scale, hidden_channels, freeze_norm, num_keypoints, basis, knn_k, knn_factor, sigma
    [loss]     method, num_samples, tau_schedule, tau_start, tau_end, and per mode:
               supervised: metric, sampler, reg_weight, target_sigma
               unsupervised: the Skeleton Merger weights
    [optim]    epochs, batch_size, lr, weight_decay, optimizer, lr_schedule, lr_step_epochs
    [eval]     readout, split, every
    [run]      seed, out, name, device, procs

The defaults are the project's recipe, the speedrun's best accuracy per CPU second (``experiments/evidence.py
--protocol cpu-full``, ``experiments/configs/evidence_cpu-full.toml``): width 0.5, 50 epochs, batch 16, AdamW lr
3e-3 cosine with weight decay 1e-4, a fixed basis σ of 0.01, jitter 0.005 and scaling by 0.9-1.1, target_sigma
0.02 and the snapped readout; only the method (``sampling``) differs from the recipe's ``soft+js``. The augmentations
apply to both modes (set ``[augment] jitter = 0``, ``scale_lo = scale_hi = 1`` for none).

Each field has one command-line flag, ``--<name>`` (``--data`` and ``--data-root`` for ``data.folder`` and
``data.root``, ``--eval-split``, ``--eval-every`` and ``--confidence-temperature`` for ``eval.split``,
``eval.every`` and ``eval.temperature``): :func:`config_fields`.
Every field is checked on construction, type first, then value; a field of the other mode's loss (``sampler``
of an unsupervised run), ``sigma`` with the k-NN basis and ``knn_k`` or ``knn_factor`` with a fixed one are errors:
each problem raises one :class:`~pckeypoints.errors.ConfigError` naming the field (and the TOML file it came from).

This module imports neither the trainer nor the tasks, so anything (tasks, CLI, checkpoint loader) can
import it.
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

from pckeypoints.errors import ConfigError
from pckeypoints.choices import GUMBEL_FORMS, METHODS, METRICS, READOUTS, SAMPLERS, SPLITS, TAU_SCHEDULES

__all__ = ["TrainConfig", "ConfigField", "UNSET", "config_fields", "MODES", "LR_SCHEDULES", "OPTIMIZERS", "BASES",
           "SPLITS", "FIXED_SIGMA", "DataConfig", "AugmentConfig", "ModelConfig", "SupervisedLoss",
           "UnsupervisedLoss", "OptimConfig", "EvalConfig", "RunConfig"]

#: Training modes (the tasks of :data:`pckeypoints.train.tasks.TASKS`).
MODES = ("supervised", "unsupervised")
LR_SCHEDULES = ("constant", "cosine", "step")  # step: halved every lr_step_epochs (the paper's)
OPTIMIZERS = ("adamw", "sgd")
BASES = ("knn", "fixed")  # a Gaussian per point with σ from its k nearest neighbours, or one fixed σ
#: model.sigma of the fixed basis when it is not given (normalised units: clouds of radius 1)
FIXED_SIGMA = 0.01
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def _flag(name: str, default=None):
    """A field whose command-line flag is ``--name`` instead of ``--<field name>``."""
    return field(default=default, metadata={"flag": name})


# ---------------------------------------------------------------------------------------------- sections
@dataclass
class DataConfig:
    """``[data]``: the models to train and evaluate on."""

    category: str = "bathtub"  # KeypointNet category (unused with folder)
    root: str | None = _flag("data_root")  # KeypointNet folder; None: $PCKP_DATA, else ../shared/data/keypointnet
    folder: str | None = _flag("data")  # a folder of your own annotated models (pckeypoints.data.folder)
    max_models: int | None = None  # first n models of each split (smoke runs, tests)
    num_workers: int = 0  # DataLoader worker processes

    @property
    def label(self) -> str:
        """The data's name in run folders and reports: the folder's name, else the category."""
        return Path(self.folder).resolve().name if self.folder else self.category


@dataclass
class AugmentConfig:
    """``[augment]``: random transforms of the training clouds (normalised units)."""

    rotate: bool = False  # random rotation about the up axis
    jitter: float = 0.005  # std of per-point Gaussian jitter (0: none)
    scale_lo: float = 0.9  # uniform scaling by a factor in [scale_lo, scale_hi] (1, 1: none)
    scale_hi: float = 1.1


@dataclass
class ModelConfig:
    """``[model]``: the PointNet++ backbone, its keypoint head and the basis densities on the points."""

    width: float = 0.5  # channel multiplier of the backbone
    msg: bool = False  # multi-scale grouping
    radius_scale: float = 2.0  # PointNet++ radii suit radius-0.5 clouds; inputs are normalised to radius 1
    hidden_channels: int = 128
    freeze_norm: bool = False  # keep BatchNorm in eval mode (running statistics) while training
    num_keypoints: int | None = None  # supervised: the data's (checked if set); unsupervised: None = 10
    semantic_ids: list[int] | None = None  # supervised, set from the data: its id of each keypoint (None: 0..K-1)
    basis: str = "fixed"  # "fixed": σ = sigma; "knn": σ_i from each point's knn_k nearest neighbours
    knn_k: int = 8
    # basis = "knn": σ_i = knn_factor x mean distance to the knn_k nearest neighbours. 0.5 (the basis' default) puts
    # the 8-NN σ at 2.5-2.8x 0.01; about 0.2 at 0.01 (experiments/results/knn_sigma)
    knn_factor: float = 0.5
    # the fixed σ (normalised units), with basis = "fixed" only (FIXED_SIGMA if not given); unset with "knn"
    sigma: float | None = field(default=None,
                                metadata={"default_text": f"{FIXED_SIGMA} with basis fixed, none with knn"})
    learn_sigma: bool = False  # σ_i times a learned per-point factor (trained through the sampling loss)

    def __post_init__(self):
        if self.basis == "fixed" and self.sigma is None:
            self.sigma = FIXED_SIGMA

    def arguments(self) -> dict:
        """This section as keyword arguments of the tasks' models (``num_keypoints`` must be known: see
        :meth:`pckeypoints.train.tasks.Task.configure`)."""
        if self.num_keypoints is None:
            raise ConfigError("config field model.num_keypoints is unset; configure the config with its task first")
        return {"num_keypoints": self.num_keypoints, "width": self.width, "msg": self.msg,
                "radius_scale": self.radius_scale, "hidden_channels": self.hidden_channels, "knn_k": self.knn_k,
                "knn_factor": self.knn_factor, "fixed_sigma": self.sigma if self.basis == "fixed" else None,
                "learn_sigma": self.learn_sigma}


@dataclass
class _LossBase:
    """The keypoint-map fields both tasks' losses share."""

    method: str = "sampling"
    num_samples: int = 30  # sampling-argmax samples per map
    tau_schedule: str = "exponential"  # Gumbel-softmax temperature over the epochs (pckeypoints.core.schedules)
    tau_start: float = 1.0
    tau_end: float = 0.1
    tau_epochs: int | None = None  # epochs from tau_start to tau_end, then held (None: all of optim.epochs)


@dataclass
class SupervisedLoss(_LossBase):
    """``[loss]`` of supervised runs (see :class:`pckeypoints.core.losses.KeypointLoss`)."""

    metric: str = "l1"  # distance of a sample or estimate to the target
    sampler: str = "auto"  # "auto" (the fused kernels where built, else "gaussian"), "naive", "gaussian", "fused"
    reg_weight: float = 1.0  # weight of the soft+var / soft+js regulariser
    target_sigma: float = 0.02  # σ of the soft+var / soft+js / sampling+js target distribution, normalised units
    gumbel: str = "paper"  # sampling: "paper" softmax((l + g)/τ) or "official" softmax(l + g/τ) (authors' code)
    clipped_integral: bool = False  # the authors' clipped gradient of the weighted sum (naive or fused sampler)


@dataclass
class UnsupervisedLoss(_LossBase):
    """``[loss]`` of unsupervised runs: the Skeleton Merger loss terms' weights
    (:func:`pckeypoints.train.unsupervised.reconstruction_objective`)."""

    reconstruction_to_input: float = 1.0  # Chamfer: reconstruction -> input
    input_to_reconstruction: float = 1.0  # Chamfer: input -> reconstruction
    offset: float = 0.01  # L2 penalty of the decoder's offsets
    uncovered: float = 20.0  # cost of an input point left without activation coverage


@dataclass
class OptimConfig:
    """``[optim]``: the optimiser and its learning-rate schedule."""

    epochs: int = 50
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9)
    lr_schedule: str = "cosine"
    lr_step_epochs: int = 10  # lr_schedule "step" only: the lr halves every this many epochs


@dataclass
class EvalConfig:
    """``[eval]``: validation during training and the test-time keypoint estimate."""

    readout: str = "snapped"  # pckeypoints.core.readouts: best on experiments/results/evidence
    split: str = _flag("eval_split", "val")  # split that selects best.pt
    every: int = _flag("eval_every", 1)  # evaluate every n epochs (and after the last)
    # T of the maps for the keypoints' confidence only, never their estimate; set by `pckeypoints calibrate`
    temperature: float = _flag("confidence_temperature", 1.0)


@dataclass
class RunConfig:
    """``[run]``: where the run goes and what it runs on."""

    seed: int = 0
    out: str = "runs"
    name: str | None = None  # run folder under out; default <data label>_<method> (+ _2, _3, ... if taken)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N" or "mps"
    procs: int = 1  # CPU training processes (data parallel, cores shared out); GPUs: torchrun


LOSSES = {"supervised": SupervisedLoss, "unsupervised": UnsupervisedLoss}
SECTIONS = {"data": DataConfig, "augment": AugmentConfig, "model": ModelConfig, "loss": _LossBase,
            "optim": OptimConfig, "eval": EvalConfig, "run": RunConfig}


# ---------------------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Everything a run depends on; stored in its checkpoints. Load with :meth:`from_toml` or :meth:`from_dict`."""

    mode: str = "supervised"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: SupervisedLoss | UnsupervisedLoss | None = None  # None: the mode's defaults
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"config field mode must be one of {MODES}, got {self.mode!r}")
        if self.loss is None:
            self.loss = LOSSES[self.mode]()
        for name in SECTIONS:
            expected = LOSSES[self.mode] if name == "loss" else SECTIONS[name]
            if type(getattr(self, name)) is not expected:
                raise ConfigError(f"config section {name} of a {self.mode} run must be a {expected.__name__}, "
                                  f"got {type(getattr(self, name)).__name__}")
            _check_types(getattr(self, name), name)
        _check_values(self)

    @property
    def run_name(self) -> str:
        """The run folder's name: ``run.name``, else ``<data label>_<method>``."""
        return self.run.name or f"{self.data.label}_{self.loss.method}"

    @classmethod
    def from_toml(cls, path: str | Path | None = None, **overrides) -> "TrainConfig":
        """Config from a TOML file, with ``overrides`` by flat name (:func:`config_fields`; ``None`` is ignored,
        :data:`UNSET` unsets the field)."""
        values = {}
        if path is not None:
            try:
                values = tomllib.loads(Path(path).read_text())
            except OSError as err:
                raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from err
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
                raise ConfigError(f"invalid TOML in config file {path}: {err}") from err
        try:
            return cls.from_dict(_with_overrides(values, overrides))
        except ConfigError as err:
            raise ConfigError(f"config file {path}: {err}" if path is not None else str(err)) from None

    @classmethod
    def from_fields(cls, **fields) -> "TrainConfig":
        """Config from fields by flat name (``TrainConfig.from_fields(epochs=2, width=0.25)``), the rest default."""
        return cls.from_dict(_with_overrides({}, fields))

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Config from ``{"mode": ..., section: {field: value}}``; unknown keys, and fields set to other than
        their default where the config does not use them, are errors."""
        _check_keys(values)
        mode = values.get("mode", "supervised")
        if mode not in MODES:
            raise ConfigError(f"config field mode must be one of {MODES}, got {mode!r}")
        sections = {name: (LOSSES[mode] if name == "loss" else kind)(**values.get(name, {}))
                    for name, kind in SECTIONS.items()}
        config = cls(mode=mode, **sections)
        defaults = cls(mode=mode)
        _check_used(config, {f"{name}.{key}" for name, section in values.items() if isinstance(section, dict)
                             for key in section if _get(config, f"{name}.{key}") != _get(defaults, f"{name}.{key}")})
        return config

    def to_dict(self) -> dict:
        """``{"mode": ..., section: {field: value}}``, the inverse of :meth:`from_dict`."""
        return dataclasses.asdict(self)

    def get(self, name: str):
        """The value of a field by flat name (``config.get("lr") == config.optim.lr``)."""
        section, key = _field_path(name, self.mode)
        return getattr(getattr(self, section), key)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with fields changed by flat name (``max_models=None``, ``data_root=...``), checked."""
        values = self.to_dict()
        if changes.get("basis", self.model.basis) != self.model.basis and "sigma" not in changes:
            values["model"]["sigma"] = None  # the other basis's: unset with knn, FIXED_SIGMA with fixed
        for name, value in changes.items():
            section, key = _field_path(name, self.mode)
            values[section][key] = None if value is UNSET else value
        return TrainConfig.from_dict(values)


# ---------------------------------------------------------------------------------------------- fields
@dataclass(frozen=True)
class ConfigField:
    """One settable field: its flat (command-line) name, TOML path, scalar type, default and whether it may be
    unset (``None``)."""

    name: str
    section: str
    key: str
    type: type
    default: object
    nullable: bool
    default_text: str = ""  # the default as the command line's help states it (``str(default)`` if empty)


#: An override that unsets a field (``--sigma none`` on the command line); ``None`` means "not given".
UNSET = type("Unset", (), {"__repr__": lambda self: "UNSET"})()


def config_fields(mode: str | None = None, scalars: bool = True) -> list[ConfigField]:
    """The fields of ``mode`` (``None``: of every mode, each flat name once): those settable from a command line,
    or with ``scalars=False`` all of them (lists too)."""
    result, seen = [], set()
    for name, kind in SECTIONS.items():
        classes = [LOSSES[mode]] if name == "loss" and mode else list(LOSSES.values()) if name == "loss" else [kind]
        for cls in classes:
            for f in dataclasses.fields(cls):
                flat = f.metadata.get("flag", f.name)
                kinds = _field_types(cls)[f.name]
                scalar = str if str in kinds else kinds[0]
                if flat not in seen and (scalar in (bool, int, float, str) or not scalars):
                    seen.add(flat)
                    result.append(ConfigField(flat, name, f.name, scalar, f.default, type(None) in kinds,
                                              f.metadata.get("default_text", str(f.default))))
    return result


@functools.cache
def _flat_paths(mode: str) -> dict[str, tuple[str, str]]:
    return {f.name: (f.section, f.key) for f in config_fields(mode, scalars=False)}


def _field_path(name: str, mode: str) -> tuple[str, str]:
    """``(section, key)`` of the field whose flat name is ``name`` in a config of ``mode``."""
    if mode not in MODES:
        raise ConfigError(f"config field mode must be one of {MODES}, got {mode!r}")
    if name in _flat_paths(mode):
        return _flat_paths(mode)[name]
    other = _flat_paths(MODES[1 - MODES.index(mode)])
    if name in other:
        raise ConfigError(f"config field {'.'.join(other[name])} is not used by {mode} training")
    raise ConfigError(f"unknown config field {name}")


def _with_overrides(values: dict, overrides: dict) -> dict:
    """``values`` (nested) with ``overrides`` by flat name; ``None`` values are ignored, :data:`UNSET` ones unset."""
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "mode" in overrides:
        values["mode"] = overrides.pop("mode")
    for name, value in overrides.items():
        section, key = _field_path(name, values.get("mode", "supervised"))
        if not isinstance(values.setdefault(section, {}), dict):
            raise ConfigError(f"config key {section} must be a section ([{section}]), got {values[section]!r}")
        values[section][key] = None if value is UNSET else value
    return values


# ---------------------------------------------------------------------------------------------- checks
def _check_keys(values: dict) -> None:
    """Top-level keys are ``mode`` and the sections, each a table of its class's fields."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config is a table of sections, got {type(values).__name__}")
    moved = {f.name: f"[{f.section}] {f.key}" for f in config_fields()}
    for key, value in values.items():
        if key == "mode":
            continue
        if key not in SECTIONS:
            if key in moved:
                raise ConfigError(f"config key {key!r} has moved: write it as {moved[key]} = ...")
            raise ConfigError(f"unknown config key {key!r}; known: mode, {', '.join(f'[{s}]' for s in SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key} must be a section ([{key}]), got {value!r}")
        mode = values.get("mode", "supervised")
        cls = LOSSES.get(mode, SupervisedLoss) if key == "loss" else SECTIONS[key]
        known = [f.name for f in dataclasses.fields(cls)]
        for name in value:
            if name in known:
                continue
            if key == "loss" and any(name in (f.name for f in dataclasses.fields(c)) for c in LOSSES.values()):
                raise ConfigError(f"config field loss.{name} is not used by {mode} training")
            raise ConfigError(f"unknown config field {key}.{name}; [{key}] has {', '.join(known)}")


def _check_used(config: TrainConfig, given: set[str]) -> None:
    """Fields in ``given`` (``"section.field"``, set to other than their default) that ``config`` would ignore
    are an error."""
    unused = {
        "data.category": config.data.folder is not None and "data.folder (your own models) replaces it",
        "model.knn_k": config.model.basis != "knn" and "it is used with model.basis = 'knn' only",
        "model.knn_factor": config.model.basis != "knn" and "it is used with model.basis = 'knn' only",
        "optim.lr_step_epochs": config.optim.lr_schedule != "step" and "it is used with lr_schedule = 'step' only",
    }
    for name in sorted(given):
        if unused.get(name):
            raise ConfigError(f"config field {name} is set but unused: {unused[name]}")


@functools.cache
def _field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """``{field: accepted types}`` of a section class from its annotations (``None`` as ``type(None)``)."""
    hints = typing.get_type_hints(cls)
    result = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        result[f.name] = tuple(typing.get_origin(a) or a for a in args)
    return result


def _type_name(kinds: tuple[type, ...]) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             list: "a list of integers", type(None): "unset"}
    return " or ".join(names[k] for k in kinds)


def _check_types(section, prefix: str) -> None:
    """Every field holds one of its annotated types (an integer is a number; ``True`` is not an integer);
    number fields are converted to ``float``."""
    for name, kinds in _field_types(type(section)).items():
        value = getattr(section, name)
        if isinstance(value, bool):
            ok = bool in kinds
        elif isinstance(value, int):
            ok = int in kinds or float in kinds
            if ok and int not in kinds:
                setattr(section, name, float(value))
        elif isinstance(value, list):
            ok = list in kinds and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        else:
            ok = isinstance(value, kinds)
        if not ok:
            raise ConfigError(f"config field {prefix}.{name} must be {_type_name(kinds)}, got {value!r} "
                              f"({type(value).__name__})")


def _check_values(c: TrainConfig) -> None:
    unsupervised_methods = ("soft", "sampling")
    choices = {"loss.method": METHODS if c.mode == "supervised" else unsupervised_methods,
               "loss.tau_schedule": TAU_SCHEDULES, "optim.optimizer": OPTIMIZERS,
               "optim.lr_schedule": LR_SCHEDULES, "eval.split": SPLITS, "eval.readout": READOUTS,
               "model.basis": BASES}
    if c.mode == "supervised":
        choices.update({"loss.metric": METRICS, "loss.sampler": SAMPLERS, "loss.gumbel": GUMBEL_FORMS})
    for path, allowed in choices.items():
        if _get(c, path) not in allowed:
            raise ConfigError(f"config field {path} must be one of {tuple(allowed)}, got {_get(c, path)!r}")
    _check_ranges(c)
    _check_consistency(c)


def _check_consistency(c: TrainConfig) -> None:
    """Fields that must agree with each other, and the names and paths."""
    if (c.model.basis == "fixed") != (c.model.sigma is not None):
        raise ConfigError("config field model.sigma must be set with model.basis = 'fixed' (and only then; unset "
                          f"it with basis 'knn'), got basis {c.model.basis!r} and sigma {c.model.sigma!r}")
    if not _DEVICE.fullmatch(c.run.device):
        raise ConfigError(f"config field run.device must be auto, cpu, cuda, cuda:N or mps, got {c.run.device!r}")
    name = c.run.name
    if name is not None and (not name or name in (".", "..") or "/" in name or "\\" in name or not name.isprintable()):
        raise ConfigError(f"config field run.name must be a folder name (no path separators), got {name!r}")
    for path in ("data.category", "data.root", "data.folder", "run.out"):
        if "\x00" in (_get(c, path) or ""):
            raise ConfigError(f"config field {path} must not contain a NUL character")
    if not c.run.out.strip():
        raise ConfigError(f"config field run.out must name a folder (\".\" for the current one), got {c.run.out!r}")
    if c.augment.scale_hi < c.augment.scale_lo:
        raise ConfigError(f"config field augment.scale_hi must be >= augment.scale_lo, got scale_lo="
                          f"{c.augment.scale_lo}, scale_hi={c.augment.scale_hi}")
    ids, count = c.model.semantic_ids, c.model.num_keypoints
    if ids is not None and (len(set(ids)) != len(ids) or min(ids, default=0) < 0 or count not in (None, len(ids))):
        raise ConfigError(f"config field model.semantic_ids must be num_keypoints distinct ids >= 0, got {ids[:8]}"
                          f"{' ...' if len(ids) > 8 else ''}")
    if c.mode == "unsupervised" and c.model.num_keypoints is not None and c.model.num_keypoints < 2:
        raise ConfigError(f"config field model.num_keypoints of unsupervised keypoints must be >= 2 (one skeleton "
                          f"edge), got {c.model.num_keypoints}")


def _check_ranges(c: TrainConfig) -> None:
    """Numbers within their ranges (and finite)."""
    at_least = {"optim.epochs": 1, "optim.batch_size": 1, "loss.num_samples": 1, "eval.every": 1,
                "optim.lr_step_epochs": 1, "model.knn_k": 1, "model.hidden_channels": 1, "model.num_keypoints": 1,
                "data.max_models": 1, "data.num_workers": 0, "run.seed": 0, "run.procs": 1, "loss.tau_epochs": 1}
    at_most = {"run.seed": 2**32 - 1}  # the epochs' seeds derived from it fit torch's 64 bits
    positive = ("loss.tau_start", "loss.tau_end", "optim.lr", "model.width", "model.radius_scale",
                "augment.scale_lo", "model.sigma", "model.knn_factor", "eval.temperature")
    non_negative = ["optim.weight_decay", "augment.jitter"]
    if c.mode == "supervised":
        positive += ("loss.target_sigma",)
        non_negative.append("loss.reg_weight")
    else:
        non_negative += [f"loss.{f.name}" for f in dataclasses.fields(UnsupervisedLoss)
                         if f.name not in {g.name for g in dataclasses.fields(_LossBase)}]
    for path in at_least.keys() | set(positive) | set(non_negative):
        value = _get(c, path)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config field {path} must be finite, got {value}")
    for path, low in at_least.items():
        value = _get(c, path)
        if value is not None and value < low:
            raise ConfigError(f"config field {path} must be >= {low}, got {value}")
    for path, high in at_most.items():
        if _get(c, path) > high:
            raise ConfigError(f"config field {path} must be <= {high}, got {_get(c, path)}")
    for path in positive:
        value = _get(c, path)
        if isinstance(value, float) and not value > 0:
            raise ConfigError(f"config field {path} must be > 0, got {value}")
    for path in non_negative:
        if _get(c, path) < 0:
            raise ConfigError(f"config field {path} must be >= 0, got {_get(c, path)}")


def _get(config: TrainConfig, path: str):
    section, name = path.split(".")
    return getattr(getattr(config, section), name)
