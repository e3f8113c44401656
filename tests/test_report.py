"""Reports: operation counts, energy, VCD toggle counting, plots, report.json, CLI errors.

Real computation throughout: a hand-made model whose spikes and events are worked out by hand,
a counter circuit simulated by Amaranth for the toggle counter, matplotlib writing real PNGs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitsnn import BitsnnError
from bitsnn import report as R
from bitsnn.hwmodel import HardwareModel, Layer, pack_bits, random_model
from bitsnn.sim import golden
from bitsnn.sim.cycles import predict_cycles

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
C = R.HOROWITZ_45NM


# ---- a model small enough to work out by hand ------------------------------------------------
#
# input 2x2 pixels, spikes where x >= 128
# layer fc1 (4 -> 3), weights (bit 1 = +1):  n0 [1 1 1 1]  n1 [0 0 0 0]  n2 [1 1 1 0]
#   thresholds [3, -2, 1], compare [+1, -1, +1]
# layer out (3 -> 2): n0 [1 0 1], n1 [0 1 1]
#
# image 0: pixels [200, 0, 255, 10] -> s = [1 0 1 0] (2 events)
#   a = [2, -2, 2] -> spikes [0, 1, 1] (2 spikes)
# image 1: pixels [255]*4 -> s = [1 1 1 1] (4 events)
#   a = [4, -4, 2] -> spikes [1, 1, 1] (3 spikes)

def hand_model() -> HardwareModel:
    w1 = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 0]], np.uint8)
    w2 = np.array([[1, 0, 1], [0, 1, 1]], np.uint8)
    l1 = Layer("fc1", 4, 3, pack_bits(w1), np.array([3, -2, 1], np.int64), np.array([1, -1, 1], np.int8))
    l2 = Layer("out", 3, 2, pack_bits(w2))
    return HardwareModel(input_shape=(2, 2), input_encoding="spikes", input_threshold=128, layers=(l1, l2))


HAND_IMAGES = np.array([[[200, 0], [255, 10]], [[255, 255], [255, 255]]], np.uint8)


@pytest.fixture(scope="module")
def hand():
    m = hand_model()
    return m, golden.run(m, HAND_IMAGES)


def test_golden_matches_the_hand_calculation(hand):
    _, g = hand
    np.testing.assert_array_equal(g.spikes[0], [[0, 1, 1], [1, 1, 1]])
    np.testing.assert_array_equal(g.input_events, [[2, 2], [4, 3]])


def test_layer_counts_event_mode(hand):
    m, g = hand
    fc1, out = R.layer_counts(m, g, mode="event", lanes=2, word=2)
    np.testing.assert_array_equal(fc1.input_events, [2, 4])
    np.testing.assert_array_equal(fc1.synaptic_events, [6, 12])
    np.testing.assert_array_equal(fc1.output_spikes, [2, 3])
    # 3 neurons, P = 2: two 2-bit words per event
    assert fc1.word_bits == 2
    np.testing.assert_array_equal(fc1.weight_words, [4, 8])
    np.testing.assert_array_equal(fc1.weight_bits, [8, 16])
    np.testing.assert_array_equal(out.input_events, [2, 3])
    np.testing.assert_array_equal(out.synaptic_events, [4, 6])
    assert out.output_spikes is None
    np.testing.assert_array_equal(out.weight_words, [2, 3])
    np.testing.assert_array_equal(out.weight_bits, [4, 6])
    assert (fc1.compares, out.compares) == (3, 1)
    assert (fc1.acc_bits, out.acc_bits) == (4, 3)  # |a| <= 4 and <= 3, signed


def test_layer_counts_dense_mode_reads_everything(hand):
    m, g = hand
    fc1, out = R.layer_counts(m, g, mode="dense", lanes=2, word=2)
    # fc1: 2 groups x ceil(4/2) words of 2*2 bits; out: 1 group x ceil(3/2) words of 2*2 bits
    assert fc1.word_bits == 4 and out.word_bits == 4
    np.testing.assert_array_equal(fc1.weight_words, [4, 4])
    np.testing.assert_array_equal(fc1.weight_bits, [16, 16])
    np.testing.assert_array_equal(out.weight_words, [2, 2])
    np.testing.assert_array_equal(out.weight_bits, [8, 8])


def test_layer_counts_split_cores(hand):
    m, g = hand
    fc1, _ = R.layer_counts(m, g, mode="event", lanes=4, word=2, max_neurons_per_core=2)
    # cores of 2 and 1 neurons: one 2-bit and one 1-bit word per event
    np.testing.assert_array_equal(fc1.weight_words, [4, 8])
    np.testing.assert_array_equal(fc1.weight_bits, [6, 12])


def test_bad_hardware_parameters(hand):
    m, g = hand
    with pytest.raises(BitsnnError, match="mode"):
        R.layer_counts(m, g, mode="systolic")
    with pytest.raises(BitsnnError, match="lanes"):
        R.layer_counts(m, g, lanes=0)


def test_asic_energy_is_constants_times_counts(hand):
    m, g = hand
    counts = R.layer_counts(m, g, mode="event", lanes=2, word=2)
    e = R.asic_energy(counts)
    add, sram = C["int8_add"].value, C["sram_8kb_read64"].value
    # image 0: 6 + 4 synaptic adds, 3 + 1 compares, 8 + 4 weight bits; image 1: 12 + 6, 4, 16 + 6
    want = np.array([(10 + 4) * add + 12 / 64 * sram, (18 + 4) * add + 22 / 64 * sram])
    np.testing.assert_allclose(e["per_image"], want, rtol=1e-12)
    assert e["mean_j"] == pytest.approx(want.mean(), rel=1e-12)
    assert [l["add_constant"] for l in e["layers"]] == ["int8_add", "int8_add"]


def test_ann_energy_is_constants_times_macs(hand):
    m, _ = hand
    a = R.ann_fp32_energy(m)
    assert a["macs"] == 4 * 3 + 3 * 2
    want = 18 * (3.7e-12 + 0.9e-12) + 18 * 0.5 * 10e-12
    assert a["total_j"] == pytest.approx(want, rel=1e-12)


def test_horowitz_constants():
    assert {k: v.value for k, v in C.items()} == pytest.approx(
        {"int8_add": 0.03e-12, "int16_add": 0.05e-12, "int32_add": 0.1e-12, "fp32_add": 0.9e-12,
         "fp32_mult": 3.7e-12, "sram_8kb_read64": 10e-12})
    assert all("Horowitz" in v.source and "45 nm" in v.source for v in C.values())


def test_wide_accumulators_use_wider_adds():
    m = random_model(np.random.default_rng(1), [784, 16, 10], input_encoding="pixels")
    assert R.acc_bits(m.layers[0]) == 19  # |a| <= 255 * 784
    g = golden.run(m, np.random.default_rng(2).integers(0, 256, (3, 784), dtype=np.uint8))
    e = R.asic_energy(R.layer_counts(m, g))
    assert [l["add_constant"] for l in e["layers"]] == ["int32_add", "int8_add"]


def test_timing():
    t = R.timing([100, 200], 1e6)
    assert t["cycles"]["mean"] == 150
    assert t["latency_s"]["mean"] == pytest.approx(150e-6)
    assert t["latency_s"]["max"] == pytest.approx(200e-6)
    assert t["inferences_per_s"] == pytest.approx(1e6 / 150)
    with pytest.raises(BitsnnError):
        R.timing([], 1e6)
    with pytest.raises(BitsnnError):
        R.timing([1], 0.0)


def test_fpga_energy_icebreaker_is_constants_times_counts():
    p = R.FPGA_POWER["icebreaker"]
    # the derivation from the cited measurement table
    assert p.static_w == pytest.approx(85.6e-6 * 1.219)
    assert p.clock_j_per_cycle == pytest.approx((613.5e-6 - 92.1e-6) * 1.219 / 12e6)
    assert p.toggle_j == pytest.approx(27.8e-6 * 1.219 / (12e6 * 14), rel=1e-6)
    e = R.fpga_energy(2e-5, 480, 1e5, p)
    assert e["static_j"] == pytest.approx(p.static_w * 2e-5)
    assert e["clock_j"] == pytest.approx(p.clock_j_per_cycle * 480)
    assert e["toggle_j"] == pytest.approx(p.toggle_j * 1e5)
    assert e["total_j"] == pytest.approx(e["static_j"] + e["clock_j"] + e["toggle_j"])
    assert not e["lower_bound"]
    no_wave = R.fpga_energy(2e-5, 480, None, p)
    assert no_wave["lower_bound"] and no_wave["unknown_terms"] == ["toggle_j"]


def test_fpga_energy_unknown_ecp5_static_is_not_invented():
    p = R.FPGA_POWER["ulx3s-85f"]
    assert p.static_w is None and "unknown" in p.static_source
    e = R.fpga_energy(1e-5, 500, 1000, p)
    assert e["static_j"] is None and e["clock_j"] is None
    assert e["lower_bound"] and e["unknown_terms"] == ["static_j", "clock_j"]
    assert e["total_j"] == pytest.approx(p.toggle_j * 1000)


# ---- VCD toggle counting ---------------------------------------------------------------------


def _counter_vcd(path, width, k):
    from amaranth import Module, Signal
    from amaranth.sim import Simulator

    m = Module()
    count = Signal(width)
    m.d.sync += count.eq(count + 1)
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def bench(ctx):
        await ctx.tick().repeat(k)

    sim.add_testbench(bench)
    with sim.write_vcd(str(path)):
        sim.run()


def test_toggles_of_an_amaranth_counter(tmp_path):
    width, k = 6, 100
    path = tmp_path / "counter.vcd"
    _counter_vcd(path, width, k)
    tc = R.count_toggles(path, per_bit=True)
    assert tc.clock.endswith("clk")
    assert tc.cycles == k
    name = next(n for n in tc.toggles if n.endswith(".count"))
    # after k increments from 0, bit i has toggled floor(k / 2**i) times
    want = [k // 2**i for i in range(width)]
    assert tc.per_bit[name] == want
    assert tc.toggles[name] == sum(want)
    assert tc.widths[name] == width
    assert not any(n.endswith("clk") for n in tc.toggles)  # the clock is costed per cycle
    assert tc.per_cycle() == pytest.approx(sum(want) / k)  # about 2 for a long counter
    assert tc.per_signal_per_cycle()[name] == pytest.approx(sum(want) / k)


def test_toggles_hand_written_vcd(tmp_path):
    # Icarus-style: reg vectors, x values, two names for one net, a real that is ignored
    text = """$timescale 1ns $end
$scope module tb $end
$var wire 1 ! clk $end
$var reg 4 " d [3:0] $end
$var wire 4 " d_alias [3:0] $end
$var reg 1 # q $end
$var real 1 $ r $end
$upscope $end
$enddefinitions $end
#0
$dumpvars
0!
bxxxx "
x#
r0.5 $
$end
#5
1!
b1010 "
1#
#10
0!
b0101 "
0#
r1.5 $
#15
1!
b01x1 "
#20
0!
b0011 "
1#
"""
    path = tmp_path / "w.vcd"
    path.write_text(text)
    tc = R.count_toggles(path, per_bit=True)
    assert tc.cycles == 2
    assert set(tc.toggles) == {"tb.d", "tb.q"}
    # d: x->1010 none, 1010->0101 four, 0101->01x1 none (bit 1 unknown), 01x1->0011 one (bit 2)
    assert tc.toggles["tb.d"] == 5
    assert tc.per_bit["tb.d"] == [1, 1, 2, 1]
    assert tc.toggles["tb.q"] == 2  # x->1 none, 1->0, 0->1
    win = R.count_toggles(path, t_start=10, t_end=20)
    assert win.toggles["tb.d"] == 4 and win.toggles["tb.q"] == 1 and win.cycles == 1
    assert R.count_toggles(path, exclude={"q"}).toggles.keys() == {"tb.d"}
    no_clock = R.count_toggles(path, clock="nope")
    assert no_clock.cycles is None
    with pytest.raises(BitsnnError):
        no_clock.per_cycle()


def test_toggles_amaranth_anonymous_signal_names(tmp_path):
    # Amaranth names anonymous signals "$signal", which pyvcd alone refuses to parse
    path = tmp_path / "anon.vcd"
    path.write_text("$scope module top $end\n$var wire 1 ! clk $end\n$var wire 2 \" $signal $end\n"
                    "$var wire 0 # empty $end\n$upscope $end\n$enddefinitions $end\n"
                    "#0\n$dumpvars\n0!\nb0 \"\n$end\n#1\n1!\nb11 \"\n#2\n0!\nb1 \"\n")
    tc = R.count_toggles(path)
    assert tc.toggles == {"top._signal": 3, "top.empty": 0} and tc.cycles == 1


def test_toggles_bad_files(tmp_path):
    with pytest.raises(BitsnnError, match="cannot read waveform"):
        R.count_toggles(tmp_path / "missing.vcd")
    bad = tmp_path / "bad.vcd"
    bad.write_text("$var wire $end garbage\n")
    with pytest.raises(BitsnnError):
        R.count_toggles(bad)


# ---- plots -----------------------------------------------------------------------------------


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 1000


BUILD = {
    "board": "icebreaker", "device": "iCE40UP5K-SG48", "fmax_mhz": 31.5, "constraint_mhz": 24.0,
    "timing_met": True,
    "utilisation": {"logic": {"used": 2100, "available": 5280}, "ffs": {"used": 900, "available": 5280},
                    "bram": {"used": 12, "available": 30}, "spram": {"used": 0, "available": 4},
                    "dsp": {"used": 0, "available": 8}},
}


def test_plots_write_pngs(hand, tmp_path):
    m, g = hand
    paths = [
        R.plot_spike_raster(g, tmp_path / "raster.png", index=1, model=m),
        R.plot_spikes_per_layer(g.spike_counts, tmp_path / "spikes.png", names=["fc1"]),
        R.plot_accuracy_energy([("λ=0", 0.97, 3e-9), ("λ=0.1", 0.96, 1.5e-9), ("λ=1", 0.93, 6e-10)],
                               tmp_path / "acc_energy.png"),
        R.plot_utilisation(BUILD, tmp_path / "util.png"),
    ]
    for p in paths:
        assert _is_png(p), p
    assert sorted(f.name for f in tmp_path.iterdir()) == ["acc_energy.png", "raster.png", "spikes.png", "util.png"]


def test_plot_bad_inputs(hand, tmp_path):
    _, g = hand
    with pytest.raises(BitsnnError):
        R.plot_accuracy_energy([], tmp_path / "a.png")
    with pytest.raises(BitsnnError):
        R.plot_accuracy_energy([("x", 0.9, 0.0)], tmp_path / "a.png")
    with pytest.raises(BitsnnError):
        R.plot_spike_raster(g, tmp_path / "r.png", index=5)
    with pytest.raises(BitsnnError):
        R.plot_spikes_per_layer(np.zeros((0, 1)), tmp_path / "s.png")
    assert not any(tmp_path.iterdir())


# ---- report.json -----------------------------------------------------------------------------


def test_report_json(hand, tmp_path):
    m, g = hand
    cycles = predict_cycles(m, g, mode="event", lanes=2, word=2)
    rep = R.build_report(m, g, cycles, board="icebreaker", clock_hz=24e6, clock_source="constraint",
                         mode="event", lanes=2, word=2, labels=np.array([1, 0]), build=BUILD,
                         toggles_per_cycle=10.0, toggles_source="test")
    out = R.write_report(rep, tmp_path / "rep", model=m, golden=g, build=BUILD,
                         sweep=[("a", 0.9, 1e-9), ("b", 0.8, 5e-10)])
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert tuple(data) == R.REPORT_KEYS
    assert data == json.loads(json.dumps(out))
    assert data["images"] == 2
    assert data["accuracy"] == pytest.approx(np.mean(g.classes == [1, 0]))
    assert data["layers"][0]["synaptic_events"]["mean"] == 9.0
    assert data["layers"][0]["output_spikes"]["mean"] == 2.5
    assert data["totals"]["synaptic_events_mean"] == 9 + 5
    assert data["timing"]["cycles"]["mean"] == pytest.approx(cycles.mean())
    assert data["timing"]["latency_s"]["mean"] == pytest.approx(cycles.mean() / 24e6)
    f = data["energy"]["fpga"]
    p = R.FPGA_POWER["icebreaker"]
    assert f["toggles"] == pytest.approx(10.0 * cycles.mean())
    assert f["total_j"] == pytest.approx(p.static_w * cycles.mean() / 24e6 + p.clock_j_per_cycle * cycles.mean()
                                         + p.toggle_j * 10.0 * cycles.mean())
    a = data["energy"]["asic_45nm"]
    assert "not FPGA" in a["note"]
    assert a["ann_over_snn"] == pytest.approx(a["ann_fp32_j"] / a["snn_j"])
    assert all(c["source"] for c in data["constants"].values())
    assert data["plots"] == ["spike_raster.png", "spikes_per_layer.png", "utilisation.png", "accuracy_energy.png"]
    for name in data["plots"]:
        assert _is_png(tmp_path / "rep" / name)
    # no temporaries left (the directory's marker, .bitsnn-report, is no temporary)
    assert not [f for f in (tmp_path / "rep").iterdir() if f.name.startswith(".") and f.name != R.REPORT_MARKER]
    assert (tmp_path / "rep" / R.REPORT_MARKER).is_file()


def test_report_shape_checks(hand):
    m, g = hand
    with pytest.raises(BitsnnError, match="cycles"):
        R.build_report(m, g, [1, 2, 3], board="icebreaker", clock_hz=1e6, clock_source="x")
    with pytest.raises(BitsnnError, match="labels"):
        R.build_report(m, g, [1, 2], board="icebreaker", clock_hz=1e6, clock_source="x", labels=[1])


# ---- build reports and the CLI ---------------------------------------------------------------


@pytest.mark.parametrize("broken, match", [
    ({k: v for k, v in BUILD.items() if k != "fmax_mhz"}, "fmax_mhz"),
    ({**BUILD, "fmax_mhz": 0.0}, "no timed clock"),
    ({k: v for k, v in BUILD.items() if k != "utilisation"}, "utilisation"),
    ({**BUILD, "utilisation": {"logic": {"used": 3}}}, "logic"),
])
def test_build_report_missing_fields(tmp_path, broken, match):
    (tmp_path / "report.json").write_text(json.dumps(broken))
    with pytest.raises(BitsnnError, match=match) as e:
        R.load_build_report(tmp_path)
    assert "\n" not in str(e.value)


def test_build_report_unreadable(tmp_path):
    with pytest.raises(BitsnnError, match="cannot read build report"):
        R.load_build_report(tmp_path)
    (tmp_path / "report.json").write_text("{nope")
    with pytest.raises(BitsnnError, match="not valid JSON"):
        R.load_build_report(tmp_path)


def test_cli_missing_model_is_one_line(tmp_path, capsys):
    from bitsnn.cli import main

    assert main(["report", "--model", str(tmp_path / "none.bsnn")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.bsnn" in err


def _model_and_build(tmp_path, hidden: int, build: dict):
    """A random 784-``hidden``-10 model file and a build directory holding ``build`` as report.json."""
    random_model(np.random.default_rng(0), [784, hidden, 10], input_shape=(28, 28)).save(tmp_path / "m.bsnn")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "report.json").write_text(json.dumps(build))
    return str(tmp_path / "m.bsnn"), str(tmp_path / "b")


def test_cli_bad_build_dir_is_one_line(tmp_path, capsys):
    from bitsnn.cli import main

    model_path, build_dir = _model_and_build(tmp_path, 8, {"utilisation": BUILD["utilisation"]})
    assert main(["report", "--model", model_path, "--build-dir", build_dir]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fmax_mhz" in err


def test_cli_end_to_end(tmp_path, mnist_dir, capsys):
    from bitsnn.cli import main

    model_path, build_dir = _model_and_build(tmp_path, 32, BUILD)
    vcd = tmp_path / "c.vcd"
    _counter_vcd(vcd, 8, 50)
    rc = main(["report", "--model", model_path, "--build-dir", build_dir,
               "--data-dir", str(mnist_dir), "--images", "50", "--vcd", str(vcd), "-o", str(tmp_path / "out")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "clock 24.00 MHz (icebreaker PLL clock of the built bitstream (achieved Fmax 31.50 MHz, timing met" in out
    assert "at the achieved Fmax 31.5 MHz" in out
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["images"] == 50 and data["hardware"]["mode"] == "event"
    assert data["timing"]["clock_hz"] == 24e6 and data["timing"]["at_fmax"]["clock_hz"] == 31.5e6
    assert data["energy"]["fpga"]["toggles_per_cycle"] == pytest.approx(sum(50 // 2**i for i in range(8)) / 50)
    assert not data["energy"]["fpga"]["lower_bound"]
    assert set(data["plots"]) == {"spike_raster.png", "spikes_per_layer.png", "utilisation.png"}


def test_cli_sweep_plots_accuracy_vs_energy(tmp_path, mnist_dir, capsys):
    """``--sweep``: every model of the same network gets a row (labelled with the sparsity its
    file records), rows are ordered by energy, each row's energy is that model's own report, and
    the accuracy-vs-energy plot is written; a different network is refused in one line."""
    import dataclasses

    from bitsnn.cli import main
    from bitsnn.sim import cycles as cycles_mod
    from bitsnn.sim import golden as golden_mod

    paths = []
    for i, lam in enumerate([0.0, 0.5, 2.0]):
        m = random_model(np.random.default_rng(i), [784, 24, 10], input_shape=(28, 28))
        m = dataclasses.replace(m, meta={"training": {"sparsity": lam}})
        paths.append(str(m.save(tmp_path / f"m{i}.bsnn")))
    rc = main(["report", "--model", paths[0], "--sweep", *paths[1:], "--data-dir", str(mnist_dir),
               "--images", "40", "-o", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0, out
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    rows = data["sweep"]
    assert sorted(r["label"] for r in rows) == ["lambda=0", "lambda=0.5", "lambda=2"]
    assert [r["asic_snn_j"] for r in rows] == sorted(r["asic_snn_j"] for r in rows)
    assert "accuracy_energy.png" in data["plots"] and (tmp_path / "out" / "accuracy_energy.png").stat().st_size > 1000
    assert "sweep (accuracy vs energy):" in out and "lambda=0.5: accuracy" in out
    # one row recomputed by hand from that model's golden run
    from bitsnn.data import load_dataset
    from bitsnn.hwmodel import HardwareModel

    ds = load_dataset(mnist_dir, progress=False)
    m1 = HardwareModel.load(paths[1])
    g = golden_mod.run(m1, ds.test_images[:40])
    row = next(r for r in rows if r["label"] == "lambda=0.5")
    assert row["accuracy"] == pytest.approx(float(np.mean(g.classes == ds.test_labels[:40])))
    assert row["spikes_mean"] == pytest.approx(float(g.spike_counts.sum(axis=1).mean()))
    assert row["cycles_mean"] == pytest.approx(float(cycles_mod.predict_cycles(m1, g, mode="event", lanes=32,
                                                                                word=32).mean()))
    other = random_model(np.random.default_rng(9), [784, 16, 10], input_shape=(28, 28)).save(tmp_path / "o.bsnn")
    assert main(["report", "--model", paths[0], "--sweep", str(other), "--data-dir", str(mnist_dir),
                 "--images", "5"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not the same network" in err


def test_cli_uses_the_clock_the_bitstream_was_built_for(tmp_path, mnist_dir, capsys):
    """A build made with ``--clock-mhz 20`` (constraint 19.875 MHz): latency is at that clock."""
    from bitsnn.cli import main

    model_path, build_dir = _model_and_build(tmp_path, 16, dict(BUILD, constraint_mhz=19.875, fmax_mhz=22.0))
    assert main(["report", "--model", model_path, "--build-dir", build_dir,
                 "--data-dir", str(mnist_dir), "--images", "5", "-o", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["timing"]["clock_hz"] == 19.875e6
    assert data["timing"]["latency_s"]["mean"] == pytest.approx(data["timing"]["cycles"]["mean"] / 19.875e6)


def test_report_gives_end_to_end_throughput_over_the_link(tmp_path, mnist_dir, capsys):
    """Compute-only beside end-to-end: INFER over the board's UART at its default rate (iCEBreaker,
    3,000,000 baud), or at the build's rate, with the formula; a build that left INFER out is
    reported with LOAD, RUN and READ."""
    from bitsnn import protocol as P
    from bitsnn.cli import main

    model_path, build_dir = _model_and_build(tmp_path, 16, dict(BUILD, baud=1_000_000))
    assert main(["report", "--model", model_path, "--data-dir", str(mnist_dir), "--images", "5"]) == 0
    out = capsys.readouterr().out
    assert "compute only: latency" in out and "end to end over the UART at 3000000 baud (icebreaker's default" in out
    assert "uplink-bound: max(104 B up" in out  # 5 + 1 + 98 bytes: 784 spikes packed, and the tag
    assert main(["report", "--model", model_path, "--data-dir", str(mnist_dir), "--images", "5",
                 "--build-dir", build_dir, "-o", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    e2e = json.loads((tmp_path / "out" / "report.json").read_text())["timing"]["end_to_end"]
    assert (e2e["baud"], e2e["up_bytes"], e2e["down_bytes"]) == (1e6, 104, P.RSP_OVERHEAD + 4 * 13 + 1)
    assert e2e["images_per_s"] == pytest.approx(1e6 / 1040)
    (tmp_path / "b" / "report.json").write_text(json.dumps(dict(BUILD, baud=1_000_000, accelerator={"infer": False})))
    assert main(["report", "--model", model_path, "--data-dir", str(mnist_dir), "--images", "5",
                 "--build-dir", build_dir]) == 0
    assert "round-trip-bound" in capsys.readouterr().out


@pytest.mark.parametrize("fixture", ["tiny_hwmodel", "conv_tiny_hwmodel", "4-bit", "gap"])
def test_neurobench_metrics_agree_with_bitsnn_counts(tmp_path, request, mnist_dir, fixture):
    """`bitsnn report --neurobench`: the neurobench package's own metrics on the bit-exact torch
    module; activation sparsity, effective MACs/ACs, dense synaptic operations, connection sparsity
    and accuracy equal bitsnn's counts of the same things (for b-bit weights, some of them zero:
    the events on nonzero weights and the share of zero weights; for a global sum pooling head, a
    grouped convolution of ones in the module, an accumulate per input spike)."""
    import dataclasses

    from bitsnn.hwmodel import GapLayer, random_model
    from bitsnn.report import make_report

    if fixture == "4-bit":  # conv-tiny's shape with its 4-bit first convolution and output layer
        model = random_model(np.random.default_rng(3), [784, 10], input_shape=(28, 28), input_encoding="pixels",
                             convs=((8, 3, 2), (32, 3, 2)), weight_bits={0: 4, 2: 4}, input_threshold=100)
    elif fixture == "gap":  # ALBSNN's head, 2 channels a class, after a 4-bit convolution
        base = random_model(np.random.default_rng(3), [784, 10], input_shape=(28, 28), input_encoding="pixels",
                            convs=((8, 3, 2), (20, 3, 2)), weight_bits={0: 4}, input_threshold=100)
        model = dataclasses.replace(base, layers=(*base.layers[:-1],
                                                  GapLayer("gap3", 0, 10, in_shape=base.layers[1].out_shape)))
    else:
        model = request.getfixturevalue(fixture)
    path = model.save(tmp_path / "m.bsnn")
    lines = []
    assert make_report(path, images=1000, data_dir=mnist_dir, output=tmp_path / "r", neurobench=True,
                       say=lines.append) == 0
    section = json.loads((tmp_path / "r" / "report.json").read_text())["neurobench"]
    assert section["neurobench"]["module_mismatches"] == 0 and section["neurobench"]["images"] == 1000
    assert all(section["agree"].values()), section["agree"]
    syn = section["neurobench"]["SynapticOperations"]
    pixels = model.input_encoding == "pixels"
    assert (syn["Effective_MACs"] > 0) == pixels and syn["Effective_ACs"] > 0
    assert section["neurobench"]["Footprint"] == 4 * sum(l.rows * l.fan_in + (0 if l.is_output else l.rows)
                                                         for l in model.layers)
    text = "\n".join(lines)
    assert "NeuroBench 2.3.0 on 1000 images" in text and "DIFFERS" not in text
    zeros = section["bitsnn"]["zero_weights"]
    assert (zeros > 0) == (fixture in ("4-bit", "gap")) and f"{zeros} of " in text
    assert ("1-bit" not in text) and ("none zero" not in text)


def test_cli_takes_the_lanes_and_stages_a_build_would(tmp_path, mnist_dir, capsys):
    """Without a build dir, a model with convolutions is reported with the lanes ``bitsnn build
    --board`` generates (784-c8-c32-10 with pixel input: 16 on the iCEBreaker, 32 on the ULX3S, 16 on
    the iCEBreaker with event stages only, whose accumulator rings take block RAM: the output
    layer's weights go to SPRAM, and 32 lanes would not fit);
    ``--conv-engine`` picks the stages, and the cycles are the cycle model's for them."""
    from bitsnn.cli import main
    from bitsnn.hwmodel import random_model
    from bitsnn.sim import cycles, golden
    from bitsnn.data import load_dataset

    m = random_model(np.random.default_rng(0), [784, 10], input_shape=(28, 28), convs=((8, 3, 2), (32, 3, 2)),
                     input_encoding="pixels", threshold_spread=0.5, input_threshold=100)
    path = tmp_path / "c.bsnn"
    m.save(path)
    images = m.prepare_images(load_dataset(mnist_dir).test_images[:8])
    g = golden.run(m, images)
    for board, engine, lanes in (("icebreaker", None, 16), ("ulx3s-85f", None, 32), ("icebreaker", "event", 16)):
        out = tmp_path / f"{board}-{engine}"
        args = ["report", "--model", str(path), "--board", board, "--data-dir", str(mnist_dir), "--images", "8",
                "-o", str(out)] + (["--conv-engine", engine] if engine else [])
        assert main(args) == 0
        capsys.readouterr()
        hw = json.loads((out / "report.json").read_text())
        assert hw["hardware"]["lanes"] == lanes and hw["hardware"]["conv_engine"] == (engine or "auto")
        want = cycles.predict_cycles(m, g, mode="event", lanes=lanes, word=32, conv_engine=engine or "auto")
        assert hw["timing"]["cycles"]["mean"] == pytest.approx(float(want.mean()))
    auto = json.loads((tmp_path / "icebreaker-None" / "report.json").read_text())
    event = json.loads((tmp_path / "icebreaker-event" / "report.json").read_text())
    assert auto["timing"]["cycles"]["mean"] < event["timing"]["cycles"]["mean"]  # conv2: a window stage
