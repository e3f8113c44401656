"""Run images through a generated :class:`bitsnn.hw.Accelerator` in Amaranth's Python simulator.

One Simulator serves the whole batch: images are streamed back to back through ``pixels``, the
result words are read from ``result`` and the per-layer spike vectors are rebuilt from the
``events`` monitor tap. The cycle count is both read from the result stream (``cycles``) and
measured by the testbench (``measured_cycles``: from the cycle after the last pixel is accepted to
the first valid result word); the two must agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitsnn.hwmodel import HardwareModel
from bitsnn.hwplan import stream_inputs

__all__ = ["AmaranthResult", "run_accelerator"]


@dataclass
class AmaranthResult:
    """Per-image outputs of :func:`run_accelerator` for B images.

    ``classes`` (B,) int64; ``scores`` (B, C) int64; ``spikes``: one (B, n_l) uint8 array per hidden
    layer, from the events tap; ``spike_counts`` (B, hidden layers) int64 from the result stream;
    ``cycles`` (B,) int64 from the result stream; ``measured_cycles`` (B,) int64 from the testbench.
    """

    classes: np.ndarray
    scores: np.ndarray
    spikes: list[np.ndarray]
    spike_counts: np.ndarray
    cycles: np.ndarray
    measured_cycles: np.ndarray


def _to_signed32(v: int) -> int:
    return v - (1 << 32) if v & (1 << 31) else v


def run_accelerator(model: HardwareModel, images: np.ndarray, *, mode: str = "event", lanes: int = 32,
                    word: int = 32, k: int = 1, max_neurons_per_core: int | None = None, fifo_depth: int = 4,
                    vcd_path=None, result_ready=None, seed: int = 0, accumulators: str = "auto",
                    writable: bool = False, spram_layers=(), load_weights: HardwareModel | None = None,
                    conv_engine: str = "auto") -> AmaranthResult:
    """Simulate ``images`` ((B, *image_shape) uint8, or already cropped (B, n_inputs)) on an Accelerator built with these parameters.

    ``load_weights``: before the first image, write every weight of this model (same layer
    shapes) through the Accelerator's ``weights`` port (needs ``writable`` or ``spram_layers``),
    one byte per cycle; the design keeps ``model``'s thresholds.

    ``vcd_path``: write a VCD of the first image (a separate one-image simulation, so the batch run
    stays fast). ``result_ready``: probability (0..1] that ``result.ready`` is high in a cycle
    (backpressure test); None keeps it high.
    """
    flat = stream_inputs(model, images)
    params = dict(mode=mode, lanes=lanes, word=word, k=k, max_neurons_per_core=max_neurons_per_core,
                  fifo_depth=fifo_depth, accumulators=accumulators, writable=writable, spram_layers=spram_layers,
                  conv_engine=conv_engine)
    writes = []
    if load_weights is not None:
        from bitsnn.protocol import write_column_bytes

        if [l.n_in for l in load_weights.layers] != [l.n_in for l in model.layers] or \
                [l.n_out for l in load_weights.layers] != [l.n_out for l in model.layers]:
            raise ValueError("load_weights must have the model's layer shapes")
        for li, cols in enumerate(write_column_bytes(load_weights)):
            if cols is not None:
                writes += [(li, i, b, int(v)) for i in range(cols.shape[0]) for b, v in enumerate(cols[i])]
    if vcd_path is not None:
        _run(model, flat[:1], params, vcd_path, result_ready, seed, writes)
    return _run(model, flat, params, None, result_ready, seed, writes)


def _run(model, flat, params, vcd_path, result_ready, seed, writes=()):
    from amaranth.sim import Simulator

    from bitsnn.hw import Accelerator

    B = flat.shape[0]
    hidden = [l.n_out for l in model.hidden_layers]
    C = model.num_classes
    dut = Accelerator(model, **params)
    n_words = dut.n_result_words
    taps = [dut.hw.tap_size(l) for l in range(len(hidden))]
    rng = np.random.default_rng(seed)

    classes = np.zeros(B, np.int64)
    scores = np.zeros((B, C), np.int64)
    counts = np.zeros((B, len(hidden)), np.int64)
    cycles = np.zeros(B, np.int64)
    measured = np.zeros(B, np.int64)
    spikes = [np.zeros((B, n), np.uint8) for n in taps]  # tap addresses (a convolution's store)
    state = {"image": -1, "done": False}

    async def collector(ctx):
        async for _clk, _rst, valid, layer, addr in ctx.tick().sample(
                dut.events.valid, dut.events.payload.layer, dut.events.payload.addr):
            if valid:
                b = state["image"]
                if b < 0 or spikes[layer][b, addr]:
                    raise AssertionError(f"unexpected event layer {layer} addr {addr} (image {b})")
                spikes[layer][b, addr] = 1

    async def testbench(ctx):
        ctx.set(dut.result.ready, 1)
        if writes:
            wp = dut.weights
            ctx.set(wp.en, 1)
            for layer, col, byte, value in writes:
                ctx.set(wp.layer, layer)
                ctx.set(wp.col, col)
                ctx.set(wp.byte, byte)
                ctx.set(wp.data, value)
                await ctx.tick()
            ctx.set(wp.en, 0)
        for b in range(B):
            img = flat[b]
            ctx.set(dut.pixels.valid, 1)
            for p in img:
                ctx.set(dut.pixels.payload, int(p))
                while True:
                    _, _, rdy = await ctx.tick().sample(dut.pixels.ready)
                    if rdy:
                        break
            ctx.set(dut.pixels.valid, 0)
            state["image"] = b
            got, j = [], 0
            while len(got) < n_words:
                rdy = 1 if result_ready is None else int(rng.random() < result_ready)
                ctx.set(dut.result.ready, rdy)
                _, _, valid, word = await ctx.tick().sample(dut.result.valid, dut.result.payload)
                j += 1
                if valid and not got and not measured[b]:
                    measured[b] = j
                if valid and rdy:
                    got.append(word)
            ctx.set(dut.result.ready, 1)
            classes[b], cycles[b] = got[0], got[1]
            counts[b] = got[2:2 + len(hidden)]
            scores[b] = [_to_signed32(w) for w in got[2 + len(hidden):]]
        # Let the last image's monitor finish.
        while True:
            _, _, rdy = await ctx.tick().sample(dut.pixels.ready)
            if rdy:
                break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(collector)
    sim.add_testbench(testbench)
    if vcd_path is not None:
        from bitsnn.fileio import atomic_path

        with atomic_path(vcd_path, suffix=".vcd") as tmp, sim.write_vcd(str(tmp)):
            sim.run()
    else:
        sim.run()
    spikes = [dut.hw.tapped_spikes(l, s) for l, s in enumerate(spikes)]  # torch's flat order
    return AmaranthResult(classes, scores, spikes, counts, cycles, measured)
