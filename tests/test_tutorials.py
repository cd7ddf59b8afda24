"""Every tutorial runs top to bottom in smoke mode (CI set)."""

import os
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

TUTORIALS = sorted((Path(__file__).parent.parent / "tutorials").glob("*.py"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_smoke_mode(path, tmp_path):
    notebook = jupytext.read(path)
    assert sum(c.cell_type == "markdown" for c in notebook.cells) >= 2
    env = dict(os.environ, CI="1", MPLBACKEND="Agg")
    run = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert list(tmp_path.glob("*.png"))


def test_there_is_a_tutorial():
    assert TUTORIALS
