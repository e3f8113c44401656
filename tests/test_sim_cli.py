"""``bitsnn sim``: the trained tiny model on a few real MNIST images on Icarus (with a waveform)
and the Amaranth simulator, the golden path, mismatch reporting and bad input."""

from __future__ import annotations

import dataclasses

from pathlib import Path

import numpy as np
import pytest

from bitsnn.cli import main as cli_main
from bitsnn.sim.cosim import cli as sim_cli


def run_sim(capsys, *args):
    rc = cli_main(["sim", *map(str, args)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_golden_path(tiny_model_path, mnist_dir, capsys):
    rc, out, _ = run_sim(capsys, "--model", tiny_model_path, "--images", 200, "--simulator", "golden",
                         "--data-dir", mnist_dir)
    assert rc == 0, out
    assert "mismatches: 0" in out and "accuracy:" in out and "cycles per inference" in out
    assert "spikes per inference" in out


def test_mismatch_prints_first_difference(tiny_model_path, mnist_dir, capsys, monkeypatch):
    real = sim_cli.simulate

    def broken(hm, images, **kw):
        run = real(hm, images, **{**kw, "simulator": "golden"})
        r = run.result
        r.spikes = [s.copy() for s in r.spikes]
        r.spikes[0][2, 5] ^= 1
        r.cycles = np.array(r.cycles).copy()
        r.cycles[4] += 1
        return run

    monkeypatch.setattr(sim_cli, "simulate", broken)
    rc, out, _ = run_sim(capsys, "--model", tiny_model_path, "--images", 6, "--simulator", "golden",
                         "--data-dir", mnist_dir)
    assert rc == 1
    assert "mismatches: 2" in out
    assert "first at image 2, layer 0, neuron 5: spikes" in out
    assert "image 4: cycles" in out


def test_compare_orders_differences():
    from types import SimpleNamespace as NS

    g = NS(spikes=[np.zeros((2, 4), np.uint8)], scores=np.zeros((2, 3), np.int64), classes=np.zeros(2, np.int64),
           spike_counts=np.zeros((2, 1), np.int64))
    r = NS(spikes=[g.spikes[0].copy()], scores=g.scores.copy(), classes=g.classes.copy(),
           spike_counts=g.spike_counts.copy(), cycles=np.array([10, 10]), measured_cycles=np.array([10, 10]))
    assert sim_cli.compare(g, np.array([10, 10]), r) == []
    r.scores[1, 2] = 7
    r.classes[1] = 2
    (m,) = sim_cli.compare(g, np.array([10, 10]), r, first_index=100)
    assert dataclasses.astuple(m) == (101, "scores", 1, 2, 7, 0)


def test_bad_input_one_line_errors(tmp_path, capsys, monkeypatch, tiny_model_path, mnist_dir):
    rc, _, err = run_sim(capsys, "--model", tmp_path / "nope.bsnn", "--images", 3)
    assert rc == 1 and "not found" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "junk.bsnn").write_bytes(b"not a model")
    rc, _, err = run_sim(capsys, "--model", tmp_path / "junk.bsnn", "--images", 3)
    assert rc == 1 and len(err.strip().splitlines()) == 1
    from bitsnn.sim.cosim import runner

    monkeypatch.setattr(runner, "simulator_missing", lambda sim: "not installed here")
    rc, _, err = run_sim(capsys, "--model", tiny_model_path, "--images", 3, "--simulator", "verilator",
                         "--data-dir", mnist_dir)
    assert rc == 1 and "simulator verilator: not installed here" in err
    rc, _, err = run_sim(capsys, "--model", tiny_model_path, "--images", 0, "--simulator", "golden",
                         "--data-dir", mnist_dir)
    assert rc == 1 and "--images" in err


@pytest.mark.cosim
@pytest.mark.xdist_group("cosim")
def test_icarus_with_wave(tiny_model_path, mnist_dir, tmp_path, capsys, monkeypatch):
    from bitsnn.sim.cosim.runner import simulator_missing

    if why := simulator_missing("icarus"):
        pytest.skip(why)
    monkeypatch.setenv("BITSNN_BUILD", str(tmp_path / "build"))
    wave = tmp_path / "w" / "img3.vcd"
    rc, out, err = run_sim(capsys, "--model", tiny_model_path, "--images", 5, "--simulator", "icarus",
                           "--data-dir", mnist_dir, "--wave", wave, "--image", 3)
    assert rc == 0, out + err
    assert "mismatches: 0" in out and "cycles/s" in out
    head = wave.read_bytes()[:2000]
    assert b"$timescale" in head and b"$var" in head  # a VCD, not FST


@pytest.mark.slow
def test_amaranth(tiny_model_path, mnist_dir, capsys):
    rc, out, err = run_sim(capsys, "--model", tiny_model_path, "--images", 3, "--simulator", "amaranth",
                           "--data-dir", mnist_dir)
    assert rc == 0, out + err
    assert "mismatches: 0" in out and "accuracy:" in out


def test_conv_engine_option(tmp_path, mnist_dir, capsys):
    """``--conv-engine``: the stages the design and the cycle model use (said in the output); a
    window stage for pixel input is one line and exit 1, before any simulation."""
    from bitsnn.hwmodel import random_model

    m = random_model(np.random.default_rng(1), [784, 10], input_shape=(28, 28), convs=((4, 3, 2), (8, 3, 2)),
                     input_encoding="pixels", threshold_spread=0.5, input_threshold=100)
    path = tmp_path / "c.bsnn"
    m.save(path)
    for engine, stages in (("auto", "event/window"), ("event", "event/event")):
        rc, out, _ = run_sim(capsys, "--model", path, "--images", 3, "--simulator", "amaranth", "--lanes", 8,
                             "--conv-engine", engine, "--data-dir", mnist_dir)
        assert rc == 0, out
        assert f"convolution stages {stages}" in out and "mismatches: 0" in out
    rc, out, err = run_sim(capsys, "--model", path, "--simulator", "amaranth", "--conv-engine", "window",
                           "--data-dir", mnist_dir)
    assert rc == 1 and not out and err.count("\n") == 1 and "window stage takes spike maps" in err


@pytest.mark.cosim
@pytest.mark.xdist_group("cosim")
def test_icarus_output_is_progress_and_summary_only(tiny_model_path, mnist_dir, tmp_path):
    """The simulator's chatter (cocotb's GPI lines, VPI warnings, the regression table) stays in
    sim.log; --verbose shows it. The build cache is the user cache, not the working directory."""
    import os
    import subprocess

    from bitsnn.sim.cosim.runner import simulator_missing
    from test_cli import BITSNN

    if why := simulator_missing("icarus"):
        pytest.skip(why)
    work, cache = tmp_path / "work", tmp_path / "xdg"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("BITSNN_BUILD", "PYTHONPATH")}
    env["XDG_CACHE_HOME"] = str(cache)
    args = [str(BITSNN), "sim", "--model", str(tiny_model_path), "--images", "100", "--simulator", "icarus",
            "--data-dir", str(mnist_dir)]
    r = subprocess.run(args, capture_output=True, text=True, cwd=work, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    text = r.stdout + r.stderr
    assert "[cosim] 100/100 images" in text and "mismatches: 0" in text
    for chatter in ("GPI", "vpi_", "TESTS=", "cocotb"):
        assert chatter not in text, chatter
    assert list(work.iterdir()) == []  # nothing cached where it ran
    line = next(l for l in r.stdout.splitlines() if l.startswith("build and simulator log in "))
    where = Path(line.split(" in ", 1)[1].split(" (", 1)[0])
    assert cache / "bitsnn" / "cosim" in where.parents and (where / "sim.log").is_file()
    r = subprocess.run(args + ["--verbose"], capture_output=True, text=True, cwd=work, env=env, timeout=600)
    assert r.returncode == 0 and "TESTS=" in r.stdout + r.stderr
