"""The input over time in hardware: ``given`` input (the user's spikes at every step, as an event
sensor delivers them) and ``rate`` input (a generator per step in the input buffer), into dense
and convolution first layers, against the golden model on every spike of every step, the summed
scores, the class, the spike counts and the exact cycle count; in the Amaranth simulator, through
the UART top's INFER, and as Verilog on Icarus and Verilator."""

from __future__ import annotations

import numpy as np
import pytest

from bitsnn import hwplan
from bitsnn.hwmodel import random_model, rate_randoms, rate_start_states
from bitsnn.sim import golden
from bitsnn.sim.cosim.cli import compare
from bitsnn.sim.cycles import predict_cycles


def coded_model(seed, sizes, T, coding, *, convs=(), shape=(8, 8), threshold_spread=0.3):
    """Spike input of ``coding`` over T steps into dense layers (and convolutions), alternately
    lif (leak m = 6554, a multiplier; reset by subtraction, input shift 1) and if."""
    n = len(sizes) - 2 + len(convs)
    neurons = {i: ({"neuron": "lif", "leak": 6554, "reset": "subtract", "shift": 1} if i % 2 == 0
                   else {"neuron": "if", "reset": "subtract-next"}) for i in range(n)}
    return random_model(np.random.default_rng(seed), sizes, input_shape=shape, convs=convs, input_encoding="spikes",
                        neurons=neurons, timesteps=T, input_coding=coding, threshold_spread=threshold_spread,
                        input_seed=0x2545F491 if coding == "rate" else None)


def coded_inputs(model, n, seed=5, density=0.3):
    """n inputs for ``model``: every step's spikes (given coding) or 8-bit images (rate)."""
    rng = np.random.default_rng(seed)
    if model.input_coding == "given":
        return (rng.random((n, model.timesteps, *model.input_shape)) < density).astype(np.uint8)
    return rng.integers(0, 256, (n, *model.input_shape)).astype(np.uint8)


CASES = [
    # (model, accelerator parameters)
    (dict(seed=1, sizes=[64, 16, 10], T=3, coding="given"), dict(lanes=4)),
    (dict(seed=1, sizes=[64, 16, 12, 10], T=4, coding="rate"), dict(lanes=4, k=2)),
    (dict(seed=2, sizes=[64, 16, 10], T=1, coding="given"), dict(lanes=8)),  # one step of given spikes
    (dict(seed=2, sizes=[0, 10], T=3, coding="given", convs=((4, 3, 2),)), dict(lanes=4)),
    (dict(seed=2, sizes=[0, 10], T=4, coding="rate", convs=((4, 3, 2), (4, 3, 1))), dict(lanes=2)),
    # two input channels (an event sensor's polarities), padded steps (T = 3) and channels
    (dict(seed=3, sizes=[0, 10], T=3, coding="given", convs=((4, 3, 2),), shape=(2, 8, 8)), dict(lanes=4)),
    (dict(seed=3, sizes=[0, 10], T=2, coding="given", convs=((4, 3, 2),), shape=(3, 6, 6)), dict(lanes=4)),
]


@pytest.mark.parametrize("margs,hargs", CASES)
def test_amaranth_matches_golden_with_input_over_time(margs, hargs):
    """Given and rate input into a dense or a convolution first layer, one or two input channels
    (three, padded), k = 2 events a beat: 0 differences from the golden model on every spike of
    every step, and the cycle model exact."""
    from bitsnn.sim.amaranth_run import run_accelerator

    m = coded_model(**margs)
    x = coded_inputs(m, 4)
    g = golden.run(m, x)
    assert all(0 < s.mean() < 1 for s in g.tap_spikes)  # the test says something
    r = run_accelerator(m, x, mode="event", word=32, **hargs)
    assert compare(g, predict_cycles(m, g, mode="event", word=32, **hargs), r) == []


def test_the_input_layout_and_stream_order():
    """Each input's steps lie side by side in the input store (a dense first layer's vector, a
    convolution's maps), and the stream takes given spikes in the store's order: position by
    position, step by step, channel by channel."""
    dense = coded_model(1, [64, 16, 10], 3, "given")
    conv = coded_model(3, [0, 10], 3, "given", convs=((4, 3, 2),), shape=(2, 8, 8))
    assert hwplan.input_layout(dense) == hwplan.MapLayout(1, 64, 1, 3)
    assert hwplan.input_layout(conv) == hwplan.MapLayout(2, 8, 8, 3)
    assert hwplan.HardwarePlan.of(dense, lanes=4).layers[0].weight_columns == 64
    assert hwplan.HardwarePlan.of(conv, lanes=4).layers[0].conv.engine == "window"
    assert hwplan.input_values(conv) == 3 * 128 and hwplan.input_values(coded_model(1, [64, 16, 10], 3, "rate")) == 64
    x = coded_inputs(conv, 2)
    s = hwplan.stream_inputs(conv, x)
    # value j of the stream: channel j % 2, step (j // 2) % 3, position j // 6 (row-major)
    j = np.arange(s.shape[1])
    pos = j // 6
    assert np.array_equal(s, x[:, (j // 2) % 3, j % 2, pos // 8, pos % 8])
    assert hwplan.input_layout(coded_model(0, [64, 16, 10], 3, "threshold")) is None
    with pytest.raises(hwplan.UnsupportedLayerError, match="at most 32 steps"):
        hwplan.HardwarePlan.of(coded_model(1, [64, 16, 10], 33, "rate"), lanes=4)


def test_the_rate_generators_start_where_the_sequence_is():
    """The hardware's generator for step t starts at the state the one sequence has before
    input 0 of step t: run on from there, it yields step t's random bytes."""
    seed, T, n = 0x2545F491, 5, 300
    r = rate_randoms(seed, T, n)
    for t, s in enumerate(rate_start_states(seed, T, n)):
        got = []
        for _ in range(n):
            s ^= (s << 13) & 0xFFFFFFFF
            s ^= s >> 17
            s ^= (s << 5) & 0xFFFFFFFF
            got.append(s & 0xFF)
        assert got == r[t].tolist()


@pytest.mark.parametrize("coding", ["given", "rate"])
def test_the_uart_top_takes_input_over_time(coding):
    """INFER over the UART top (Amaranth's simulator, 4 requests in flight): given spikes go as
    T steps of packed masks, rate input as the pixels (masks and nonzero values); every reply
    (class, cycles, spike counts over all steps, summed scores) equals the golden and cycle
    models."""
    from bitsnn import protocol as P
    from bitsnn.hw.top import UARTTop
    from bitsnn.sim.link_sim import stream_requests

    hm = coded_model(2, [0, 10], 3, coding, convs=((4, 3, 2),))
    x = coded_inputs(hm, 5)
    top = UARTTop(hm, clk_freq=4_000_000, baud=1_000_000, timeout_cycles=300, lanes=4)
    assert P.Info.from_bytes(top.info).n_inputs == (3 * 64 if coding == "given" else 64)
    pixels = P.infer_carries_pixels(hm)
    assert pixels == (coding == "rate")
    frames = [P.encode_request(P.Cmd.INFER, P.infer_payload(k, v, pixels=pixels))
              for k, v in enumerate(P.infer_inputs(hm, x))]
    r = stream_requests(top, frames, window=P.INFER_SLOTS)
    g = golden.run(hm, x)
    cyc = predict_cycles(hm, g, mode="event", lanes=4, word=32)
    want = [(P.Result(int(g.classes[k]), int(cyc[k]), tuple(int(c) for c in g.spike_counts[k]),
                      tuple(int(v) for v in g.scores[k])), k) for k in range(len(x))]
    assert [P.infer_reply(v.payload, len(hm.hidden_layers), hm.num_classes) for v in r.responses] == want


def _digit_events(images, T):
    """MNIST digits as T steps of events: pixel > 255 (t + 1) / (T + 1) at step t (a bright
    pixel spikes early and often, as a brightness-driven sensor would), 0/1."""
    levels = 255 * np.arange(1, T + 1) / (T + 1)
    return (images[:, None].astype(np.float64) > levels[None, :, None, None]).astype(np.uint8)


@pytest.mark.cosim
@pytest.mark.xdist_group("cosim")
@pytest.mark.parametrize("coding,sim,n", [("given", "icarus", 4), ("given", "verilator", 300),
                                          ("rate", "verilator", 300)])
def test_input_over_time_on_mnist_digits(coding, sim, n, mnist):
    """Two timed convolutions over 4 steps of MNIST digits, given as events or rate-coded by the
    design's generators, as Verilog: every spike of every step through the events tap, the
    scores, class, spike counts and cycles."""
    from conftest import REPO

    from bitsnn.sim.cosim.runner import run_accelerator_cosim, simulator_missing

    if why := simulator_missing(sim):
        pytest.skip(why)
    hm = coded_model(7, [0, 10], 4, coding, convs=((4, 3, 2), (8, 3, 2)), shape=(28, 28), threshold_spread=0.5)
    imgs = mnist.test_images[:n]
    x = _digit_events(imgs, 4) if coding == "given" else imgs
    g = golden.run(hm, x)
    assert all(0.01 < s.mean() < 0.9 for s in g.tap_spikes)
    expected = dict(classes=g.classes, scores=g.scores, spike_counts=g.spike_counts,
                    **{f"spikes{i}": s for i, s in enumerate(g.tap_spikes)})
    r = run_accelerator_cosim(hm, x, simulator=sim, build_root=REPO / ".cache" / "cosim", expected=expected,
                              accel_params={"lanes": 8})
    assert compare(g, predict_cycles(hm, g, mode="event", lanes=8, word=32), r) == []


def test_sim_and_report_take_a_users_spikes(tmp_path, capsys):
    """``bitsnn sim`` and ``bitsnn report`` run a given-coded model on the spikes in a user's
    file (.npz with labels, .npy without): the Amaranth design with 0 mismatches, the report with
    the accuracy against steps on the file's first t steps."""
    import json

    from bitsnn.cli import main as cli_main

    m = coded_model(3, [0, 10], 3, "given", convs=((4, 3, 2),), shape=(2, 8, 8))
    m.save(tmp_path / "g.bsnn")
    x = coded_inputs(m, 12)
    g = golden.run(m, x)
    labels = g.classes.copy()
    labels[:3] = (labels[:3] + 1) % 10  # 9 of 12 right
    np.savez(tmp_path / "s.npz", spikes=x, labels=labels)
    np.save(tmp_path / "s.npy", x)
    rc = cli_main(["sim", "--model", str(tmp_path / "g.bsnn"), "--simulator", "amaranth", "--images", "4",
                   "--spikes", str(tmp_path / "s.npz")])
    out = capsys.readouterr().out
    assert rc == 0 and "mismatches: 0" in out and "accuracy: 50.00% on 4 images" not in out, out
    assert "3 steps of given input" in out and "threshold" not in out
    rc = cli_main(["sim", "--model", str(tmp_path / "g.bsnn"), "--simulator", "golden",
                   "--spikes", str(tmp_path / "s.npy")])
    out = capsys.readouterr().out
    assert rc == 0 and "accuracy: not known" in out and "golden model: 12 images" in out, out
    rc = cli_main(["report", "--model", str(tmp_path / "g.bsnn"), "--spikes", str(tmp_path / "s.npz"),
                   "-o", str(tmp_path / "rep")])
    capsys.readouterr()
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rc == 0 and rep["accuracy"] == 0.75 and rep["time"]["coding"] == "given"
    assert [r["steps"] for r in rep["time"]["against_steps"]] == [1, 2, 3]
    first = dataclasses_replace(m, timesteps=1)
    assert rep["time"]["against_steps"][0]["accuracy"] == float(np.mean(golden.run(first, x[:, :1]).classes == labels))


def dataclasses_replace(m, **kw):
    import dataclasses

    return dataclasses.replace(m, **kw)


@pytest.mark.parametrize("content,want", [
    (None, r"the model takes given spikes at every step \(an event sensor's\), not images: give them with --spikes"),
    ("missing", "--spikes .*/nope.npz: no such file"),
    ("shape", r"--spikes .*: the array is \[4, 2, 2, 8, 8\]; the model takes \[N, 3, 2, 8, 8\]"),
    ("values", "--spikes .*: spikes must be integers 0 or 1"),
    ("labels", "--spikes .*: labels must be 4 integers, one per input"),
    ("key", "--spikes .*: the .npz holds x, not 'spikes'"),
    ("garbage", "--spikes .*: not a .npy array or an .npz with 'spikes'"),
])
def test_bad_spike_files_get_one_line(tmp_path, capsys, content, want):
    """A missing, misshapen or corrupt spikes file, or none for a given-coded model: one line and
    a non-zero exit status before any simulation."""
    import re

    from bitsnn.cli import main as cli_main

    m = coded_model(3, [0, 10], 3, "given", convs=((4, 3, 2),), shape=(2, 8, 8))
    m.save(tmp_path / "g.bsnn")
    x = coded_inputs(m, 4)
    f = tmp_path / "s.npz"
    if content == "shape":
        np.savez(f, spikes=x[:, :2])
    elif content == "values":
        np.savez(f, spikes=x * 2)
    elif content == "labels":
        np.savez(f, spikes=x, labels=np.zeros(3))
    elif content == "key":
        np.savez(f, x=x)
    elif content == "garbage":
        f.write_bytes(b"PK\x03\x04 not a zip at all")
    elif content == "missing":
        f = tmp_path / "nope.npz"
    args = ["sim", "--model", str(tmp_path / "g.bsnn"), "--simulator", "golden"]
    rc = cli_main(args + ([] if content is None else ["--spikes", str(f)]))
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and re.search(want, err), err
    assert "Traceback" not in err


def test_a_model_of_images_refuses_spikes(tiny_model_path, capsys):
    """--spikes for a model that takes images is refused in one line before any data is read."""
    from bitsnn.cli import main as cli_main

    rc = cli_main(["sim", "--model", str(tiny_model_path), "--simulator", "golden", "--spikes", "whatever.npz",
                   "--data-dir", "/nonexistent"])
    err = capsys.readouterr().err
    assert rc == 1 and "--spikes: the model takes images (threshold coding); only a model with given" in err, err
