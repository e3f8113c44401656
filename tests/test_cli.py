"""The installed ``bitsnn`` console script, run as a user would run it."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bitsnn
from bitsnn.cli import HANDLERS, build_parser

BITSNN = Path(sys.executable).parent / "bitsnn"
SUBCOMMANDS = ("train", "export", "sim", "build", "report", "run", "demo")


def run_cli(*args, cwd=None, timeout=60) -> subprocess.CompletedProcess:
    assert BITSNN.is_file(), f"console script not installed at {BITSNN}"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(BITSNN), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def subparsers() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("bitsnn's parser has no subcommands")


def test_expected_subcommands_exist():
    assert set(SUBCOMMANDS) <= set(subparsers())
    assert set(HANDLERS) <= set(subparsers())


def test_version(tmp_path):
    r = run_cli("--version", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"bitsnn {bitsnn.__version__}"
    assert bitsnn.__version__ != "0.0.0+unknown"  # the installed metadata is found


def test_help(tmp_path):
    r = run_cli("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: bitsnn")
    for name in SUBCOMMANDS:
        assert name in r.stdout
    assert r.stderr == ""


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(tmp_path, name):
    r = run_cli(name, "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: bitsnn {name}")
    assert r.stderr == ""


def test_no_subcommand_is_a_usage_error(tmp_path):
    r = run_cli(cwd=tmp_path)
    assert r.returncode == 2
    assert "usage: bitsnn" in r.stderr
    assert r.stdout == ""


def test_every_subcommand_has_a_handler():
    """Each declared subcommand maps to an importable function (no placeholder left)."""
    import importlib

    assert set(subparsers()) == set(HANDLERS)
    for name, target in HANDLERS.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


def test_unregistered_subcommand_says_not_implemented(tmp_path, monkeypatch, capsys):
    """The fallback for a declared subcommand without a handler: exit 2, one line, nothing written."""
    from bitsnn import cli

    monkeypatch.delitem(cli.HANDLERS, "report")
    rc = cli.main(["report", "--model", str(tmp_path / "m.bsnn"), "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.strip() == "bitsnn report: not implemented yet"
    assert list(tmp_path.iterdir()) == []


def test_demo_nonexistent_data_dir(tmp_path):
    missing = tmp_path / "no-such-data"
    r = run_cli("demo", "--data-dir", missing, "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("bitsnn demo: error:")
    assert str(missing) in lines[0]
    assert "Traceback" not in r.stderr + r.stdout


def test_demo_corrupt_data_is_a_one_line_error(tmp_path, custom_arrays, write_set):
    paths = write_set(tmp_path / "data", custom_arrays, gz=True)
    paths["train-images-idx3-ubyte"].write_bytes(b"not gzip at all")
    r = run_cli("demo", "--data-dir", tmp_path / "data", "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bitsnn demo: error:"), r.stderr
    assert str(paths["train-images-idx3-ubyte"]) in lines[0]

