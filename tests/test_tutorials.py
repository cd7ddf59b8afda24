"""Every tutorial runs top to bottom in smoke mode (CI set). Each is a subprocess of 10 s to
2 minutes on 2 cores, so they are ``integration`` tests, deselected by default; run them with
``python -m pytest -m integration``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")

TUTORIALS = sorted((Path(__file__).parent.parent / "tutorials").glob("*.py"))


@pytest.mark.integration
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
