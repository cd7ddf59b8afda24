import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_xform.cli import main


def test_demo_smoke(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CI", "1")
    out = tmp_path / "demo.png"
    assert main(["demo", "--steps", "2", "--quiet", "--out", str(out), "--families", "NSF", "MAF"]) == 0
    text = capsys.readouterr().out
    assert "NSF" in text and "MAF" in text and "exact" in text and "test NLL" in text
    assert out.exists() and out.stat().st_size > 1000


def test_demo_latent_implicit_and_discrete_families(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CI", "1")
    out = tmp_path / "demo.png"
    families = ["VAE", "Autoencoder", "GAN", "DiscreteAutoregressive"]
    assert main(["demo", "--steps", "2", "--quiet", "--out", str(out), "--families", *families]) == 0
    text = capsys.readouterr().out
    table = {
        line.split()[0]: line.split()
        for line in text.splitlines()
        if line.split()[:1] in [[f] for f in families]
    }
    assert table["VAE"][1] == "estimate" and table["GAN"][1] == "None" and table["GAN"][2] == "n/a"
    assert table["DiscreteAutoregressive"][1] == "exact" and float(table["DiscreteAutoregressive"][2]) > 0


def test_fit_sample_evaluate(tmp_path, capsys):
    model = tmp_path / "m.pt"
    assert (
        main(
            [
                "fit",
                "--family",
                "MAF",
                "--data",
                "moons",
                "--steps",
                "5",
                "--quiet",
                "--kwargs",
                '{"transforms": 2}',
                "--out",
                str(model),
            ]
        )
        == 0
    )
    samples = tmp_path / "s.npy"
    assert main(["sample", str(model), "-n", "7", "--out", str(samples), "--seed", "0"]) == 0
    assert np.load(samples).shape == (7, 2)
    assert main(["evaluate", str(model), "--data", "moons"]) == 0
    assert "test NLL" in capsys.readouterr().out
    data = tmp_path / "d.pt"
    torch.save(torch.randn(50, 3), data)
    assert main(["fit", "--data", str(data), "--steps", "2", "--quiet", "--out", str(model)]) == 0


def test_python_m_entry_point():
    run = subprocess.run([sys.executable, "-m", "pyro_xform", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "demo" in run.stdout


def test_bad_data_is_an_error_message_not_a_traceback(tmp_path, capsys):
    # In process (the test above starts `python -m pyro_xform`): Python prints a string exit code
    # to stderr, without a traceback, and exits with status 1.
    argv = ["fit", "--family", "DiscreteAutoregressive", "--data", "moons", "--steps", "1", "--quiet"]
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--out", str(tmp_path / "m.pt")])
    assert isinstance(exited.value.code, str) and "error: data must hold integers" in exited.value.code
    assert "Traceback" not in capsys.readouterr().err
