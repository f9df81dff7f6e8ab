"""TrainConfig: every field's type and value is checked on construction, with one error naming the field."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pckeypoints.config import MODES, TrainConfig, config_fields
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
    (dict(sigma=-0.01), "sigma must be > 0"),
    (dict(jitter=-1.0), "jitter must be >= 0"),
    (dict(scale_lo=1.2, scale_hi=1.1), "scale_hi must be >= scale_lo"),
    (dict(loss_weights={"offset": "big"}), "loss_weights must be a table of numbers"),
    (dict(name="../elsewhere"), "name must be a folder name"),
    (dict(name="."), "name must be a folder name"),
])
def test_bad_fields_raise_one_error_naming_the_field(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**values)


def test_errors_are_value_errors():
    assert issubclass(ConfigError, PCKeypointsError) and issubclass(PCKeypointsError, ValueError)


def test_numbers_are_converted_and_good_values_pass():
    config = TrainConfig(lr=1, sigma="0.02", device="cuda:1", max_models=3, loss_weights={"offset": 1})
    assert isinstance(config.lr, float) and config.lr == 1.0
    assert config.sigma == 0.02 and config.fixed_sigma == 0.02
    assert TrainConfig().fixed_sigma is None


def test_toml_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('epochs = "three"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml.*epochs must be an integer"):
        TrainConfig.from_toml(path)
    path.write_bytes(b"\xff\xfe = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        TrainConfig.from_toml(path)


def test_config_fields_are_the_command_line_scalars():
    fields = {name: kind for name, kind, _ in config_fields()}
    assert fields["epochs"] is int and fields["lr"] is float and fields["sigma"] is str
    assert fields["max_models"] is int and "loss_weights" not in fields


def test_config_module_imports_neither_trainer_nor_tasks():
    code = ("import sys, pckeypoints.config; "
            "print(sorted(m for m in sys.modules if m in ('pckeypoints.training', 'pckeypoints.tasks')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_modes_are_the_tasks():
    from pckeypoints.tasks import TASKS

    assert tuple(TASKS) == MODES
