"""Bad input that once crashed (exit 3) or was accepted silently: each gets one line and exit 1,
before any long work, and writes nothing."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from bitsnn.hwmodel import MAGIC, _content_hash, _header_of, random_model
from test_bad_input import assert_one_line_error, run_main


def _rehashed(model, edit) -> bytes:
    """``model``'s file with its header edited and the content hash recomputed."""
    data = model.to_bytes()
    hj = _header_of(data)
    header, payload = json.loads(hj), data[16 + len(hj):]
    edit(header)
    header["content_hash"] = _content_hash(header, payload)
    hj = json.dumps(header).encode()
    return MAGIC + struct.pack("<II", header["version"], len(hj)) + hj + payload


# ---- model files whose every field passes the hash --------------------------------------------------
@pytest.mark.parametrize("command", ["sim", "report", "build"])
def test_a_pool_of_zero_is_refused_in_one_line(tmp_path, capsys, data_dir, command):
    m = random_model(np.random.default_rng(0), [35, 4], input_shape=(5, 7), convs=((2, 3, 2),),
                     input_encoding="pixels")
    path = tmp_path / "pool0.bsnn"
    path.write_bytes(_rehashed(m, lambda h: h["layers"][0].__setitem__("pool", 0)))
    args = {"sim": ["sim", "--model", path, "--simulator", "golden", "--data-dir", data_dir],
            "report": ["report", "--model", path, "--data-dir", data_dir],
            "build": ["build", "--board", "icebreaker", "--model", path, "-o", tmp_path / "b"]}[command]
    assert_one_line_error(run_main(capsys, *args), command, "pool 0", rc=1)


def test_a_pixel_model_with_a_huge_input_threshold_is_refused(tmp_path, capsys, data_dir):
    m = random_model(np.random.default_rng(0), [35, 6, 4], input_shape=(5, 7), input_encoding="pixels")
    path = tmp_path / "t.bsnn"
    path.write_bytes(_rehashed(m, lambda h: h["input"].__setitem__("threshold", 2**70)))
    r = run_main(capsys, "sim", "--model", path, "--simulator", "golden", "--data-dir", data_dir)
    assert_one_line_error(r, "sim", "input threshold", "outside 0..255", rc=1)


# ---- training -----------------------------------------------------------------------------------------
def test_a_last_batch_of_one_joins_the_batch_before(tmp_path, capsys, data_dir):
    pytest.importorskip("torch")
    out = tmp_path / "m.ckpt"
    # 33 images in batches of 32: the last batch would hold one image, which BatchNorm cannot take
    r = run_main(capsys, "train", "--preset", "35-8-4", "--epochs", "1", "--batch-size", "32", "--limit-train", "33",
                 "--data-dir", data_dir, "-o", out)
    assert r.returncode == 0, r.stderr
    assert out.is_file()
    assert "1/1" in r.stdout or "epoch 1" in r.stdout


@pytest.mark.parametrize("spec,needle", [
    ("784-10000000-10", "neurons in one layer"),
    ("784-100000-10", "weights in one layer"),
    ("784-c99999-10", "neurons in one layer"),
    ("784-c8k17-10", "kernel 17"),
])
def test_a_spec_past_the_limits_is_refused_before_anything_is_allocated(tmp_path, capsys, spec, needle):
    r = run_main(capsys, "train", "--preset", spec, "--data-dir", tmp_path / "no-data", "-o", tmp_path / "m.ckpt")
    line = assert_one_line_error(r, "train", needle, rc=1)
    assert "no-data" not in line


# ---- checkpoints -----------------------------------------------------------------------------------
def _tampered(checkpoint: Path, edit) -> Path:
    import torch

    obj = torch.load(checkpoint, weights_only=True)
    edit(obj)
    path = checkpoint.with_name("bad.ckpt")
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("what,edit,needle", [
    ("arch 5", lambda o: o["config"].__setitem__("arch", 5), "config.arch"),
    ("arch without spec", lambda o: o["config"]["arch"].pop("spec"), "config.arch"),
    ("NaN weight", lambda o: o["state_dict"]["hidden.0.fc.weight"].view(-1).__setitem__(0, float("nan")),
     "hidden.0.fc.weight holds NaN"),
    ("NaN running_var", lambda o: o["state_dict"]["hidden.0.bn.running_var"].__setitem__(0, float("nan")),
     "running_var holds NaN"),
    ("inf alpha", lambda o: o["state_dict"]["hidden.0.fc.alpha"].view(-1).__setitem__(0, float("inf")),
     "alpha holds inf"),
    ("wrong shape", lambda o: o["state_dict"].__setitem__("output.weight", o["state_dict"]["output.weight"][:, :3]),
     "size mismatch for output.weight"),
])
def test_export_refuses_a_broken_checkpoint(tmp_path, capsys, checkpoint, data_dir, what, edit, needle):
    bad = _tampered(checkpoint, edit)
    out = tmp_path / "m.bsnn"
    r = run_main(capsys, "export", bad, "--data-dir", data_dir, "-o", out)
    assert_one_line_error(r, "export", needle, rc=1)
    assert not out.exists()


# ---- NIR graphs --------------------------------------------------------------------------------------
def _graph_cases():
    nan, inf = float("nan"), float("inf")

    def meta(key, value):
        return lambda g: g.metadata.__setitem__(key, value)

    def node(name, attr, value):
        def edit(g):
            a = np.array(getattr(g.nodes[name], attr), dtype=np.float32)
            a.reshape(-1)[0] = value
            setattr(g.nodes[name], attr, a)
        return edit

    return {
        "threshold missing": (lambda g: g.metadata.pop("input_threshold"), "no input_threshold"),
        "threshold abc": (meta("input_threshold", "abc"), "input_threshold must be"),
        "threshold NaN": (meta("input_threshold", nan), "input_threshold must be"),
        "meta not JSON": (meta("meta", "{not json"), "not valid JSON"),
        "meta a list": (meta("meta", "[1,2]"), "must be a JSON object"),
        "crop a string": (meta("input_crop", "abcd"), "input_crop must be"),
        "shape a string": (meta("input_shape", "5x7"), "input_shape must be"),
        "inf weight": (node("fc1", "weight", inf), "weight holds inf"),
        "NaN bias": (node("fc1", "bias", nan), "bias holds NaN"),
        "inf threshold": (node("fc1_spike", "v_threshold", inf), "v_threshold holds inf"),
        "NaN r": (node("fc1_spike", "r", nan), "r holds NaN"),
    }


@pytest.mark.parametrize("case", list(_graph_cases()))
def test_import_refuses_bad_graphs_in_one_line(tmp_path, capsys, case):
    nir = pytest.importorskip("nir")
    from bitsnn.nirgraph import to_nir

    edit, needle = _graph_cases()[case]
    g = to_nir(random_model(np.random.default_rng(0), [35, 8, 4], input_shape=(5, 7)))
    edit(g)
    nir.write(tmp_path / "g.nir", g)
    r = run_main(capsys, "import", tmp_path / "g.nir", "-o", tmp_path / "m.bsnn")
    assert_one_line_error(r, "import", needle, rc=1)
    assert not (tmp_path / "m.bsnn").exists()


def test_import_refuses_a_nan_threshold_node_and_an_empty_input(tmp_path, capsys):
    nir = pytest.importorskip("nir")
    w = np.where(np.random.default_rng(0).random((4, 6)) < 0.5, -1.0, 1.0).astype(np.float32)
    for case, threshold, size, needle in (("nan", np.float32("nan"), 6, "threshold holds NaN"),
                                          ("empty", np.float32(0.5), 0, "has no pixels")):
        nodes = {"input": nir.Input(np.array([size])), "thr": nir.Threshold(np.full(size, threshold, np.float32)),
                 "fc": nir.Linear(weight=w[:, :size]), "output": nir.Output(np.array([4]))}
        g = nir.NIRGraph(nodes=nodes, edges=[("input", "thr"), ("thr", "fc"), ("fc", "output")])
        nir.write(tmp_path / f"{case}.nir", g)
        r = run_main(capsys, "import", tmp_path / f"{case}.nir", "-o", tmp_path / f"{case}.bsnn")
        assert_one_line_error(r, "import", needle, rc=1)


@pytest.mark.parametrize("name", ["fc\x1b[31mred\x1b[0m", "fc\t1", "", "x" * 129])
def test_a_layer_name_a_terminal_would_act_on_is_refused(tmp_path, capsys, data_dir, name):
    m = random_model(np.random.default_rng(0), [35, 6, 4], input_shape=(5, 7))
    path = tmp_path / "n.bsnn"
    path.write_bytes(_rehashed(m, lambda h: h["layers"][0].__setitem__("name", name)))
    r = run_main(capsys, "report", "--model", path, "--data-dir", data_dir)
    line = assert_one_line_error(r, "report", "printable", rc=1)
    assert "\x1b" not in r.stderr + r.stdout and "\t" not in line


@pytest.mark.parametrize("option,value", [("--images", "\u0661\u0660"), ("--images", "1_0"), ("--lr", "1_0e-3"),
                                          ("--images", "\uff11\uff10"), ("--lr", "\u0661e-3")])
def test_numbers_take_ascii_digits_only(tmp_path, capsys, option, value):
    cmd = ["sim", "--model", tmp_path / "m.bsnn"] if option == "--images" else ["train", "-o", tmp_path / "m.ckpt"]
    r = run_main(capsys, *cmd, option, value)
    assert_one_line_error(r, cmd[0], option, "digits 0-9", rc=1)


def test_spram_layers_named_twice_refused(tmp_path, capsys):
    m = random_model(np.random.default_rng(0), [35, 6, 4], input_shape=(5, 7))
    path = m.save(tmp_path / "m.bsnn")
    r = run_main(capsys, "build", "--board", "icebreaker", "--model", path, "--spram-layers", "0,0", "-o", tmp_path / "b")
    assert_one_line_error(r, "build", "named twice", rc=1)


def test_flow_json_config_with_a_duplicate_key_refused(tmp_path, capsys):
    cfg = tmp_path / "flow.json"
    cfg.write_text('{"run_dir": "a", "run_dir": "b"}')
    assert_one_line_error(run_main(capsys, "flow", cfg), "flow", "'run_dir' is given twice", rc=1)


def test_flow_checks_build_and_data_settings_before_the_first_step(tmp_path, capsys, data_dir):
    from bitsnn.flow import FlowConfig

    m = random_model(np.random.default_rng(0), [35, 6, 4], input_shape=(5, 7))
    model = m.save(tmp_path / "m.bsnn")
    cfg = FlowConfig(run_dir=str(tmp_path / "run"), model=str(model), data_dir=str(data_dir))
    cfg.cosim.simulator = "amaranth"
    cfg.build.spram_layers = "banana"
    r = run_main(capsys, "flow", cfg.save(tmp_path / "a.toml"))
    assert_one_line_error(r, "flow", "spram_layers", "banana", rc=1)
    assert "==> cosim" not in r.stdout  # refused before the co-simulation ran
    cfg.build.spram_layers = "auto"
    cfg.data_dir = str(tmp_path / "missing-data")
    r = run_main(capsys, "flow", cfg.save(tmp_path / "b.toml"), "--start-step", "build")
    assert_one_line_error(r, "flow", "missing-data", rc=1)
    assert "==> build" not in r.stdout  # refused before the build ran


# ---- messages ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raised", ["KeyboardInterrupt()", "BitsnnError('no room on the board')"])
def test_a_stopped_command_leaves_no_amaranth_warnings(tmp_path, raised):
    """A command stopped (Ctrl-C, or refused) after building designs it never elaborated prints its one
    line and nothing after it: Amaranth warns at exit about each unused design unless told not to."""
    import subprocess
    import sys

    script = f"""
import sys
from bitsnn import BitsnnError, cli
from amaranth import Elaboratable, Module
from amaranth.hdl import Fragment

class Design(Elaboratable):
    def elaborate(self, platform):
        return Module()

def handler(args):
    Fragment.get(Design(), None)  # Amaranth warns about unused designs only once it has elaborated one
    designs = [Design() for _ in range(30)]  # what an interrupted build leaves behind
    raise {raised}

cli.HANDLERS["build"] = "__main__:handler"
sys.exit(cli.main(["build", "--board", "icebreaker", "--model", "m.bsnn", "-o", "out"]))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode in (1, 130), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "never used" not in r.stderr


def test_an_idx_header_past_int64_is_reported_as_truncated(tmp_path):
    from bitsnn.data import IDXError, read_idx

    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(struct.pack(">HBBIII", 0, 0x08, 3, 2**31, 65536, 65536) + bytes(100))
    with pytest.raises(IDXError, match=r"truncated: header promises 9223372036854775808 data bytes, file has 100"):
        read_idx(path)


@pytest.mark.parametrize("content,needle", [
    (b"garbage", "not a torch.save archive"),
    (b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.", "not a torch.save archive"),
    ("torch-object", "objects other than tensors"),
])
def test_a_bad_checkpoint_gets_one_clean_line(tmp_path, capsys, content, needle):
    path = tmp_path / "bad.ckpt"
    if content == "torch-object":
        import fractions

        import torch

        torch.save({"config": {"arch": {}}, "state_dict": {"w": fractions.Fraction(1, 3)}}, path)
    else:
        path.write_bytes(content)
    r = run_main(capsys, "export", path, "-o", tmp_path / "m.bsnn")
    assert_one_line_error(r, "export", needle, rc=1)
    assert "Warning" not in r.stderr and "weights_only" not in r.stderr


def test_a_directory_as_checkpoint_or_graph_is_called_a_directory(tmp_path, capsys):
    r = run_main(capsys, "export", tmp_path, "-o", tmp_path / "m.bsnn")
    assert_one_line_error(r, "export", "is a directory", rc=1)
    r = run_main(capsys, "import", tmp_path, "-o", tmp_path / "m.bsnn")
    assert_one_line_error(r, "import", "is a directory", rc=1)


def test_a_graph_written_in_part_is_called_so(tmp_path, capsys):
    pytest.importorskip("nir")
    import h5py

    from bitsnn.nirgraph import write_nir

    g = write_nir(random_model(np.random.default_rng(0), [35, 8, 4], input_shape=(5, 7)), tmp_path / "g.nir")
    (tmp_path / "half.nir").write_bytes(g.read_bytes()[: g.stat().st_size // 2])
    r = run_main(capsys, "import", tmp_path / "half.nir", "-o", tmp_path / "m.bsnn")
    assert_one_line_error(r, "import", "truncated", "written only in part", rc=1)
    with h5py.File(tmp_path / "notype.nir", "w") as f:
        f.create_group("node")
    r = run_main(capsys, "import", tmp_path / "notype.nir", "-o", tmp_path / "m.bsnn")
    assert_one_line_error(r, "import", "without NIR's 'type' entry", rc=1)


def test_a_spec_with_a_one_input_layer_is_refused_before_training(tmp_path, capsys):
    r = run_main(capsys, "train", "--preset", "1-4-10", "--crop", "1", "-o", tmp_path / "m.ckpt")
    line = assert_one_line_error(r, "train", "one input", rc=1)
    assert "Warning" not in r.stderr


def test_build_with_an_empty_output_says_it_is_empty(tmp_path, capsys, monkeypatch):
    m = random_model(np.random.default_rng(0), [35, 6, 4], input_shape=(5, 7)).save(tmp_path / "m.bsnn")
    monkeypatch.chdir(tmp_path)
    r = run_main(capsys, "build", "--board", "icebreaker", "--model", m, "-o", "")
    line = assert_one_line_error(r, "build", "-o: the output path is empty", rc=1)
    assert "directory exists" not in line
