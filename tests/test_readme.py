"""The documentation's Python blocks run (extracted from the README and the pages it links, executed in order in
one namespace): the first example, the getting-started page's full example and PyG block, own data's PyG block."""
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "docs/getting_started.md", "docs/own_data.md")


def blocks(page: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (ROOT / page).read_text(), flags=re.S | re.M)


def test_the_readmes_first_example_runs():
    space = {}
    exec(compile(blocks("README.md")[0], "README block 1", "exec"), space)
    assert space["maps"].keypoints.shape == (4, 10, 3) and torch.isfinite(space["loss"])


def test_the_using_it_and_pyg_blocks_run():
    pytest.importorskip("torch_geometric")
    code = blocks("docs/getting_started.md")
    assert "PointNet2Keypoints" in code[1] and "use_as_pyg_backend" in code[1]
    space = {}
    torch.manual_seed(0)
    exec(compile(code[0], "getting started block 1", "exec"), space)
    exec(compile(code[1], "getting started block 2", "exec"), space)  # the PyG PointNet++ (was NameError: batch)
    assert space["maps"].logits.shape == (3200, 10) and torch.isfinite(space["loss"])
    assert space["x"].shape == (3200, 64)


def test_the_data_block_runs_on_a_folder(tmp_path, monkeypatch):
    pytest.importorskip("torch_geometric")
    from box_folder import make_box_folder

    make_box_folder(tmp_path / "my_chairs", num_models=8)
    monkeypatch.chdir(tmp_path)
    space = {}
    exec(compile(blocks("docs/own_data.md")[0], "own data block 1", "exec"), space)
    assert space["batch"].y.shape[0] == space["batch"].num_graphs


def test_readme_names_each_librarys_normalized_grid_convention():
    line = next(b for b in blocks("docs/getting_started.md")[0].split("\n\n") if "dsntnn" in b)
    assert "kornia's" in line and "align_corners=True" in line and "dsntnn's with align_corners=False" in line
