"""``pckeypoints export RUN -o model.pt2``: a torch.export program of the detector, equal to eager, that
``predict`` loads (issue 22 item 5)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pckeypoints.train.checkpoint import load_checkpoint, save_checkpoint
from pckeypoints.cli import main
from pckeypoints.config import TrainConfig
from pckeypoints.train.exported import load_program
from pckeypoints.train.tasks import get_task


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    config = TrainConfig.from_fields(num_keypoints=4, width=0.25, hidden_channels=16)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("export")
    save_checkpoint({"model": get_task("supervised").build_model(config).state_dict(), "config": config.to_dict(),
                     "epoch": 1}, folder / "model.pt")
    assert main(["export", str(folder / "model.pt"), "-o", str(folder / "model.pt2"), "--max-points", "1024"]) == 0
    return folder / "model.pt", folder / "model.pt2"


@pytest.mark.parametrize("n", [9, 300, 1024])
def test_program_equals_eager_at_every_size(exported, n):
    checkpoint, program = exported
    _, eager, config, _ = load_checkpoint(checkpoint)
    _, detector, program_config = load_program(program)
    assert program_config == config
    points = torch.rand(1, n, 3, generator=torch.Generator().manual_seed(n))
    with torch.no_grad():
        want, got = eager(points), detector.eval()(points)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.keypoints, want.keypoints, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.basis.bandwidth, want.basis.bandwidth)


def test_predict_with_the_program_equals_the_checkpoint(exported, tmp_path):
    checkpoint, program = exported
    cloud = tmp_path / "cloud.xyz"
    np.savetxt(cloud, np.random.default_rng(0).uniform(-0.5, 0.5, (700, 3)) + 10.0)
    for source, name in ((checkpoint, "eager.json"), (program, "program.json")):
        assert main(["predict", str(source), str(cloud), "-o", str(tmp_path / name), "--num-points", "512"]) == 0
    eager, exported_result = (json.loads((tmp_path / n).read_text()) for n in ("eager.json", "program.json"))
    assert exported_result.keys() == eager.keys() and exported_result["readout"] == eager["readout"]
    np.testing.assert_allclose(exported_result["keypoints"], eager["keypoints"], atol=1e-5)
    np.testing.assert_allclose(exported_result["confidence"], eager["confidence"], atol=1e-4)


def test_program_errors_are_one_line(exported, tmp_path, capsys):
    _, program = exported
    cloud = tmp_path / "cloud.xyz"
    np.savetxt(cloud, np.zeros((5, 3)))
    assert main(["predict", str(program), str(cloud), "--num-points", "2048"]) == 1
    assert "takes up to 1024 points" in capsys.readouterr().err
    (tmp_path / "other.pt2").write_bytes(b"not a program")
    assert main(["predict", str(tmp_path / "other.pt2"), str(cloud)]) == 1
    assert "is not a torch.export program" in capsys.readouterr().err
    with pytest.raises(Exception, match="cannot be trained"):
        load_program(program)[1].train()


class _Planted:
    """Unpickling it creates the folder ``path``: the trace of code run by a crafted archive."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return os.mkdir, (self.path,)


def _rewrite(source, dest, change) -> None:
    """Copy the zip ``source`` to ``dest`` with ``change(name, data) -> [(name, data), ...]`` applied to each entry."""
    import zipfile

    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(dest, "w") as zout:
        for name in zin.namelist():
            for new_name, data in change(name, zin.read(name)):
                zout.writestr(new_name, data)


def _plant(config: str, file: str, data: bytes, **entry):
    """A ``change`` for :func:`_rewrite`: the first payload of ``config`` becomes ``entry`` (e.g. pickled) and
    is stored as ``file`` holding ``data``."""
    def change(name, content):
        if not name.endswith(config):
            return [(name, content)]
        payloads = json.loads(content)
        next(iter(payloads["config"].values())).update(path_name=file, **entry)
        return [(name, json.dumps(payloads)), (name.rsplit("/", 1)[0] + "/" + file, data)]

    return change


def _pickled(value) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("attack", ["constant", "weight", "opaque", "sample_inputs", "legacy_weights", "aoti",
                                    "graph"])
def test_a_crafted_program_runs_no_code(exported, tmp_path, capsys, attack):
    """Issue 31 H3: an archive whose constant, weight, object or sample inputs ``torch.export.load`` would
    unpickle (or with legacy or AOTInductor entries, or a graph calling a Python function) is refused, one line,
    before anything of it runs."""
    import pickle

    _, program = exported
    trace = tmp_path / "ran"
    planted = _pickled(_Planted(trace))
    change = {
        "constant": _plant("model_constants_config.json", "tensor_99", planted, use_pickle=True),
        "weight": _plant("model_weights_config.json", "weight_99", planted, use_pickle=True),
        "opaque": _plant("model_constants_config.json", "opaque_obj_0", pickle.dumps(_Planted(trace)),
                         use_pickle=True),
        "sample_inputs": lambda name, data: [(name, planted if name.endswith("sample_inputs/model.pt") else data)],
        "legacy_weights": lambda name, data: [(name, data)] + [("model/data/weights/model.pt", planted)] * (
            name.endswith("archive_version")),
        "aoti": lambda name, data: [(name, data)] + [("model/data/aotinductor/model/model.so", b"\x7fELF")] * (
            name.endswith("archive_version")),
        "graph": lambda name, data: [(name, data.replace(b'"torch.ops.aten.reciprocal.default"', b'"torch.os.system"')
                                      if name.endswith("model.json") else data)],
    }[attack]
    hostile = tmp_path / "hostile.pt2"
    _rewrite(program, hostile, change)
    cloud = tmp_path / "cloud.xyz"
    np.savetxt(cloud, np.random.default_rng(0).uniform(-0.5, 0.5, (300, 3)))
    assert main(["predict", str(hostile), str(cloud)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(hostile) in err, err
    assert not trace.exists()


def test_export_and_predict_in_separate_processes(exported, tmp_path):
    """Issue 31 M6 (issue 34 bug 1): a fresh ``predict`` process registers pointnet2's ops before reading the
    program, and its predictions equal the checkpoint's."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    checkpoint, _ = exported
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    cloud = tmp_path / "cloud.xyz"
    np.savetxt(cloud, np.random.default_rng(0).uniform(-0.5, 0.5, (300, 3)))
    commands = [["export", str(checkpoint), "-o", str(tmp_path / "m.pt2"), "--max-points", "1024"],
                ["predict", str(tmp_path / "m.pt2"), str(cloud), "-o", str(tmp_path / "program.json"), "--num-points",
                 "300"],
                ["predict", str(checkpoint), str(cloud), "-o", str(tmp_path / "eager.json"), "--num-points", "300"]]
    for args in commands:
        done = subprocess.run([sys.executable, "-m", "pckeypoints", *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    program, eager = (json.loads((tmp_path / n).read_text()) for n in ("program.json", "eager.json"))
    np.testing.assert_allclose(program["keypoints"], eager["keypoints"], atol=1e-5)


def test_export_never_replaces_its_checkpoint(exported, tmp_path, capsys):
    """Issue 31 M7: ``-o`` naming the checkpoint being exported (or a link to it, or any non-.pt2 name) is
    refused and leaves the checkpoint as it was."""
    import os

    checkpoint, _ = exported
    before = checkpoint.read_bytes()
    os.link(checkpoint, tmp_path / "linked.pt2")
    for dest in (checkpoint, tmp_path / "linked.pt2", tmp_path / "model.bin"):
        assert main(["export", str(checkpoint), "-o", str(dest)]) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and str(dest) in err, err
    assert checkpoint.read_bytes() == before and not (tmp_path / "model.bin").exists()


def test_export_onto_a_full_disk_is_one_line_and_leaves_no_file(exported, tmp_path):
    """Issue 31 M5: a program write that fails (a 100 kB file-size limit, as a full disk fails it) prints one
    line, does not abort, and leaves no file."""
    import os
    import resource
    import signal
    import subprocess
    import sys
    from pathlib import Path

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG) instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    checkpoint, _ = exported
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, "-m", "pckeypoints", "export", str(checkpoint), "-o",
                            str(tmp_path / "m.pt2")], env=env, capture_output=True, text=True, timeout=600,
                           preexec_fn=limit_file_size)
    assert child.returncode == 1, child.stderr
    lines = [line for line in child.stderr.strip().splitlines() if not line.startswith("[W")]
    assert len(lines) == 1 and f"cannot write program {tmp_path / 'm.pt2'}" in lines[0], child.stderr
    assert list(tmp_path.iterdir()) == []
