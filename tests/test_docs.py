"""The worked example of docs/ecosystem.md runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


def python_blocks(path) -> str:
    """The ```python blocks of a Markdown file, joined in order."""
    return "\n".join(re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M))


@pytest.mark.slow
def test_ecosystem_worked_example_runs(tmp_path, mnist_dir):
    code = python_blocks(REPO / "docs" / "ecosystem.md")
    assert "bitsnn.export(" in code and "read_nir" in code and "neurobench=True" in code
    (tmp_path / "example.py").write_text(code)
    env = dict(os.environ, BITSNN_DATA=str(mnist_dir), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 mismatches on 10000 images" in r.stdout
    assert "NeuroBench 2.3.0 on 1000 images" in r.stdout and "DIFFERS" not in r.stdout
    assert (tmp_path / "net.bsnn").is_file() and (tmp_path / "net.nir").is_file()
