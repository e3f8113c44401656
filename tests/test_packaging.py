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
    """Every stage imports beside the others under one name, each from its own top-level folder."""
    import bitsnn.boards
    import bitsnn.firmware
    import bitsnn.hw
    import bitsnn.model
    import bitsnn.sim

    mods = {"boards": bitsnn.boards, "firmware": bitsnn.firmware, "hw": bitsnn.hw, "model": bitsnn.model,
            "sim": bitsnn.sim}
    for stage, mod in mods.items():
        assert Path(mod.__file__).resolve().parent.name == stage, (stage, mod.__file__)
    assert len({Path(m.__file__).resolve().parent for m in mods.values()}) == len(mods)


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


#: Modules that claim to import neither torch nor amaranth: "NumPy only" (bitsnn.data, bitsnn.hwmodel,
#: bitsnn.report, the golden and cycle models), "NumPy/stdlib only" (bitsnn.protocol), "never
#: imports torch or amaranth" (bitsnn.cli), the stdlib-only helpers, the flow (its steps import their
#: stages when they run) and the host side of the UART protocol (which runs on a machine without
#: the ML or hardware stacks).
LIGHT_MODULES = (
    "bitsnn",
    "bitsnn.cli",
    "bitsnn.data",
    "bitsnn.hwmodel",
    "bitsnn.hwplan",
    "bitsnn.kinds",
    "bitsnn.protocol",
    "bitsnn.fileio",
    "bitsnn.options",
    "bitsnn.flow",
    "bitsnn.report",
    "bitsnn.sim",
    "bitsnn.sim.golden",
    "bitsnn.sim.cycles",
    "bitsnn.firmware",
    "bitsnn.firmware.driver",
    "bitsnn.firmware.cli",
    "bitsnn.model",
    "bitsnn.nirgraph",
    "bitsnn.report.neurobench",
)

HEAVY = ("torch", "amaranth")


def loaded_after(code: str, cwd: Path) -> dict:
    """Run ``code`` in a fresh interpreter; return the heavy stacks and the ``bitsnn`` modules it loaded."""
    out = run_python(
        textwrap.dedent(code) + textwrap.dedent(
            f"""
            import json as _json, sys as _sys
            print(_json.dumps({{
                "heavy": sorted(m for m in _sys.modules if m.split(".")[0] in {HEAVY!r}),
                "bitsnn": sorted(m for m in _sys.modules if m.split(".")[0] == "bitsnn"),
            }}))
            """
        ),
        cwd=cwd,
    )
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize(
    "modules", [list(LIGHT_MODULES), ["bitsnn.cli", "bitsnn.data"]] + [[m] for m in LIGHT_MODULES],
    ids=lambda ms: "all" if len(ms) == len(LIGHT_MODULES) else "+".join(ms),
)
def test_light_imports_do_not_pull_heavy_stacks(tmp_path, modules):
    """Each module alone (so one cannot hide another's heavy import) imports no torch, no amaranth."""
    loaded = loaded_after(
        f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        if "bitsnn.cli" in sys.modules:
            sys.modules["bitsnn.cli"].build_parser().format_help()
        """,
        tmp_path,
    )
    assert loaded["heavy"] == []
    assert set(modules) <= set(loaded["bitsnn"])


def test_golden_and_cycle_models_run_without_heavy_stacks(tmp_path):
    """Running the golden model and the cycle model (not just importing them) stays light."""
    loaded = loaded_after(
        """
        import numpy as np
        from bitsnn.hwmodel import random_model
        from bitsnn.sim import golden
        from bitsnn.sim.cycles import default_lanes, predict_cycles

        rng = np.random.default_rng(0)
        for enc in ("spikes", "pixels"):
            model = random_model(rng, [20, 12, 4], input_encoding=enc)
            images = rng.integers(0, 256, size=(3, 20), dtype=np.uint8)
            g = golden.run(model, images)
            for mode in ("event", "dense"):
                predict_cycles(model, g, mode=mode, lanes=default_lanes(model), word=8)
        """,
        tmp_path,
    )
    assert loaded["heavy"] == []
    assert not [m for m in loaded["bitsnn"] if m.startswith(("bitsnn.hw.", "bitsnn.model")) or m == "bitsnn.hw"]


def test_hw_never_imports_torch(tmp_path):
    """Every bitsnn.hw module imports neither torch, bitsnn.model nor bitsnn.sim, also when a design
    is generated and estimated: the facts hw/ shares with the cycle model live in bitsnn.hwplan."""
    loaded = loaded_after(
        """
        import importlib, pkgutil
        import numpy as np
        import bitsnn.hw
        for info in pkgutil.iter_modules(bitsnn.hw.__path__):
            importlib.import_module("bitsnn.hw." + info.name)
        import sys
        at_import = sorted(m for m in sys.modules if m.startswith(("bitsnn.sim", "bitsnn.model", "torch")))
        assert not at_import, at_import

        from amaranth.back import rtlil
        from bitsnn.hw import Accelerator
        from bitsnn.hw.estimate import estimate_resources
        from bitsnn.hwmodel import random_model

        model = random_model(np.random.default_rng(0), [20, 12, 4])
        estimate_resources(model, lanes=8, word=8)
        for mode in ("event", "dense"):
            rtlil.convert(Accelerator(model, mode=mode, lanes=8, word=8))
        """,
        tmp_path,
    )
    assert not [m for m in loaded["heavy"] if m.split(".")[0] == "torch"]
    assert not [m for m in loaded["bitsnn"] if m.startswith(("bitsnn.model", "bitsnn.sim"))]
    assert "bitsnn.hw.estimate" in loaded["bitsnn"] and "bitsnn.hw.accelerator" in loaded["bitsnn"]


def test_report_runs_without_amaranth(tmp_path, mnist_dir):
    """`bitsnn report` (golden model, cycle model, energy, plots) on a dense and a conv model loads
    neither torch nor amaranth: the board facts it needs are plain data (bitsnn.boards.FACTS)."""
    import numpy as np

    from bitsnn.hwmodel import random_model

    rng = np.random.default_rng(0)
    paths = [random_model(rng, [784, 16, 10], input_shape=(28, 28)).save(tmp_path / "d.bsnn"),
             random_model(rng, [784, 10], input_shape=(28, 28), convs=((4, 3, 2),)).save(tmp_path / "c.bsnn")]
    loaded = loaded_after(
        f"""
        from bitsnn.report import make_report
        for i, p in enumerate({[str(p) for p in paths]!r}):
            make_report(p, board="ulx3s-85f", output={str(tmp_path)!r} + f"/r{{i}}", images=20,
                        data_dir={str(mnist_dir)!r}, say=lambda *a: None)
        """,
        tmp_path,
    )
    assert loaded["heavy"] == []
    assert (tmp_path / "r1" / "feature_maps.png").is_file() and (tmp_path / "r0" / "report.json").is_file()


@pytest.mark.parametrize("no_skips", [False, True])
def test_make_test_turns_a_skip_into_a_failure(tmp_path, no_skips):
    """``make test`` sets BITSNN_NO_SKIPS: a test that skips (a missing extra or data set) fails
    there, so no ``importorskip`` can hide a broken install in CI."""
    tests = Path(__file__).resolve().parent
    (tmp_path / "conftest.py").write_text(  # the project's hook, loaded under another module name
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('bitsnn_tests_conftest', {str(tests / 'conftest.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(mod)\n"
        "pytest_runtest_makereport = mod.pytest_runtest_makereport\n")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\ndef test_skips():\n    pytest.importorskip('bitsnn_no_such_module')\n")
    env = {k: v for k, v in os.environ.items() if k != "BITSNN_NO_SKIPS"}
    if no_skips:
        env["BITSNN_NO_SKIPS"] = "1"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                        str(tmp_path / "test_x.py")], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=120)
    if no_skips:
        assert r.returncode == 1 and "skipped under make test" in r.stdout, r.stdout
    else:
        assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout
