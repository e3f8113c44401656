"""The whole Accelerator against the golden model and the cycle model (sim/cycles.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from amaranth.lib import wiring
from hypothesis import given, settings, strategies as st

from bitsnn.hw import Accelerator
from bitsnn.hwmodel import pack_bits, random_model
from bitsnn.hwplan import write_lanes_problem
from bitsnn.sim import golden
from bitsnn.sim.amaranth_run import run_accelerator
from bitsnn.sim.cycles import predict_cycles


def check_against_golden(model, images, build_model=None, **params):
    """``build_model``: the model the design is generated from, when it differs from the one it
    must compute (after run-time weight writes)."""
    g = golden.run(model, images)
    r = run_accelerator(build_model or model, images, **params)
    assert np.array_equal(r.classes, g.classes)
    assert np.array_equal(r.scores, g.scores)
    assert np.array_equal(r.spike_counts, g.spike_counts)
    for got, want in zip(r.spikes, g.spikes, strict=True):
        assert np.array_equal(got, want)
    assert np.array_equal(r.cycles, r.measured_cycles)
    keys = ("mode", "lanes", "word", "k", "max_neurons_per_core")
    pred = predict_cycles(model, g, **{k: v for k, v in params.items() if k in keys})
    assert np.array_equal(r.cycles, pred)
    return r, g


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 16), min_size=2, max_size=4),
    enc=st.sampled_from(["spikes", "pixels"]),
    mode=st.sampled_from(["event", "dense"]),
    lanes=st.integers(1, 7),
    word=st.integers(1, 9),
    k=st.integers(1, 3),
    split=st.sampled_from([None, 1, 3, 5]),
    fifo_depth=st.integers(3, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_models(sizes, enc, mode, lanes, word, k, split, fifo_depth, seed):
    rng = np.random.default_rng(seed)
    sizes[0] = max(sizes[0], 2)
    model = random_model(rng, sizes, input_encoding=enc, input_threshold=int(rng.integers(1, 256)))
    images = rng.integers(0, 256, size=(3, sizes[0]), dtype=np.uint8)
    images[1] = 0    # empty input
    images[2] = 255  # all ones
    check_against_golden(model, images, mode=mode, lanes=lanes, word=word, k=min(k, word),
                         max_neurons_per_core=split, fifo_depth=fifo_depth)


@settings(max_examples=8, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=2, max_size=3),
    enc=st.sampled_from(["spikes", "pixels"]),
    lanes=st.integers(1, 5),
    word=st.integers(1, 6),
    split=st.sampled_from([None, 2]),
    seed=st.integers(0, 2**32 - 1),
)
def test_memory_accumulators(sizes, enc, lanes, word, split, seed):
    """accumulators="memory" (the ECP5 choice) gives the same results and cycles."""
    rng = np.random.default_rng(seed)
    sizes[0] = max(sizes[0], 2)
    model = random_model(rng, sizes, input_encoding=enc, input_threshold=int(rng.integers(1, 256)))
    images = rng.integers(0, 256, size=(2, sizes[0]), dtype=np.uint8)
    images[1] = 255
    check_against_golden(model, images, mode="event", lanes=lanes, word=word, max_neurons_per_core=split,
                         accumulators="memory")


@pytest.mark.parametrize("mode", ["event", "dense"])
def test_result_backpressure(mode):
    rng = np.random.default_rng(5)
    model = random_model(rng, [30, 17, 6])
    images = rng.integers(0, 256, size=(3, 30), dtype=np.uint8)
    check_against_golden(model, images, mode=mode, lanes=4, word=8, result_ready=0.4)


@pytest.mark.parametrize("mode,split", [("event", None), ("dense", 4)])
def test_tied_scores_go_to_the_lowest_class(mode, split):
    """Classes with equal top scores: the lowest index wins, as in the golden model and torch.argmax.
    The argmax compares scores[0] while the output stage rotates its score registers; the C
    rotations must leave every score in place for the result words (checked against the golden)."""
    rng = np.random.default_rng(11)
    model = random_model(rng, [24, 12, 6])  # 6 classes
    out = model.layers[-1]
    wb = out.weight_bits.copy()
    wb[1] = pack_bits(np.ones((1, out.n_in), np.uint8))[0]  # class 1: every weight +1, the highest score...
    wb[2] = wb[4] = wb[1]  # ...and classes 2 and 4 the same
    model = dataclasses.replace(model, layers=[*model.layers[:-1], dataclasses.replace(out, weight_bits=wb)])
    images = rng.integers(0, 256, size=(8, 24), dtype=np.uint8)
    r, g = check_against_golden(model, images, mode=mode, lanes=4, word=8, max_neurons_per_core=split)
    tied = g.scores[:, 1] == g.scores.max(axis=1)
    assert tied.all() and (r.classes == np.argmax(g.scores, axis=1)).all() and set(r.classes) <= {0, 1}


@pytest.mark.parametrize("mode,lanes,word,enc,sizes", [
    ("event", 200, 32, "spikes", [16, 200, 3]),   # the spike count of 200 lanes in one cycle
    ("dense", 4, 256, "pixels", [300, 8, 3]),     # sums of 256 pixel bytes, popcounts of 256-bit words
])
def test_wide_sums(mode, lanes, word, enc, sizes):
    """Hundreds of terms in one sum (the Accelerator's spike count over P lanes, a DenseCore's
    popcount over a W-bit word and its sum over W pixels): chained by Python's ``sum`` they
    were hundreds of adds deep and Amaranth's simulator compiler died with RecursionError.
    (A router's events per beat, over k <= W, is a tree sum too; a k of hundreds takes minutes
    to simulate for other reasons, so it is not simulated here.)"""
    rng = np.random.default_rng(7)
    model = random_model(rng, sizes, input_encoding=enc, input_threshold=100)
    images = rng.integers(0, 256, size=(2, sizes[0]), dtype=np.uint8)
    images[1, : sizes[0] // 2] = 255  # a dense half: many spikes, large pixel sums
    check_against_golden(model, images, mode=mode, lanes=lanes, word=word)


def _read_vcd(path):
    """Parse a VCD written by Amaranth's simulator with pyvcd.

    Returns ``(vars, edges)``: ``vars`` a list of (scope path, name, id code, width), ``name``
    without a leading ``\\`` (Amaranth's escaped names); ``edges(clk_id, ids)`` the values of
    ``ids`` ({id: int}) at each rising edge of ``clk_id``, as the flip-flops sample them (before
    the changes of the edge's own time step).
    """
    import io
    import re

    from vcd.reader import TokenKind, tokenize

    raw = path.read_bytes()
    head, sep, body = raw.partition(b"$enddefinitions")
    assert sep, "no $enddefinitions: not a VCD"
    # Amaranth names anonymous signals "$signal", which pyvcd rejects as a reference.
    head = re.sub(rb"(\$var\s+\S+\s+\d+\s+\S+\s+)\$(?!end\b)", rb"\1_", head)
    tokens = list(tokenize(io.BytesIO(head + sep + body)))
    vars_, scope = [], []
    for tok in tokens:
        if tok.kind is TokenKind.SCOPE:
            scope.append(tok.data.ident)
        elif tok.kind is TokenKind.UPSCOPE:
            scope.pop()
        elif tok.kind is TokenKind.VAR:
            vars_.append((tuple(scope), tok.data.reference.lstrip("\\"), tok.data.id_code, tok.data.size))

    def value(v):
        if isinstance(v, str):
            assert set(v.lower()) <= {"0", "1"}, f"x/z value {v!r}"
            return int(v, 2)
        return int(v)

    def edges(clk, ids):
        state, pending, t, out = {}, {}, None, []

        def settle():  # apply the changes of time step t; a rising clock samples the state before them
            if state.get(clk) == 0 and pending.get(clk) == 1:
                out.append({i: state[i] for i in ids})
            state.update(pending)
            pending.clear()

        for tok in tokens:
            if tok.kind is TokenKind.CHANGE_TIME:
                if tok.data != t:
                    settle()
                    t = tok.data
            elif tok.kind in (TokenKind.CHANGE_SCALAR, TokenKind.CHANGE_VECTOR):
                if tok.data.id_code == clk or tok.data.id_code in ids:
                    pending[tok.data.id_code] = value(tok.data.value)
        settle()
        return out

    return vars_, edges


def test_vcd(tmp_path):
    """The VCD of the first image holds the ports, and their values are the run's: the pixels
    accepted, the events tap's spikes, the result words, the cycle count between them."""
    import re

    from bitsnn.hw.router import event_layout

    model = random_model(np.random.default_rng(1), [12, 5, 3])
    images = np.random.default_rng(2).integers(0, 256, size=(2, 12), dtype=np.uint8)
    path = tmp_path / "one.vcd"
    r = run_accelerator(model, images, lanes=2, word=4, vcd_path=path)
    vars_, edges = _read_vcd(path)
    top = ("bench", "top")
    scopes_of = {}
    for scope, _name, idc, _w in vars_:
        scopes_of.setdefault(idc, set()).add(scope)

    def port(name, width):
        """The id of the Accelerator's own port ``name``: declared in the top scope (Amaranth may add
        a ``$n`` suffix there when a submodule's port has the same name) and in no submodule."""
        found = [(idc, w) for scope, n, idc, w in vars_
                 if scope == top and re.fullmatch(re.escape(name) + r"(\$\d+)?", n) and scopes_of[idc] == {top}]
        assert len(found) == 1, f"{name}: {found} in {sorted({n for s, n, _i, _w in vars_ if s == top})}"
        assert found[0][1] == width, f"{name} is {found[0][1]} bits, not {width}"
        return found[0][0]

    clk = [idc for scope, n, idc, w in vars_ if scope == top and n == "clk" and w == 1]
    assert len(clk) == 1
    ev_layout = event_layout(1, model.layers[0].n_out)  # the Accelerator's, for one hidden layer
    layer_f, addr_f = ev_layout["layer"], ev_layout["addr"]
    ids = dict(
        pv=port("pixels__valid", 1), pr=port("pixels__ready", 1), pp=port("pixels__payload", 8),
        rv=port("result__valid", 1), rr=port("result__ready", 1), rp=port("result__payload", 32),
        ev=port("events__valid", 1), ep=port("events__payload", ev_layout.size),
        busy=port("busy", 1),
    )
    samples = [{k: s[i] for k, i in ids.items()} for s in edges(clk[0], set(ids.values()))]

    pixels = [s["pp"] for s in samples if s["pv"] and s["pr"]]
    assert pixels == model.prepare_images(images)[0].tolist()
    last_pixel = max(e for e, s in enumerate(samples) if s["pv"] and s["pr"])
    accepted = [(e, s["rp"]) for e, s in enumerate(samples) if s["rv"] and s["rr"]]
    hidden = model.layers[0].n_out
    assert len(accepted) == 2 + 1 + model.num_classes  # class, cycles, spike count, scores
    words = [w for _e, w in accepted]
    scores = [w - (1 << 32) if w >> 31 else w for w in words[3:]]
    assert words[:3] == [r.classes[0], r.cycles[0], r.spike_counts[0, 0]]
    assert scores == r.scores[0].tolist()
    first_result = accepted[0][0]
    assert [e for e, _w in accepted] == list(range(first_result, first_result + len(accepted)))  # ready stays high
    assert not any(s["rv"] for s in samples[:first_result])
    assert first_result - last_pixel == r.cycles[0] == r.measured_cycles[0]
    assert all(s["busy"] for s in samples[last_pixel + 1:first_result + len(accepted)])

    spikes = np.zeros(hidden, np.uint8)
    for s in samples:
        if s["ev"]:
            layer = (s["ep"] >> layer_f.offset) & ((1 << layer_f.width) - 1)
            addr = (s["ep"] >> addr_f.offset) & ((1 << addr_f.width) - 1)
            assert layer == 0 and not spikes[addr]
            spikes[addr] = 1
    assert np.array_equal(spikes, r.spikes[0][0])
    assert spikes.sum() == r.spike_counts[0, 0] > 0


def test_accelerator_rejects_bad_args():
    model = random_model(np.random.default_rng(0), [8, 4, 2])
    with pytest.raises(TypeError, match=r"hwmodel must be a bitsnn.hwmodel.HardwareModel, not 3"):
        Accelerator(3)
    with pytest.raises(ValueError, match=r"mode must be one of \('event', 'dense'\), not 'sparse'"):
        Accelerator(model, mode="sparse")
    with pytest.raises(ValueError, match=r"lanes must be at least 1, not 0"):
        Accelerator(model, lanes=0)
    with pytest.raises(TypeError, match=r"word must be an integer, not 2.5"):
        Accelerator(model, word=2.5)
    with pytest.raises(ValueError, match=r"k must not exceed the word width 4, not 5"):
        Accelerator(model, word=4, k=5)
    with pytest.raises(ValueError, match=r"max_neurons_per_core must be at least 1, not 0"):
        Accelerator(model, max_neurons_per_core=0)
    with pytest.raises(ValueError, match=r"fifo_depth must be at least 3, not 2"):
        Accelerator(model, fifo_depth=2)
    with pytest.raises(ValueError, match=r"accumulators must be 'auto', 'registers' or 'memory', not 'rom'"):
        Accelerator(model, accumulators="rom")


# ---- the tiny MNIST model -----------------------------------------------------------------------

def tiny_or_stand_in(request):
    """The trained tiny model when it is available, else a random stand-in of its shape, and it
    says which: a line in the test session's output and a ``tiny_model`` user property (JUnit XML).
    A stand-in's meta ``source`` is ``random_model``: an assertion that holds only for the trained
    model's spikes checks it.

    Without MNIST or torch, ``tiny_hwmodel``'s fixtures call ``pytest.skip``, which raises
    ``pytest.skip.Exception`` out of ``getfixturevalue`` (not ``FixtureLookupError``)."""
    try:
        model, which = request.getfixturevalue("tiny_hwmodel"), "the trained tiny model"
    except (pytest.FixtureLookupError, pytest.skip.Exception):
        model = random_model(np.random.default_rng(0), [576, 160, 10], input_shape=(24, 24),
                             input_crop=(28, 28, 2, 2))
        which = "a RANDOM stand-in of tiny's shape (the trained model needs MNIST and torch)"
    node = getattr(request, "node", None)
    if node is not None:
        if hasattr(node, "user_properties"):  # a test's own request (the module fixture's has none)
            node.user_properties.append(("tiny_model", which))
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and "RANDOM" in which:
            reporter.write_line(f"{node.nodeid}: runs on {which}")
    return model


@pytest.fixture(scope="module")
def tiny(request):
    """See :func:`tiny_or_stand_in`."""
    return tiny_or_stand_in(request)


def test_tiny_stand_in_without_the_trained_model():
    """The fallback really runs when the trained model's fixtures skip (no MNIST, no torch)."""
    class NoTrainedModel:
        def getfixturevalue(self, name):
            pytest.skip(f"{name}: MNIST not available")

    try:
        model = tiny_or_stand_in(NoTrainedModel())
    except pytest.skip.Exception:
        pytest.fail("the skip of the trained model's fixture escaped: the stand-in never ran")
    assert [(l.n_in, l.n_out) for l in model.layers] == [(576, 160), (160, 10)]
    assert model.n_inputs == 576


@pytest.mark.slow
@pytest.mark.parametrize("mode,lanes,word", [("event", None, 32), ("dense", 8, 32)])
def test_tiny_mnist_100_images(tiny, mnist, mode, lanes, word):
    """Event mode with the lanes board builds use (4 lane groups for the 160 hidden neurons)."""
    from bitsnn.sim.cycles import default_lanes

    lanes = lanes or default_lanes(tiny)
    images = mnist.test_images[:100]
    r, g = check_against_golden(tiny, images, mode=mode, lanes=lanes, word=word)
    if mode == "event" and tiny.meta.get("source") != "random_model":  # the trained model's spikes
        assert r.cycles.max() <= 1200, "over the 50 us budget at 24 MHz"


TINY_LANES = 32


def _verilog_modules(text):
    """{module name (escaping backslash removed): (header port list, body)} of a Verilog text."""
    import re

    mods = {}
    for mt in re.finditer(r"^module\s+\\?(\S+)\s*\(([^)]*)\);(.*?)^endmodule", text, re.S | re.M):
        ports = [p.strip().lstrip("\\").strip() for p in mt.group(2).split(",")]
        mods[mt.group(1)] = (ports, mt.group(3))
    return mods


def _memories(body):
    """{name: (width, depth, {address: initial value})} of the ``reg [w-1:0] name [d-1:0];`` arrays."""
    import re

    base = {"h": 16, "d": 10, "b": 2, "o": 8}
    mems = {}
    for mt in re.finditer(r"^\s*reg \[(\d+):0\] (\S+) \[(\d+):0\];", body, re.M):
        name = mt.group(2)
        init = {}
        for it in re.finditer(rf"^\s*{re.escape(name)}\[(\d+)\] = (\d+)'([hdbo])([0-9a-fA-F_]+);", body, re.M):
            assert int(it.group(2)) == int(mt.group(1)) + 1
            init[int(it.group(1))] = int(it.group(4).replace("_", ""), base[it.group(3)])
        mems[name] = (int(mt.group(1)) + 1, int(mt.group(3)) + 1, init)
    return mems


@pytest.fixture(scope="module")
def tiny_verilog(tiny):
    from amaranth.back import verilog

    dut = Accelerator(tiny, lanes=TINY_LANES)
    return dut, verilog.convert(dut, name="accelerator")


def test_tiny_verilog_converts(tiny, tiny_verilog):
    """The top module's ports are the Accelerator's signature (names, widths, directions) plus
    clk and rst, and every core's weight memory holds the model's weights in the EventCore layout
    (input i, lane group g at address i*G+g; lane j = neuron g*P+j, inverted for compare -1)."""
    import re

    from amaranth.hdl import Shape

    dut, text = tiny_verilog
    mods = _verilog_modules(text)
    ports, body = mods["accelerator"]
    want = {"clk": ("input", 1), "rst": ("input", 1)}
    for path, member, _value in dut.signature.flatten(dut):
        want["__".join(map(str, path))] = ("input" if member.flow == wiring.In else "output",
                                           Shape.cast(member.shape).width)
    assert sorted(ports) == sorted(want)
    for name, (direction, width) in want.items():
        rng = rf"\[{width - 1}:0\] " if width > 1 else ""
        assert re.search(rf"^\s*{direction} {rng}{re.escape(name)};", body, re.M), (name, direction, width)

    wmems = sorted(name for name in mods if re.fullmatch(r"accelerator\.layer\d+\.core\d+\.wmem", name))
    assert wmems == [f"accelerator.layer{l}.core0.wmem" for l in range(len(tiny.layers))]
    for l, layer in enumerate(tiny.layers):
        w = layer.weight_bit_matrix().astype(np.int64)  # (n_out, n_in)
        if not layer.is_output:
            w ^= (np.asarray(layer.compare) < 0).astype(np.int64)[:, None]
        P = min(TINY_LANES, layer.n_out)
        G = -(-layer.n_out // P)
        rows = [int(sum(int(b) << j for j, b in enumerate(w[g * P:(g + 1) * P, i])))
                for i in range(layer.n_in) for g in range(G)]
        (mem,) = _memories(mods[f"accelerator.layer{l}.core0.wmem"][1]).values()
        width, depth, init = mem
        assert (width, depth) == (P, layer.n_in * G)
        assert [init.get(a, 0) for a in range(depth)] == rows, f"layer {l}: weight memory contents"


@pytest.mark.cosim
def test_tiny_verilog_compiles(tiny_verilog, tmp_path):
    """Icarus Verilog accepts the converted design (SystemVerilog 2012 mode)."""
    import shutil
    import subprocess

    if shutil.which("iverilog") is None:
        pytest.skip("iverilog not installed")
    path = tmp_path / "accelerator.v"
    path.write_text(tiny_verilog[1])
    p = subprocess.run(["iverilog", "-g2012", "-s", "accelerator", "-o", str(tmp_path / "a.vvp"), str(path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


def with_weights_of(model, donor):
    """``model``'s thresholds with ``donor``'s weights: what a design built for ``model`` computes
    after the host wrote ``donor``'s weights into it."""
    layers = [dataclasses.replace(l, weight_bits=d.weight_bits) for l, d in zip(model.layers, donor.layers)]
    return dataclasses.replace(model, layers=layers)


@settings(max_examples=10, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=2, max_size=3),
    enc=st.sampled_from(["spikes", "pixels"]),
    lanes=st.sampled_from([8, 16, 64]),
    split=st.sampled_from([None, 8, 16]),
    store=st.sampled_from(["ram", "spram"]),
    accumulators=st.sampled_from(["registers", "memory"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_run_time_weight_writes(sizes, enc, lanes, split, store, accumulators, seed):
    """Weights written through the ``weights`` port replace the initial ones (block RAM) or fill
    the empty SPRAM memories; every byte lands on the right lanes, groups and cores, with the
    compare -1 flips applied by the core. Results, spikes and cycles then equal the golden model
    of the design's thresholds with the written weights."""
    rng = np.random.default_rng(seed)
    sizes[0] = max(sizes[0], 2)
    thr = int(rng.integers(1, 256))
    model = random_model(rng, sizes, input_encoding=enc, input_threshold=thr)
    donor = random_model(rng, sizes, input_encoding=enc, input_threshold=thr)
    images = rng.integers(0, 256, size=(2, sizes[0]), dtype=np.uint8)
    kw = dict(writable=True) if store == "ram" else dict(spram_layers=range(len(sizes) - 1))
    check_against_golden(with_weights_of(model, donor), images, lanes=lanes, max_neurons_per_core=split,
                                accumulators=accumulators, load_weights=donor, build_model=model, mode="event", word=32,
                                **kw)


def test_spram_layers_start_empty():
    """A SPRAM layer is not initialised by the bitstream: without a weight load the design computes
    with all-zero stored bits, not the model's weights (so a forgotten load cannot pass a test).
    Stored bits are the weights XOR the neuron's flip (compare -1), so the effective weights of
    the blank memory are +1 for the compare -1 neurons and -1 for the others."""
    rng = np.random.default_rng(3)
    model = random_model(rng, [24, 16, 5])
    images = rng.integers(0, 256, size=(4, 24), dtype=np.uint8)
    r = run_accelerator(model, images, lanes=8, spram_layers=[0])
    l0 = model.layers[0]
    assert (l0.compare < 0).any() and (l0.compare > 0).any()
    eff = np.repeat((l0.compare < 0).astype(np.uint8)[:, None], l0.n_in, axis=1)
    blank = dataclasses.replace(model, layers=[dataclasses.replace(l0, weight_bits=pack_bits(eff)), model.layers[1]])
    assert np.array_equal(r.scores, golden.run(blank, images).scores)
    assert not np.array_equal(r.scores, golden.run(model, images).scores)


def test_weight_write_arguments_rejected():
    model = random_model(np.random.default_rng(0), [20, 24, 5])
    with pytest.raises(ValueError, match="need mode='event'"):
        Accelerator(model, mode="dense", writable=True)
    with pytest.raises(ValueError, match="multiple of 8"):
        Accelerator(model, writable=True, max_neurons_per_core=12)
    with pytest.raises(ValueError, match=r"spram_layers \[2\]"):
        Accelerator(model, spram_layers=[2])
    with pytest.raises(ValueError, match=r"layer 0 \(fc1, 24 neurons\): run-time weight writes need lanes x bits = "
                                         r"8 x a power of two, not 12 lanes of 1-bit weights"):
        Accelerator(model, writable=True, lanes=12)
    with pytest.raises(ValueError, match="not 4 lanes of 1-bit weights"):
        Accelerator(model, writable=True, lanes=4)
    four = random_model(np.random.default_rng(0), [20, 24, 5], weight_bits={0: 4, 1: 4})
    for lanes, ok in ((2, True), (4, True), (8, True), (6, False), (1, False)):  # 4-bit: 1, 2, 4 bytes a group
        assert (write_lanes_problem(four, lanes) is None) == ok, lanes
    Accelerator(four, writable=True, lanes=4)._MustUse__silence = True
    from amaranth.back import rtlil

    rtlil.convert(Accelerator(model, writable=True, lanes=24, max_neurons_per_core=24))  # one group per core
