"""Nothing of the user's is overwritten: an output is never an input of the same command (compared
as real paths), an existing file is replaced only when it is the command's own kind of output (or
with --force), a report or build directory only when bitsnn wrote it, and what a killed run left
behind is cleaned by the next one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitsnn.hwmodel import random_model
from test_bad_input import assert_one_line_error, run_main


def snapshot(*paths) -> dict:
    return {str(p): p.read_bytes() for p in paths}


# ---- an output is never an input -------------------------------------------------------------------
def test_export_refuses_its_checkpoint_as_output(tmp_path, capsys, checkpoint, data_dir, monkeypatch):
    before = snapshot(checkpoint)
    monkeypatch.chdir(tmp_path)
    for out in (checkpoint, "./t.ckpt", os.path.abspath(checkpoint)):
        for force in ((), ("--force",)):
            r = run_main(capsys, "export", "t.ckpt", "--data-dir", data_dir, "-o", out, *force)
            assert_one_line_error(r, "export", "is an input of this command", rc=1)
    r = run_main(capsys, "export", checkpoint, "--data-dir", data_dir, "-o", tmp_path / "m.bsnn", "--nir", "./t.ckpt")
    assert_one_line_error(r, "export", "--nir", "is an input", rc=1)
    assert snapshot(checkpoint) == before and not (tmp_path / "m.bsnn").exists()


def test_export_refuses_a_data_file_as_output(tmp_path, capsys, checkpoint, data_dir):
    target = next(data_dir.iterdir())
    before = snapshot(*data_dir.iterdir())
    r = run_main(capsys, "export", checkpoint, "--data-dir", data_dir, "-o", target, "--force")
    assert_one_line_error(r, "export", "is an input", rc=1)
    assert snapshot(*data_dir.iterdir()) == before


def test_export_replaces_its_own_kind_and_refuses_others(tmp_path, capsys, checkpoint, data_dir):
    out = tmp_path / "m.bsnn"
    for _ in range(2):  # the second run replaces the first's model file without --force
        r = run_main(capsys, "export", checkpoint, "--data-dir", data_dir, "-o", out)
        assert r.returncode == 0, r.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    r = run_main(capsys, "export", checkpoint, "--data-dir", data_dir, "-o", notes)
    assert_one_line_error(r, "export", "exists and is not a bitsnn hardware-model file", "--force", rc=1)
    assert notes.read_text() == "mine"
    r = run_main(capsys, "export", checkpoint, "--data-dir", data_dir, "-o", tmp_path / "m2.bsnn", "--nir", notes)
    assert_one_line_error(r, "export", "--nir", "not a NIR graph written by bitsnn", rc=1)
    assert notes.read_text() == "mine" and not (tmp_path / "m2.bsnn").exists()
    r = run_main(capsys, "export", checkpoint, "--data-dir", data_dir, "-o", notes, "--force")
    assert r.returncode == 0, r.stderr
    assert notes.read_bytes()[:8] == b"BITSNNHW"


def test_import_refuses_its_graph_as_output(tmp_path, capsys, model_file, monkeypatch):
    pytest.importorskip("nir")
    from bitsnn.hwmodel import HardwareModel
    from bitsnn.nirgraph import write_nir

    graph = write_nir(HardwareModel.load(model_file), tmp_path / "g.nir")
    before = snapshot(graph)
    monkeypatch.chdir(tmp_path)
    for out in ("g.nir", "./g.nir", str(graph)):
        r = run_main(capsys, "import", "g.nir", "-o", out, "--force")
        assert_one_line_error(r, "import", "is an input", rc=1)
    link = tmp_path / "link.nir"
    link.symlink_to(graph)
    r = run_main(capsys, "import", "g.nir", "-o", link, "--force")
    assert_one_line_error(r, "import", "is an input", rc=1)
    assert snapshot(graph) == before
    r = run_main(capsys, "import", "g.nir", "-o", "back.bsnn")
    assert r.returncode == 0, r.stderr
    assert HardwareModel.load("back.bsnn").content_hash == HardwareModel.load(model_file).content_hash


def test_train_refuses_a_file_that_is_not_a_checkpoint(tmp_path, capsys, data_dir, checkpoint):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    r = run_main(capsys, "train", "--preset", "35-8-4", "--epochs", "1", "--data-dir", data_dir, "-o", notes)
    assert_one_line_error(r, "train", "exists and is not a bitsnn checkpoint", "--force", rc=1)
    assert notes.read_text() == "mine"
    # its own kind is replaced: training again to the same checkpoint
    r = run_main(capsys, "train", "--preset", "35-8-4", "--epochs", "1", "--data-dir", data_dir, "-o", checkpoint)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("force", [False, True])
def test_train_refuses_to_write_over_its_training_data(tmp_path, capsys, data_dir, force):
    files = sorted(data_dir.iterdir())
    before = snapshot(*files)
    for target in files:
        r = run_main(capsys, "train", "--preset", "35-8-4", "--epochs", "1", "--data-dir", data_dir, "-o", target,
                     *(["--force"] if force else []))
        line = assert_one_line_error(r, "train", rc=1)
        assert ("is an input" in line) if force else ("is an input" in line or "not a bitsnn checkpoint" in line)
    assert snapshot(*files) == before


def test_sim_wave_refuses_the_model(tmp_path, capsys, model_file, data_dir):
    before = snapshot(model_file)
    r = run_main(capsys, "sim", "--model", model_file, "--simulator", "golden", "--data-dir", data_dir,
                 "--wave", model_file, "--force")
    assert_one_line_error(r, "sim", "--wave", "is an input", rc=1)
    notes = tmp_path / "w.txt"
    notes.write_text("mine")
    r = run_main(capsys, "sim", "--model", model_file, "--simulator", "golden", "--data-dir", data_dir, "--wave", notes)
    assert_one_line_error(r, "sim", "--wave", "not a VCD waveform", rc=1)
    assert snapshot(model_file) == before and notes.read_text() == "mine"


# ---- report -o: the marker rule ------------------------------------------------------------------
def test_report_refuses_a_build_dir_and_a_users_directory(tmp_path, capsys, model_file, data_dir):
    build = tmp_path / "build"
    build.mkdir()
    (build / ".bitsnn-build").write_text("{}")
    (build / "report.json").write_text('{"fmax_mhz": 30.0}')
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.json").write_text("my json")
    (mine / "plot.png").write_bytes(b"\x89PNG my plot")
    before = snapshot(build / "report.json", mine / "report.json", mine / "plot.png")
    r = run_main(capsys, "report", "--model", model_file, "--data-dir", data_dir, "--build-dir", build, "-o", build)
    assert_one_line_error(r, "report", "not written by bitsnn report", rc=1)
    r = run_main(capsys, "report", "--model", model_file, "--data-dir", data_dir, "-o", mine)
    assert_one_line_error(r, "report", "not written by bitsnn report", ".bitsnn-report", rc=1)
    assert snapshot(build / "report.json", mine / "report.json", mine / "plot.png") == before


def test_report_rewrites_its_own_directory_but_never_an_input_in_it(tmp_path, capsys, model_file, data_dir):
    out = tmp_path / "rep"
    for _ in range(2):
        r = run_main(capsys, "report", "--model", model_file, "--data-dir", data_dir, "--images", "5", "-o", out)
        assert r.returncode == 0, r.stderr
    assert (out / ".bitsnn-report").is_file() and json.loads((out / "report.json").read_text())["images"] == 5
    inner = out / "m.bsnn"
    inner.write_bytes(model_file.read_bytes())
    r = run_main(capsys, "report", "--model", inner, "--data-dir", data_dir, "-o", out)
    assert_one_line_error(r, "report", "holds", "an input", rc=1)


# ---- build -o never deletes its own input ---------------------------------------------------------
def test_build_refuses_a_directory_holding_its_model(tmp_path, capsys, model_file):
    out = tmp_path / "b"
    out.mkdir()
    (out / ".bitsnn-build").write_text("{}")
    inner = out / "m.bsnn"
    inner.write_bytes(model_file.read_bytes())
    r = run_main(capsys, "build", "--board", "icebreaker", "--model", inner, "-o", out)
    assert_one_line_error(r, "build", "holds", "an input of this build", rc=1)
    assert inner.read_bytes() == model_file.read_bytes()


# ---- demo --save-config and the flow's inputs ------------------------------------------------------
def test_save_config_refuses_other_files_and_other_suffixes(tmp_path, capsys):
    mine = tmp_path / "existing.toml"
    mine.write_text('title = "my own toml"\n')
    r = run_main(capsys, "demo", "--save-config", mine)
    assert_one_line_error(r, "demo", "not a bitsnn flow configuration", "--force", rc=1)
    assert mine.read_text() == 'title = "my own toml"\n'
    r = run_main(capsys, "demo", "--save-config", tmp_path / "notes.txt")
    assert_one_line_error(r, "demo", ".toml or .json", rc=1)
    assert not (tmp_path / "notes.txt").exists()
    ours = tmp_path / "flow.toml"
    for _ in range(2):  # a flow configuration is replaced
        assert run_main(capsys, "demo", "--save-config", ours).returncode == 0
    assert run_main(capsys, "demo", "--save-config", mine, "--force").returncode == 0
    from bitsnn.flow import FlowConfig

    assert FlowConfig.load(mine) == FlowConfig.load(ours)


def test_flow_refuses_a_model_where_a_step_writes(tmp_path, capsys, model_file):
    from bitsnn.flow import RUN_MARKER, FlowConfig

    run = tmp_path / "run"
    (run / "build-icebreaker").mkdir(parents=True)
    (run / RUN_MARKER).write_text("{}")
    inner = run / "build-icebreaker" / "m.bsnn"
    inner.write_bytes(model_file.read_bytes())
    cfg = FlowConfig(run_dir=str(run), model=str(inner))
    path = cfg.save(tmp_path / "flow.toml")
    r = run_main(capsys, "flow", path, "--start-step", "build")
    assert_one_line_error(r, "flow", "lies where this flow writes", rc=1)
    assert inner.read_bytes() == model_file.read_bytes()


def test_flow_never_rewrites_the_config_it_reads(tmp_path, capsys, model_file, data_dir):
    from bitsnn.flow import RUN_MARKER, FlowConfig

    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_MARKER).write_text("{}")
    cfg = FlowConfig(run_dir=str(run), model=str(model_file), data_dir=str(data_dir))
    cfg.cosim.simulator = "amaranth"
    cfg.save(run / "config.toml")
    text = "# my comments\n" + (run / "config.toml").read_text()
    (run / "config.toml").write_text(text)
    # past the preflight, the cosim step asks for 100 of the 20 test images and fails at once
    r = run_main(capsys, "flow", run / "config.toml", "--stop-step", "cosim")
    assert r.returncode == 1 and "==> cosim: FAILED" in r.stdout, r.stdout + r.stderr
    assert (run / "config.toml").read_text() == text
    other = tmp_path / "other.toml"
    other.write_text(text)
    run_main(capsys, "flow", other, "--stop-step", "cosim")
    assert (run / "config.toml").read_text() != text  # a config from elsewhere is recorded in the run


# ---- leftovers of a killed run -----------------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path, capsys, model_file, data_dir):
    from bitsnn.fileio import atomic_write_text, clean_stale_temps

    dead = _dead_pid()
    stale = tmp_path / f".m.bsnn.{dead}.abcd1234.tmp"
    stale.write_bytes(b"half")
    live = tmp_path / f".m.bsnn.{os.getpid()}.efgh5678.tmp"
    live.write_bytes(b"being written")
    stale_dir = tmp_path / f".b.{dead}.x1y2z3ab"
    (stale_dir / "build").mkdir(parents=True)
    mine = tmp_path / ".m.bsnn.notes"
    mine.write_text("mine")
    atomic_write_text(tmp_path / "m.bsnn", "new")
    assert not stale.exists() and live.exists() and mine.exists()
    assert clean_stale_temps(tmp_path, "b") == [stale_dir] and not stale_dir.exists()
