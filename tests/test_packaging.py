"""Packaging: the stage folders install under ``bitsnn`` only, and light imports stay light."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bitsnn

STAGES = ("model", "sim", "hw", "boards", "firmware")
REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path) -> str:
    """Run ``code`` in a fresh interpreter of this venv, away from the repository; return its stdout."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def _from_source_tree() -> bool:
    """True when ``bitsnn`` runs from this checkout (an editable install), not a copy in site-packages."""
    return Path(bitsnn.__file__).resolve().parent == REPO / "bitsnn"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_imports_under_bitsnn(stage):
    mod = importlib.import_module(f"bitsnn.{stage}")
    assert mod.__name__ == f"bitsnn.{stage}"


def test_all_stages_import_together():
    import bitsnn.boards
    import bitsnn.firmware
    import bitsnn.hw
    import bitsnn.model
    import bitsnn.sim  # noqa: F401


@pytest.mark.parametrize("stage", STAGES)
def test_stage_comes_from_its_folder(stage):
    mod = importlib.import_module(f"bitsnn.{stage}")
    here = Path(mod.__file__).resolve()
    if _from_source_tree():
        assert here == REPO / stage / "__init__.py"
    else:  # a regular install copies the folder to bitsnn/<stage>/
        assert here == Path(bitsnn.__file__).resolve().parent / stage / "__init__.py"
        assert here.read_bytes() == (REPO / stage / "__init__.py").read_bytes()


def test_sim_lives_in_the_repos_sim_folder():
    import bitsnn.sim

    if not _from_source_tree():
        pytest.skip("bitsnn is not an editable install: bitsnn.sim is a copy in site-packages")
    assert Path(bitsnn.sim.__file__).resolve().parent == REPO / "sim"


def test_no_top_level_stage_packages(tmp_path):
    out = run_python(
        f"""
        import importlib.util, json
        names = {list(STAGES) + ["bitsnn"]!r}
        print(json.dumps({{n: importlib.util.find_spec(n) is not None for n in names}}))
        """,
        cwd=tmp_path,
    )
    found = json.loads(out)
    assert found.pop("bitsnn") is True  # the check itself sees the installed package
    assert found == {s: False for s in STAGES}


def test_distribution_has_one_top_level_package(tmp_path):
    # Run away from the repository so that importlib.metadata sees the installed distribution,
    # not the source tree's bitsnn.egg-info.
    out = run_python(
        """
        import importlib.metadata as md, json
        dist = md.distribution("bitsnn")
        print(json.dumps({
            "top_level": (dist.read_text("top_level.txt") or "").split(),
            "files": [str(f) for f in dist.files or ()],
            "provides": sorted(k for k, v in md.packages_distributions().items() if "bitsnn" in v),
        }))
        """,
        cwd=tmp_path,
    )
    info = json.loads(out)
    assert info["top_level"] == ["bitsnn"]
    assert [p for p in info["provides"] if not p.startswith("__editable__")] == ["bitsnn"]

    tops = set()
    for f in info["files"]:
        parts = Path(f).parts
        first = parts[0]
        if first == ".." or first.endswith((".dist-info", ".egg-info")) or first == "__pycache__":
            continue  # scripts, metadata, bytecode
        if first.startswith("__editable__"):
            continue  # setuptools' editable-install finder and its .pth
        tops.add(first if len(parts) > 1 else first.removesuffix(".py"))
    assert tops <= {"bitsnn"}, sorted(tops)


@pytest.mark.parametrize("modules", [["bitsnn.cli", "bitsnn.data"], ["bitsnn.cli"], ["bitsnn.data"]])
def test_light_imports_do_not_pull_heavy_stacks(tmp_path, modules):
    out = run_python(
        f"""
        import importlib, json, sys
        for name in {modules!r}:
            importlib.import_module(name)
        if "bitsnn.cli" in sys.modules:
            sys.modules["bitsnn.cli"].build_parser().format_help()
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "amaranth"))
        print(json.dumps(heavy))
        """,
        cwd=tmp_path,
    )
    assert json.loads(out) == []
