"""A simulation harness around the generated Accelerator: the per-image work runs in the simulator.

A bench (:mod:`bitsnn.sim.cosim.batch_bench` under cocotb, or the C++ driver of
:mod:`bitsnn.sim.cosim.native` on Verilator) loads a batch of images into the harness's image
memory, starts it, waits for ``busy`` to fall and reads the batch back; between those points the
simulator runs free, with nothing outside it per clock cycle. For each image the harness

- streams the pixels into ``pixels`` (one per cycle while ``ready``), as a host would;
- takes every ``result`` word (``ready`` held high);
- sets one bit per ``events`` tap beat in a spike vector (hidden layers one after another, each
  :meth:`HardwarePlan.tap_size` bits at its tap offset);
- counts the cycles from the last pixel's transfer to the first result word (the ``measured``
  count, which must equal the design's own cycle word and ``bitsnn.sim.cycles``), and the cycles
  the image took in all;
- flags a result that arrives before the last pixel went in, and an image that produced no
  result within ``watchdog`` cycles (the batch then stops);
- writes the result record and the spike vector to the result memories at the image's index
  once the result is in and ``pixels.ready`` is back (the tap has drained).

Record layout (:class:`RecordLayout`): the result words (32 bits each), then ``measured`` and
``cycles`` (32 bits each), then ``early`` and ``hung`` (1 bit each).

The harness is simulation-only logic (memories of whole images); it is never built for a board.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from bitsnn.hwplan import input_values

__all__ = ["CosimHarness", "RecordLayout"]


@dataclass(frozen=True)
class RecordLayout:
    """Bit positions of one image's result record (what :class:`CosimHarness` writes)."""

    n_words: int

    @property
    def measured(self) -> int:
        return 32 * self.n_words

    @property
    def cycles(self) -> int:
        return 32 * self.n_words + 32

    @property
    def early(self) -> int:
        return 32 * self.n_words + 64

    @property
    def hung(self) -> int:
        return 32 * self.n_words + 65

    @property
    def width(self) -> int:
        return 32 * self.n_words + 66

    def decode(self, value: int) -> dict:
        """One record (an int) -> words (list), measured, cycles, early, hung."""
        m32 = (1 << 32) - 1
        return {"words": [(value >> (32 * j)) & m32 for j in range(self.n_words)],
                "measured": (value >> self.measured) & m32, "cycles": (value >> self.cycles) & m32,
                "early": bool(value >> self.early & 1), "hung": bool(value >> self.hung & 1)}


class CosimHarness(wiring.Component):
    """``Accelerator(hwmodel, **accel_params)`` with a batch of ``batch`` images around it.

    Ports (all sampled and driven on ``sync``):

    - ``load_addr``, ``load_data``, ``load_en``: write image ``load_addr`` of the batch
      (``n_inputs`` pixels, pixel 0 in the low byte);
    - ``count``, ``go``: run images 0..count-1 (``go`` for one cycle while not ``busy``);
    - ``busy``: high from the cycle after ``go`` until the batch's last record is written (a
      register: a combinational output can glitch within a time step on Icarus, which a bench
      waiting for its falling edge would take for the end);
    - ``read_addr`` -> ``read_record``, ``read_spikes``: one cycle later (a synchronous read).
    """

    def __init__(self, hwmodel, *, batch: int = 128, watchdog: int = 200_000, **accel_params):
        from bitsnn.hw import Accelerator

        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self.accelerator = Accelerator(hwmodel, **accel_params)
        plan = self.accelerator.hw
        self.n_inputs = input_values(hwmodel)
        self.batch, self.watchdog = int(batch), int(watchdog)
        self.taps = [plan.tap_size(l) for l in range(len(hwmodel.hidden_layers))]
        self.tap_offsets = [sum(self.taps[:l]) for l in range(len(self.taps))]
        self.n_spike_bits = max(1, sum(self.taps))
        self.record = RecordLayout(self.accelerator.n_result_words)
        super().__init__({
            "load_addr": In(range(self.batch)),
            "load_data": In(8 * self.n_inputs),
            "load_en": In(1),
            "count": In(range(self.batch + 1)),
            "go": In(1),
            "busy": Out(1),
            "read_addr": In(range(self.batch)),
            "read_record": Out(self.record.width),
            "read_spikes": Out(self.n_spike_bits),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = acc = self.accelerator
        N, B, rec = self.n_inputs, self.batch, self.record

        m.submodules.images = images = memory.Memory(shape=8 * N, depth=B, init=[])
        m.submodules.records = records = memory.Memory(shape=rec.width, depth=B, init=[])
        m.submodules.spikes = spikes = memory.Memory(shape=self.n_spike_bits, depth=B, init=[])
        img_w, img_r = images.write_port(), images.read_port()
        m.d.comb += img_r.en.eq(0)
        rec_w, rec_r = records.write_port(), records.read_port()
        spk_w, spk_r = spikes.write_port(), spikes.read_port()
        m.d.comb += [img_w.addr.eq(self.load_addr), img_w.data.eq(self.load_data), img_w.en.eq(self.load_en),
                     rec_r.addr.eq(self.read_addr), spk_r.addr.eq(self.read_addr),
                     self.read_record.eq(rec_r.data), self.read_spikes.eq(spk_r.data)]

        idx = Signal(range(B + 1))
        count = Signal(range(B + 1))
        pos = Signal(range(N + 1))
        fed = Signal()  # the last pixel went in
        since = Signal(32)  # cycles since the last pixel's transfer
        measured = Signal(32)
        n = Signal(32)  # cycles of this image
        early, hung = Signal(), Signal()
        words = Signal(32 * rec.n_words)
        nw = Signal(range(rec.n_words + 1))
        seen = Signal(self.n_spike_bits)
        # the image memory is read once per image (LOAD); its read register then holds the image
        m.d.comb += img_r.addr.eq(idx)

        # results: every word as it comes (the design's result stream never waits)
        m.d.comb += acc.result.ready.eq(1)
        with m.If(acc.result.valid & (nw < rec.n_words)):
            m.d.sync += [words.word_select(nw, 32).eq(acc.result.payload), nw.eq(nw + 1)]
            with m.If(nw == 0):
                m.d.sync += [measured.eq(since), early.eq(~fed)]
        m.d.sync += since.eq(since + 1)
        # the events tap: one bit per beat, at the layer's offset (``bit`` as narrow as the vector:
        # a shift by a w-bit amount is 2**w bits wide)
        bit = Signal(range(self.n_spike_bits))
        offsets = Array(Const(o, len(bit)) for o in self.tap_offsets)
        m.d.comb += bit.eq(offsets[acc.events.payload.layer] + acc.events.payload.addr)
        with m.If(acc.events.valid):
            m.d.sync += seen.eq(seen | (Const(1, self.n_spike_bits) << bit)[:self.n_spike_bits])

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.go & (self.count != 0)):
                    m.d.sync += [idx.eq(0), count.eq(self.count), self.busy.eq(1)]
                    m.next = "LOAD"
            with m.State("LOAD"):  # the image memory's read takes this cycle
                m.d.comb += img_r.en.eq(1)
                m.d.sync += [pos.eq(0), fed.eq(0), nw.eq(0), seen.eq(0), n.eq(1), early.eq(0), hung.eq(0)]
                m.next = "FEED"
            with m.State("FEED"):
                m.d.comb += [acc.pixels.valid.eq(1),
                             acc.pixels.payload.eq(img_r.data.word_select(pos, 8))]
                m.d.sync += n.eq(n + 1)
                with m.If(acc.pixels.ready):
                    m.d.sync += pos.eq(pos + 1)
                    with m.If(pos == N - 1):
                        m.d.sync += [fed.eq(1), since.eq(1)]
                        m.next = "WAIT"
                with m.If(n >= self.watchdog):
                    m.d.sync += hung.eq(1)
                    m.next = "STORE"
            with m.State("WAIT"):
                m.d.sync += n.eq(n + 1)
                with m.If((nw == rec.n_words) & acc.pixels.ready):
                    m.next = "STORE"
                with m.If(n >= self.watchdog):
                    m.d.sync += hung.eq(1)
                    m.next = "STORE"
            with m.State("STORE"):
                m.d.comb += [rec_w.addr.eq(idx), rec_w.data.eq(Cat(words, measured, n + 1, early, hung)),
                             rec_w.en.eq(1),
                             spk_w.addr.eq(idx), spk_w.data.eq(seen), spk_w.en.eq(1)]
                m.d.sync += idx.eq(idx + 1)
                with m.If(hung | (idx + 1 == count)):
                    m.d.sync += self.busy.eq(0)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "LOAD"
        return m
