"""Reproducibility and logs: the same inputs give a byte-identical hardware-model file, and a
command whose output is not a terminal writes clean lines, not progress-bar fragments."""

from __future__ import annotations

import pytest

from bitsnn.hwmodel import HardwareModel
from test_cli import run_cli

pytest.importorskip("torch")


def train_and_export(tmp_path, data_dir, name: str, seed: int = 0):
    ckpt, model = tmp_path / f"{name}.ckpt", tmp_path / name / "model.bsnn"
    r = run_cli("train", "--preset", "35-8-4", "--epochs", "2", "--seed", seed, "--data-dir", data_dir, "-o", ckpt,
                cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    r2 = run_cli("export", ckpt, "--data-dir", data_dir, "-o", model, cwd=tmp_path, timeout=300)
    assert r2.returncode == 0, r2.stderr
    return r, model


def test_same_training_gives_a_byte_identical_model_file(tmp_path, data_dir):
    """Two trainings with the same seed, checkpoints under other names: the same bytes, so the
    same content hash and the same device model id (bitsnn run accepts either)."""
    _, a = train_and_export(tmp_path, data_dir, "first")
    _, b = train_and_export(tmp_path, data_dir, "second")
    assert a.read_bytes() == b.read_bytes()
    meta = HardwareModel.load(a).meta
    assert "train_seconds" not in meta["train_metrics"] and "checkpoint" not in meta
    _, c = train_and_export(tmp_path, data_dir, "other", seed=1)
    assert HardwareModel.load(c).content_hash != HardwareModel.load(a).content_hash


def test_piped_training_log_is_one_clean_line_per_epoch(tmp_path, data_dir):
    r, _ = train_and_export(tmp_path, data_dir, "log")
    assert "\r" not in r.stdout + r.stderr  # no bar fragments
    assert r.stderr == ""
    epochs = [line for line in r.stdout.splitlines() if line.startswith("[train] epoch ")]
    assert [line.split()[2] for line in epochs] == ["1/2:", "2/2:"]
