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


def minimal_args(name: str, tmp_path: Path) -> list[str]:
    """The fewest arguments that parse for subcommand ``name``: every required one, with a value."""
    args = []
    for action in subparsers()[name]._actions:
        positional = not action.option_strings
        if not (action.required or (positional and action.nargs not in ("?", "*"))):
            continue
        value = str(action.choices[0]) if action.choices else str(tmp_path / action.dest)
        args += [value] if positional else [action.option_strings[0], value]
    return args


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


# Derived from HANDLERS: a subcommand leaves this list as soon as it is implemented.
@pytest.mark.parametrize("name", sorted(set(subparsers()) - set(HANDLERS)))
def test_unimplemented_subcommand(tmp_path, name):
    r = run_cli(name, *minimal_args(name, tmp_path), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert r.stderr.strip() == f"bitsnn {name}: not implemented yet"
    assert list(tmp_path.iterdir()) == []  # and nothing was written


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

