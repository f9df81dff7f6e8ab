"""TrainConfig: sections, one flat name per field, and every field's type and value checked on construction with
one error naming the field."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pckeypoints.config import FIXED_SIGMA, MODES, UNSET, TrainConfig, config_fields
from pckeypoints.errors import ConfigError, PCKeypointsError


@pytest.mark.parametrize("values, message", [
    (dict(epochs="three"), "epochs must be an integer, got 'three'"),
    (dict(epochs=True), "epochs must be an integer"),
    (dict(epochs=2.5), "epochs must be an integer"),
    (dict(lr="fast"), "lr must be a number"),
    (dict(rotate=1), "rotate must be true or false"),
    (dict(method="foo"), "method must be one of"),
    (dict(sampler="fancy"), "sampler must be one of"),
    (dict(metric="l3"), "metric must be one of"),
    (dict(mode="semi"), "mode must be one of"),
    (dict(max_models=0), "max_models must be >= 1"),
    (dict(num_keypoints=0), "num_keypoints must be >= 1"),
    (dict(device="gpu"), "device must be"),
    (dict(lr=0.0), "lr must be > 0"),
    (dict(lr=float("inf")), "lr must be finite"),
    (dict(basis="fixed", sigma=-0.01), "sigma must be > 0"),
    (dict(basis="knn", sigma=0.01), "model.sigma must be set with model.basis = 'fixed'"),
    (dict(basis="knn", sigma=0.02), "model.sigma must be set with model.basis = 'fixed'"),
    (dict(basis="fixed", sigma=0.01, knn_k=4), "model.knn_k is set but unused"),
    (dict(knn_k=4), "model.knn_k is set but unused"),
    (dict(lr_step_epochs=3), "optim.lr_step_epochs is set but unused"),
    (dict(mode="unsupervised", sampler="naive"), "loss.sampler is not used by unsupervised training"),
    (dict(mode="unsupervised", method="soft+js"), "loss.method must be one of"),
    (dict(mode="unsupervised", num_keypoints=1), "num_keypoints of unsupervised keypoints must be >= 2"),
    (dict(mode="unsupervised", offset=-1.0), "loss.offset must be >= 0"),
    (dict(reconstruction_to_input=2.0), "reconstruction_to_input is not used by supervised training"),
    (dict(data="my_folder", category="bed"), "data.category is set but unused"),
    (dict(jitter=-1.0), "jitter must be >= 0"),
    (dict(scale_lo=1.2, scale_hi=1.1), "scale_hi must be >= augment.scale_lo"),
    (dict(mode="unsupervised", offset="big"), "offset must be a number"),
    (dict(name="../elsewhere"), "name must be a folder name"),
    (dict(name="."), "name must be a folder name"),
])
def test_bad_fields_raise_one_error_naming_the_field(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_fields(**values)


def test_errors_are_value_errors():
    assert issubclass(ConfigError, PCKeypointsError) and issubclass(PCKeypointsError, ValueError)


def test_numbers_are_converted_and_good_values_pass():
    config = TrainConfig.from_fields(lr=1, basis="fixed", sigma=0.02, device="cuda:1", max_models=3)
    assert isinstance(config.optim.lr, float) and config.optim.lr == 1.0
    assert config.model.sigma == 0.02 and config.replace(num_keypoints=3).model.arguments()["fixed_sigma"] == 0.02
    assert TrainConfig.from_fields(num_keypoints=3).model.arguments()["fixed_sigma"] == FIXED_SIGMA
    assert TrainConfig.from_fields(num_keypoints=3, basis="knn").model.arguments()["fixed_sigma"] is None
    unsupervised = TrainConfig.from_fields(mode="unsupervised", offset=1)
    assert isinstance(unsupervised.loss.offset, float) and unsupervised.loss.offset == 1.0


def test_sections_round_trip_and_replace_checks():
    config = TrainConfig.from_fields(epochs=3, width=0.25, data="boxes", readout="top")
    assert (config.optim.epochs, config.model.width, config.data.folder, config.eval.readout) == (3, 0.25, "boxes", "top")
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.replace(epochs=4).optim.epochs == 4 and config.optim.epochs == 3
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        config.replace(epochs=0)
    with pytest.raises(ConfigError, match="offset is not used by supervised training"):
        config.replace(offset=1.0)


def test_the_fixed_basis_sigma_defaults_and_follows_the_basis():
    # the fixed basis without a σ takes FIXED_SIGMA, the k-NN one has none; a stored σ is kept
    assert TrainConfig().model.sigma == TrainConfig.from_fields(basis="fixed").model.sigma == FIXED_SIGMA
    assert TrainConfig.from_fields(basis="knn").model.sigma is None
    assert TrainConfig.from_fields(sigma=0.02).model.basis == "fixed"
    assert TrainConfig.from_fields(basis="knn", sigma=UNSET).model.sigma is None
    assert TrainConfig.from_dict(TrainConfig.from_fields(sigma=0.03).to_dict()).model.sigma == 0.03
    # replace: a changed basis drops the other basis's σ unless one is given
    fixed = TrainConfig.from_fields(sigma=0.03)
    assert fixed.replace(basis="knn").model.sigma is None and fixed.replace(epochs=2).model.sigma == 0.03
    assert fixed.replace(basis="knn").replace(basis="fixed").model.sigma == FIXED_SIGMA
    assert TrainConfig.from_fields(basis="knn").replace(basis="fixed", sigma=0.05).model.sigma == 0.05
    sigma = {f.name: f for f in config_fields()}["sigma"]
    assert sigma.default is None and sigma.default_text == f"{FIXED_SIGMA} with basis fixed, none with knn"


def test_the_defaults_are_the_cpu_full_recipe():
    """``pckeypoints train``'s defaults are the cpu-full protocol (the speedrun's w05-e50) but for the method,
    which the protocol's runner sets; the quick start is the recipe on 2 processes for 40 epochs with soft+js."""
    from pathlib import Path

    configs = Path(__file__).parents[1] / "experiments" / "configs"
    assert TrainConfig.from_toml(configs / "evidence_cpu-full.toml") == TrainConfig()
    expected = TrainConfig.from_fields(method="soft+js", epochs=40, name="bathtub_small", procs=2)
    assert TrainConfig.from_toml(configs / "bathtub_small.toml") == expected
    c = TrainConfig()
    assert (c.model.width, c.model.basis, c.model.sigma, c.optim.epochs, c.optim.lr, c.loss.target_sigma) == \
        (0.5, "fixed", 0.01, 50, 3e-3, 0.02)
    assert (c.augment.jitter, c.augment.scale_lo, c.augment.scale_hi) == (0.005, 0.9, 1.1)


def test_old_flat_toml_names_the_new_key(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text('method = "soft"\nepochs = 3\n')
    with pytest.raises(ConfigError, match=r"old\.toml: config key 'method' has moved: write it as \[loss\] method"):
        TrainConfig.from_toml(path)
    path.write_text('[optim]\nepoch = 3\n')
    with pytest.raises(ConfigError, match=r"unknown config field optim\.epoch; \[optim\] has epochs"):
        TrainConfig.from_toml(path)


def test_every_shipped_toml_file_loads():
    from pathlib import Path

    files = sorted((Path(__file__).parents[1] / "experiments" / "configs").glob("*.toml"))
    assert files and all(isinstance(TrainConfig.from_toml(path), TrainConfig) for path in files)


def test_defaults_agree_with_the_modules():
    import inspect

    from pckeypoints.core.losses import KeypointLoss
    from pckeypoints.models import KeypointDetector

    config = TrainConfig()
    detector = inspect.signature(KeypointDetector).parameters
    for name in ("width", "msg", "radius_scale", "hidden_channels", "learn_sigma"):
        assert detector[name].default == getattr(config.model, name), name
    # the one difference: the modules take any units, so their basis is the k-NN σ (scale-free) unless given
    # fixed_sigma; the config's fixed σ is in the units of the normalised clouds (radius 1)
    assert detector["fixed_sigma"].default is None and detector["knn_k"].default is None
    assert config.model.basis == "fixed" and config.model.knn_k == 8  # the head's k when knn_k is None
    loss = inspect.signature(KeypointLoss).parameters
    for name in ("method", "metric", "num_samples", "reg_weight", "target_sigma", "sampler", "gumbel",
                 "clipped_integral"):
        assert loss[name].default == getattr(config.loss, name), name


def test_toml_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[optim]\nepochs = "three"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml.*epochs must be an integer"):
        TrainConfig.from_toml(path)
    path.write_bytes(b"\xff\xfe = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        TrainConfig.from_toml(path)


def test_config_fields_are_the_command_line_scalars():
    fields = {f.name: f for f in config_fields()}
    assert fields["epochs"].type is int and fields["lr"].type is float and fields["sigma"].type is float
    assert fields["max_models"].type is int and fields["basis"].type is str
    assert (fields["data"].section, fields["data"].key) == ("data", "folder")
    assert (fields["eval_split"].section, fields["eval_split"].key) == ("eval", "split")
    assert "sampler" not in {f.name for f in config_fields("unsupervised")}


def test_config_module_imports_neither_trainer_nor_tasks():
    code = ("import sys, pckeypoints.config; "
            "print(sorted(m for m in sys.modules if m in ('pckeypoints.train.training', 'pckeypoints.train.tasks')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_modes_are_the_tasks():
    from pckeypoints.train.tasks import TASKS

    assert tuple(TASKS) == MODES
