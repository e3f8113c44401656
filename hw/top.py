"""The UART top level: the framed, checksummed protocol of :mod:`bitsnn.protocol` around an
:class:`~bitsnn.hw.accelerator.Accelerator`.

Blocks: :class:`~bitsnn.hw.uart.UARTRx` -> frame parser -> image buffer (LOAD's pixels and
INFER's slots, :class:`~bitsnn.protocol.BufferLayout`) -> pixel feeder -> Accelerator -> result
memory (4 bytes per result word) -> response sequencer -> :class:`~bitsnn.hw.uart.UARTTx`. Every
constant (sync bytes, command and status codes, CRC-8, INFO layout) comes from
:mod:`bitsnn.protocol`; docs/protocol.md describes the behaviour.

Guarantees: every complete request frame gets exactly one response unless it completes while a
response is being sent and another is waiting (without INFER: while a response is being sent);
then it is dropped: the host's timeout and retry cover that, and a host that waits for each reply
never sees it. INFER's replies come in request order, with their tags. A frame that stops for ``timeout_cycles`` clock
cycles is abandoned with a ``TIMEOUT`` response, so the parser never waits forever. A frame
whose length field exceeds :func:`~bitsnn.protocol.max_request_payload` (``max_payload``: what no
command takes) is answered ``BAD_LENGTH`` (echoing its command) as soon as the length's high byte
arrives, whatever the command and even during a run; the parser then discards every byte until the
line has been quiet for ``timeout_cycles`` and returns to idle without another reply. Such a frame
never touches the image buffer, so a loaded image stays valid. A frame with a length within that
bound is read to its end and judged at its CRC byte (``BAD_LENGTH`` there if the length is wrong
for the command).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import enum, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from bitsnn import protocol as P
from bitsnn.hwplan import write_columns

from .bytebuf import ByteBuffer
from .ports import read_port
from .uart import UARTRx, UARTTx

__all__ = ["UARTTop", "FrameParser", "RunEngine", "Responder", "ReplyKind", "crc8_next"]


class ReplyKind(enum.Enum, shape=2):
    """What a reply's payload holds."""

    EMPTY = 0  #: nothing
    INFO = 1  #: the INFO bytes
    RESULT = 2  #: the result bytes (READ)
    INFER_RESULT = 3  #: the result bytes and the request's tag (the run engine's INFER replies)


def crc8_next(crc, byte):
    """Combinational CRC-8 of one more byte, equal to ``protocol.crc8_update(crc, byte)``.

    The byte-wise CRC is linear over GF(2): output bit j is the XOR of the bits i of
    ``crc ^ byte`` for which ``CRC8_TABLE[1 << i]`` has bit j set (a flat XOR network, no mux chain).
    """
    x = crc ^ byte
    bits = []
    for j in range(8):
        terms = [x[i] for i in range(8) if (P.CRC8_TABLE[1 << i] >> j) & 1]
        acc = terms[0]
        for t in terms[1:]:
            acc = acc ^ t
        bits.append(acc)
    return Cat(*bits)


class UARTTop(wiring.Component):
    """The host-facing design: UART pins in, UART pins out.

    Parameters:
    - ``hwmodel``: the loaded :class:`~bitsnn.hwmodel.HardwareModel`.
    - ``clk_freq``: clock frequency in Hz; ``baud``: bit rate. Their ratio is the UART divisor.
    - ``timeout_cycles``: inter-byte timeout of the frame parser in clock cycles (default: 20 ms,
      at least 4 byte times).
    - ``accelerator``: an already built Accelerator-like component (tests pass a stand-in);
      default ``Accelerator(hwmodel, mode=mode, **accel_kwargs)``.
    - ``infer``: serve INFER (default: whenever the longest INFER frame fits the length field);
      False leaves its logic out (LOAD, RUN and READ remain).

    Ports:
    - ``rx``: In(1), serial input (idle high). ``tx``: Out(1), serial output (idle high).
    - ``running``: Out(1), high from an accepted RUN until the last result word is stored.
    """

    def __init__(self, hwmodel, *, clk_freq: float, baud: float, timeout_cycles: int | None = None,
                 mode: str = "event", accelerator=None, infer: bool | None = None, **accel_kwargs):
        try:
            self._init(hwmodel, clk_freq=clk_freq, baud=baud, timeout_cycles=timeout_cycles, mode=mode,
                       accelerator=accelerator, infer=infer, **accel_kwargs)
        except Exception:
            # a rejected argument leaves no "created but never used" warning behind, for this
            # design or the parts it had already made
            for part in (self, getattr(self, "rx_core", None), getattr(self, "tx_core", None)):
                if part is not None:
                    part._MustUse__silence = True
            raise

    def _init(self, hwmodel, *, clk_freq, baud, timeout_cycles, mode, accelerator, infer, **accel_kwargs):
        self.hwmodel = hwmodel
        self.n_inputs = P.input_values(hwmodel)  # every step's with given coding
        if not 1 <= self.n_inputs <= 0xFFFF:
            raise ValueError(f"the model takes {self.n_inputs} input values; one LOAD frame carries at most 65535")
        self.n_hidden = len(hwmodel.layers) - 1
        self.n_classes = hwmodel.num_classes
        self.n_words = P.result_words(self.n_hidden, self.n_classes)
        if self.n_words > 255:
            raise ValueError(f"{self.n_words} result words; the protocol reports at most 255")
        self.rx_core = UARTRx(clk_freq, baud)
        self.tx_core = UARTTx(clk_freq, baud)
        self.divisor = self.rx_core.divisor
        if timeout_cycles is None:
            timeout_cycles = max(int(clk_freq // 50), 40 * self.divisor)
        if timeout_cycles < 12 * self.divisor:
            raise ValueError(f"timeout_cycles {timeout_cycles} is shorter than a byte ({10 * self.divisor} cycles)")
        self.timeout_cycles = int(timeout_cycles)
        if accelerator is None:
            from .accelerator import Accelerator

            accelerator = Accelerator(hwmodel, mode=mode, **accel_kwargs)
        self.accel = accelerator
        #: WRITE_WEIGHTS is served when the accelerator has a run-time weight port
        self.weight_write = bool(getattr(accelerator, "writable", False))
        #: INFER (the image's masks, and its nonzero pixels on a pixel-input or rate-coded design;
        #: the result in the reply) is served while its longest frame fits the 16-bit length field
        self.infer_pixels = P.infer_carries_pixels(hwmodel)
        fits = P.infer_fits(self.n_inputs, pixels=self.infer_pixels)
        if infer and not fits:
            raise ValueError(f"INFER: a {self.n_inputs}-input image does not fit one frame")
        self.infer = fits if infer is None else bool(infer)
        self.layout = P.buffer_layout(self.n_inputs, infer=self.infer, weight_write=self.weight_write,
                                      pixels=self.infer_pixels)
        #: the largest request payload any command takes; a longer length field gets BAD_LENGTH at once
        self.max_payload = P.max_request_payload(self.n_inputs, self.layout.slot_bytes if self.infer else 0)
        self.baud = int(round(baud))
        self.info = P.Info(
            version=P.PROTOCOL_VERSION,
            flags=(P.FLAG_WEIGHT_WRITE if self.weight_write else 0)
            | (P.FLAG_WEIGHTS_VOLATILE if getattr(accelerator, "spram_layers", None) else 0)
            | (P.FLAG_INFER if self.infer else 0) | (P.FLAG_INFER_PIXELS if self.infer and self.infer_pixels else 0)
            | (P.FLAG_EVENT_STAGES if getattr(accelerator, "conv_engine", "auto") == "event" else 0),
            n_inputs=self.n_inputs,
            n_hidden=self.n_hidden,
            n_classes=self.n_classes,
            n_result_words=self.n_words,
            model_id=P.model_id(hwmodel.content_hash),
            lanes=int(getattr(accelerator, "lanes", 0) or 0) if getattr(accelerator, "mode", "") == "event" else 0,
            baud=self.baud,
        ).to_bytes()
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "running": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rxc = self.rx_core
        m.submodules.uart_tx = txc = self.tx_core
        m.submodules.accel = acc = self.accel
        m.d.comb += [rxc.rx.eq(self.rx), self.tx.eq(txc.tx)]
        n_in, K = self.n_inputs, self.n_words
        # SPRAM on an iCE40 UltraPlus (the EBRs are left to the weights), lib.memory elsewhere.
        # Layout (protocol.BufferLayout): LOAD's pixels, the INFER slots, WRITE_WEIGHTS's staging
        # area (its data bytes are copied into the weight memories only once the frame's CRC is
        # good). Single-port rule: the pixels are written only while no inference runs and read
        # only while a RUN's does; INFER slots are written while other images run, so their reads
        # wait for a cycle without a write (the runner's wr_busy).
        lay = self.layout
        depth = lay.depth
        m.submodules.image = image = ByteBuffer(depth)
        # The K result words as 4*K bytes of a small memory (word 0, byte 0 at address 0; a block
        # RAM on FPGAs, not 32*K flip-flops): the runner writes result byte b of word w at 4w+b,
        # the responder reads them in order. A RUN during a result response overwrites the bytes
        # not yet sent (its results replace the old ones, as READ would then return).
        m.submodules.results = results = memory.Memory(shape=8, depth=4 * K, init=[])
        res_wp, res_rp = results.write_port(), results.read_port()

        # the Accelerator's weights port, as its driver sees it
        weights = acc.signature.members["weights"].signature.flip() if self.weight_write else None
        m.submodules.parser = parser = FrameParser(
            n_inputs=n_in, max_payload=self.max_payload, timeout_cycles=self.timeout_cycles, layout=lay,
            infer_pixels=self.infer_pixels, weights=weights, layers=write_columns(self.hwmodel))
        m.submodules.runner = runner = RunEngine(n_inputs=n_in, n_words=K, layout=lay, infer_pixels=self.infer_pixels)
        m.submodules.responder = responder = Responder(self.info, n_words=K, infer=bool(lay.slots))

        wiring.connect(m, rx=rxc.data, parser=parser.rx)
        wiring.connect(m, parser=parser.wr, image=image.wr)
        # the image buffer's one read port: the runner's, or the commit of a WRITE_WEIGHTS frame
        # (never both: a WRITE_WEIGHTS frame during a run is answered BUSY)
        m.d.comb += [parser.rd.data.eq(image.rd.data), runner.rd.data.eq(image.rd.data),
                     image.rd.addr.eq(Mux(parser.commit, parser.rd.addr, runner.rd.addr))]
        if weights is not None:
            wiring.connect(m, parser=parser.weights, accel=acc.weights)
        m.d.comb += [parser.running.eq(runner.running), parser.result_valid.eq(runner.result_valid),
                     runner.start.eq(parser.start_run), self.running.eq(runner.running),
                     runner.wr_busy.eq(parser.wr.en)]
        if lay.slots:
            wiring.connect(m, parser=parser.infer, runner=runner.infer)
            wiring.connect(m, runner=runner.reply, responder=responder.run)
            m.d.comb += runner.responder_busy.eq(responder.busy)
        wiring.connect(m, runner=runner.pixels, accel=acc.pixels)
        wiring.connect(m, accel=acc.result, runner=runner.result)
        m.d.comb += [res_wp.addr.eq(runner.res.addr), res_wp.data.eq(runner.res.data), res_wp.en.eq(runner.res.en),
                     res_rp.addr.eq(responder.res.addr), responder.res.data.eq(res_rp.data)]
        wiring.connect(m, parser=parser.reply, responder=responder.req)
        wiring.connect(m, responder=responder.tx, tx=txc.data)
        return m


def reply_signature() -> wiring.Signature:
    """A reply request from the parser: ``req`` (a one-cycle pulse), ``cmd``, ``status`` and
    ``kind`` (:class:`ReplyKind`; ``INFER_RESULT`` comes from the run engine only)."""
    return wiring.Signature({"req": Out(1), "cmd": Out(8), "status": Out(8), "kind": Out(ReplyKind)})


def infer_signature(depth: int) -> wiring.Signature:
    """INFER between the parser and the run engine, from the parser's side: ``start``, a pulse
    after a good INFER frame (its image is in the slot at ``base``); ``ok``: the next slot is free
    (and no RUN's inference reads the pixels), so an INFER frame may write it from ``base`` on."""
    return wiring.Signature({"start": Out(1), "ok": In(1), "base": In(range(max(2, depth)))})


def run_reply_signature() -> wiring.Signature:
    """An INFER's reply, from the run engine: the result bytes and ``tag``; ``req`` held until
    ``ack``."""
    return wiring.Signature({"req": Out(1), "ack": In(1), "tag": Out(8)})


def byte_write(depth: int) -> wiring.Signature:
    """A writer's side of a byte memory's write port."""
    return wiring.Signature({"addr": Out(range(max(2, depth))), "data": Out(8), "en": Out(1)})


class FrameParser(wiring.Component):
    """Request frames in, replies, image bytes, runs and weight writes out (see the module docstring).

    Ports: ``rx`` In(byte stream from :class:`UARTRx`); ``running``, ``result_valid`` In(1) (the
    run engine's state); ``reply`` Out(:func:`reply_signature`); ``start_run`` Out(1), a pulse
    after a good RUN; ``wr`` Out(:func:`byte_write`) into the image buffer; ``rd`` Out(read port)
    of the image buffer and ``commit`` Out(1), high while a WRITE_WEIGHTS frame's staged bytes are
    copied out through ``rd``; ``weights`` Out (the Accelerator's weights port), only when
    ``weights`` (its signature) is given; ``infer`` Out(:func:`infer_signature`), only when the
    layout has INFER slots. ``layout``: the image buffer (:class:`bitsnn.protocol.BufferLayout`).
    ``layers``: (columns, bytes per column) per layer (:func:`bitsnn.hwplan.write_columns`), for the
    WRITE_WEIGHTS address check.
    """

    def __init__(self, *, n_inputs: int, max_payload: int, timeout_cycles: int, layout: P.BufferLayout,
                 infer_pixels: bool = False, weights: wiring.Signature | None = None, layers=()):
        self.n_inputs, self.max_payload, self.timeout_cycles = n_inputs, max_payload, timeout_cycles
        self.infer_pixels = infer_pixels
        self.weight_write, self.layers = weights is not None, list(layers)
        self.layout = layout
        buffer_depth = layout.depth
        members = {
            "rx": In(stream.Signature(unsigned(8), always_ready=True)),
            "running": In(1),
            "result_valid": In(1),
            "reply": Out(reply_signature()),
            "start_run": Out(1),
            "wr": Out(byte_write(buffer_depth)),
            "rd": Out(read_port(buffer_depth, 8)),
            "commit": Out(1),
        }
        if weights is not None:
            members["weights"] = Out(weights)
        if layout.slots:
            members["infer"] = Out(infer_signature(buffer_depth))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n_in = self.n_inputs
        wr, rd = self.wr, self.rd
        running, result_valid = self.running, self.result_valid
        stage = self.layout.stage
        infer = bool(self.layout.slots)
        slot_bytes = self.layout.slot_bytes
        image_valid = Signal()
        rsp_req, rsp_cmd, rsp_status, rsp_kind = self.reply.req, self.reply.cmd, self.reply.status, self.reply.kind
        start_run = self.start_run

        byte = self.rx.payload
        got = self.rx.valid
        cmd = Signal(8)
        length = Signal(16)
        idx = Signal(16)
        crc = Signal(8)
        frame_busy = Signal()
        sync_err_sent = Signal()

        known, len_ok, oversize = self._command_checks(m, cmd, length, byte)

        def reply(c, status, kind=ReplyKind.EMPTY):
            return [rsp_req.eq(1), rsp_cmd.eq(c), rsp_status.eq(status), rsp_kind.eq(kind)]

        timed_out = self._idle_timeout(m, got)

        m.d.comb += wr.data.eq(byte)
        is_ww = Signal()
        m.d.comb += is_ww.eq(cmd == P.Cmd.WRITE_WEIGHTS)
        is_infer = Signal()
        m.d.comb += is_infer.eq(cmd == P.Cmd.INFER)
        addr = idx
        if self.weight_write:
            addr = Mux(is_ww, stage + idx - P.WEIGHT_HEADER, addr)
        if infer:
            # the slot's base is captured with the frame (it stays free until the frame's start)
            infer_base = Signal.like(self.infer.base)
            addr = Mux(is_infer, infer_base + idx, addr)
        m.d.comb += wr.addr.eq(addr)
        # an INFER frame writes only into a free slot (decided when its length arrives), any other
        # frame that changes the buffer only while no inference runs
        frame_busy_now = running & (cmd != P.Cmd.INFO)
        if infer:
            frame_busy_now = Mux(is_infer, ~self.infer.ok, frame_busy_now)
        # WRITE_WEIGHTS: its header, its address check, and the commit that follows a good CRC
        w_hdr, w_n, w_addr_ok_r = self._weight_header(m, length)
        commit_rd = Signal()
        commit_k = Signal(range(P.MAX_WEIGHT_CHUNK + 2))
        with m.FSM(name="parser"):
            with m.State("IDLE"):
                with m.If(got):
                    with m.If(byte == P.REQ_SYNC):
                        m.d.sync += [crc.eq(0), sync_err_sent.eq(0)]
                        m.next = "CMD"
                    with m.Elif(~sync_err_sent):
                        m.d.sync += sync_err_sent.eq(1)
                        m.d.comb += reply(0, P.Status.BAD_SYNC)
                with m.Elif(timed_out):
                    m.d.sync += sync_err_sent.eq(0)
            with m.State("CMD"):
                with m.If(got):
                    m.d.sync += [cmd.eq(byte), crc.eq(crc8_next(crc, byte))]
                    m.next = "LEN0"
                with m.Elif(timed_out):
                    m.d.comb += reply(0, P.Status.TIMEOUT)
                    m.next = "IDLE"
            with m.State("LEN0"):
                with m.If(got):
                    m.d.sync += [length[:8].eq(byte), crc.eq(crc8_next(crc, byte))]
                    m.next = "LEN1"
                with m.Elif(timed_out):
                    m.d.comb += reply(cmd, P.Status.TIMEOUT)
                    m.next = "IDLE"
            with m.State("LEN1"):
                with m.If(got):
                    m.d.sync += [length[8:].eq(byte), crc.eq(crc8_next(crc, byte)), idx.eq(0),
                                 frame_busy.eq(frame_busy_now)]
                    if infer:
                        m.d.sync += infer_base.eq(self.infer.base)
                    with m.If(oversize):
                        m.d.comb += reply(cmd, P.Status.BAD_LENGTH)
                        m.next = "SKIP"
                    with m.Elif(byte.any() | length[:8].any()):
                        m.next = "PAYLOAD"
                    with m.Else():
                        m.next = "CHECK"
                with m.Elif(timed_out):
                    m.d.comb += reply(cmd, P.Status.TIMEOUT)
                    m.next = "IDLE"
            with m.State("SKIP"):
                # after a BAD_LENGTH for an oversized length field: drop the rest of the frame
                # (whatever it holds, sync bytes too) until the line is quiet for the timeout
                with m.If(timed_out):
                    m.next = "IDLE"
            with m.State("PAYLOAD"):
                with m.If(got):
                    m.d.sync += [crc.eq(crc8_next(crc, byte)), idx.eq(idx + 1)]
                    # each command writes only its own area: LOAD the pixels, INFER its slot,
                    # WRITE_WEIGHTS the staging area
                    en = (cmd == P.Cmd.LOAD) & (idx < n_in)
                    if self.weight_write:
                        with m.If(is_ww & (idx < P.WEIGHT_HEADER)):
                            m.d.sync += w_hdr.word_select(idx[:3], 8).eq(byte)
                        en = en | (is_ww & (idx >= P.WEIGHT_HEADER) & len_ok)
                    if infer:
                        en = en | (is_infer & (idx < slot_bytes))
                    m.d.comb += wr.en.eq(~frame_busy & en)
                    with m.If(idx == length - 1):
                        m.next = "CHECK"
                with m.Elif(timed_out):
                    m.d.comb += reply(cmd, P.Status.TIMEOUT)
                    with m.If((cmd == P.Cmd.LOAD) & ~frame_busy):
                        m.d.sync += image_valid.eq(0)
                    m.next = "IDLE"
            with m.State("CHECK"):
                with m.If(got):
                    m.next = "IDLE"
                    busy_now = frame_busy | (running & (cmd != P.Cmd.INFO) & (cmd != P.Cmd.INFER))
                    with m.If((cmd == P.Cmd.LOAD) & ~frame_busy):
                        m.d.sync += image_valid.eq(0)  # the buffer changed: valid only if all is well
                    with m.If(byte != crc):
                        m.d.comb += reply(cmd, P.Status.BAD_CHECKSUM)
                    with m.Elif(~known):
                        m.d.comb += reply(cmd, P.Status.UNKNOWN_CMD)
                    with m.Elif(busy_now):
                        m.d.comb += reply(cmd, P.Status.BUSY)
                    with m.Elif(~len_ok):
                        m.d.comb += reply(cmd, P.Status.BAD_LENGTH)
                    with m.Else():
                        with m.Switch(cmd):
                            with m.Case(P.Cmd.INFO):
                                m.d.comb += reply(cmd, P.Status.OK, ReplyKind.INFO)
                            with m.Case(P.Cmd.LOAD):
                                m.d.sync += image_valid.eq(1)
                                m.d.comb += reply(cmd, P.Status.OK)
                            with m.Case(P.Cmd.RUN):
                                with m.If(image_valid):
                                    m.d.comb += [start_run.eq(1), *reply(cmd, P.Status.OK)]
                                with m.Else():
                                    m.d.comb += reply(cmd, P.Status.NO_IMAGE)
                            with m.Case(P.Cmd.READ):
                                with m.If(result_valid):
                                    m.d.comb += reply(cmd, P.Status.OK, ReplyKind.RESULT)
                                with m.Else():
                                    m.d.comb += reply(cmd, P.Status.NO_RESULT)
                            with m.Case(P.Cmd.INFER):
                                if infer:  # the run engine replies, with the result
                                    m.d.comb += self.infer.start.eq(1)
                                else:
                                    m.d.comb += reply(cmd, P.Status.UNSUPPORTED)
                            with m.Case(P.Cmd.WRITE_WEIGHTS):
                                if not self.weight_write:
                                    m.d.comb += reply(cmd, P.Status.UNSUPPORTED)
                                else:
                                    with m.If(w_addr_ok_r):
                                        m.d.sync += commit_k.eq(0)
                                        m.next = "COMMIT"
                                    with m.Else():
                                        m.d.comb += reply(cmd, P.Status.BAD_ADDRESS)
                with m.Elif(timed_out):
                    m.d.comb += reply(cmd, P.Status.TIMEOUT)
                    with m.If((cmd == P.Cmd.LOAD) & ~frame_busy):
                        m.d.sync += image_valid.eq(0)
                    m.next = "IDLE"

            if self.weight_write:
                with m.State("COMMIT"):
                    self._weight_commit(m, w_hdr, w_n, commit_k, commit_rd)
                    with m.If(commit_k == w_n):
                        m.d.comb += reply(cmd, P.Status.OK)
                        m.next = "IDLE"

        m.d.comb += self.commit.eq(commit_rd)
        with m.If(commit_rd):
            m.d.comb += rd.addr.eq(stage + commit_k)
        return m

    def _command_checks(self, m, cmd, length, byte):
        """(known, len_ok, oversize): the command and length checks.

        ``known`` and ``len_ok`` are registered: cmd and length are complete at least a byte time
        (>= 10 cycles) before the CRC byte that CHECK decides on, so the reply decision only
        compares the CRC and reads flags. ``oversize`` (a length field > max_payload, a constant)
        is decided in LEN1 from the incoming high ``byte``: the low byte's part of the comparison
        is registered (the low byte is stored a byte time earlier), so the decision only compares
        one byte with constants."""
        n_in, slot_bytes = self.n_inputs, self.layout.slot_bytes
        known = Signal()
        m.d.sync += known.eq(Cat(*(cmd == c for c in P.Cmd)).any())
        len_ok = Signal()
        with m.Switch(cmd):
            for c in (P.Cmd.INFO, P.Cmd.RUN, P.Cmd.READ):
                with m.Case(c):
                    m.d.sync += len_ok.eq(length == 0)
            with m.Case(P.Cmd.LOAD):
                m.d.sync += len_ok.eq(length == n_in)
            with m.Case(P.Cmd.WRITE_WEIGHTS):
                m.d.sync += len_ok.eq((length > P.WEIGHT_HEADER) & (length <= P.WEIGHT_HEADER + P.MAX_WEIGHT_CHUNK))
            with m.Case(P.Cmd.INFER):
                if self.infer_pixels:  # the tag, every mask byte, up to every pixel
                    m.d.sync += len_ok.eq((length > P.packed_input_bytes(n_in)) & (length <= slot_bytes))
                else:
                    m.d.sync += len_ok.eq(length == slot_bytes)
            with m.Default():
                m.d.sync += len_ok.eq(0)
        max_hi, max_lo = self.max_payload >> 8, self.max_payload & 0xFF
        lo_over = Signal()
        m.d.sync += lo_over.eq(length[:8] > max_lo)
        oversize = Signal()
        m.d.comb += oversize.eq((byte > max_hi) | ((byte == max_hi) & lo_over))
        return known, len_ok, oversize

    def _idle_timeout(self, m, got):
        """``timed_out``: high in the cycle the line has been quiet for ``timeout_cycles``."""
        idle_timer = Signal(range(self.timeout_cycles + 1))
        timed_out = Signal()
        with m.If(got):
            m.d.sync += idle_timer.eq(0)
        with m.Elif(idle_timer != self.timeout_cycles):
            m.d.sync += idle_timer.eq(idle_timer + 1)
        m.d.comb += timed_out.eq(~got & (idle_timer == self.timeout_cycles - 1))
        return timed_out

    def _weight_header(self, m, length):
        """(header, data bytes, address ok): a WRITE_WEIGHTS frame's header (layer u8, column u16,
        offset u16; the payload state fills it), its data byte count and whether its address lies
        in the layer's weight columns. The last two are registered: stable long before the CRC
        byte arrives, off the parser's reply path."""
        w_hdr = Signal(8 * P.WEIGHT_HEADER)
        w_layer, w_col, w_off = w_hdr[:8], w_hdr[8:24], w_hdr[24:40]
        w_n = Signal(16)
        m.d.sync += w_n.eq(length - P.WEIGHT_HEADER)
        w_addr_ok, w_addr_ok_r = Signal(), Signal()
        m.d.sync += w_addr_ok_r.eq(w_addr_ok)
        if self.weight_write:
            with m.Switch(w_layer):
                for li, (n_cols, col_bytes) in enumerate(self.layers):
                    with m.Case(li):  # a convolution (no columns) takes no weight writes
                        m.d.comb += w_addr_ok.eq((w_col < n_cols) & (w_off < col_bytes) & (w_off + w_n <= col_bytes))
        return w_hdr, w_n, w_addr_ok_r

    def _weight_commit(self, m, w_hdr, w_n, commit_k, commit_rd):
        """The COMMIT state's copy: staged byte k is read in cycle k and written into the weight
        memory in cycle k+1 (<= 257 cycles). The reply comes after, and a host waits for it, so no
        request byte arrives now; one that does is dropped (its frame then fails its sync or CRC
        check)."""
        w_layer, w_col, w_off = w_hdr[:8], w_hdr[8:24], w_hdr[24:40]
        m.d.comb += commit_rd.eq(1)
        m.d.sync += commit_k.eq(commit_k + 1)
        with m.If(commit_k != 0):
            w = self.weights
            m.d.comb += [w.layer.eq(w_layer), w.col.eq(w_col), w.byte.eq(w_off + commit_k - 1),
                         w.data.eq(self.rd.data), w.en.eq(1)]


class RunEngine(wiring.Component):
    """Image buffer -> Accelerator -> result bytes.

    Two sources of images: a RUN (``start``) feeds LOAD's pixels; an INFER slot holds packed
    input spikes, fed as pixels 0 or 255 (which the spike-input Accelerator thresholds back to the
    same spikes). Slots are taken in order: the parser fills the one at ``infer.base`` when
    ``infer.ok``; the engine feeds each full slot in turn, frees it once fed, and asks for a
    result reply (``reply``) after each INFER's inference. An INFER's result waits until the
    responder has sent the previous one (``responder_busy``), so replies come whole and in order.

    Ports: ``start`` In(1), a pulse (registered here: the run starts the cycle after); ``running``
    Out(1): an inference is fed, run or collected, or a slot waits; ``result_valid`` Out(1);
    ``rd`` Out(read port) of the image buffer; ``wr_busy`` In(1): the buffer is written this
    cycle (a slot's read waits); ``pixels`` Out(byte stream) and ``result`` In(32-bit word stream):
    the Accelerator's; ``res`` Out(:func:`byte_write`) into the result bytes. With INFER slots:
    ``infer`` In(:func:`infer_signature`), ``reply`` Out(:func:`run_reply_signature`),
    ``responder_busy`` In(1).
    """

    def __init__(self, *, n_inputs: int, n_words: int, layout: P.BufferLayout, infer_pixels: bool = False):
        self.n_inputs, self.n_words, self.layout, self.infer_pixels = n_inputs, n_words, layout, infer_pixels
        depth = layout.depth
        members = {
            "start": In(1),
            "running": Out(1),
            "result_valid": Out(1),
            "rd": Out(read_port(depth, 8)),
            "wr_busy": In(1),
            "pixels": Out(stream.Signature(unsigned(8))),
            "result": In(stream.Signature(unsigned(32))),
            "res": Out(byte_write(4 * n_words)),
        }
        if layout.slots:
            members.update({"infer": In(infer_signature(depth)), "reply": Out(run_reply_signature()),
                            "responder_busy": In(1)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n_in, K, lay = self.n_inputs, self.n_words, self.layout
        rd, result_valid = self.rd, self.result_valid
        # registered, so the runner's enables do not sit behind the parser's CHECK decision (the
        # critical path of the SPRAM build); the run starts one cycle after the RUN frame's CRC byte
        start_run_q = Signal()
        m.d.sync += start_run_q.eq(self.start)
        feed_idx = Signal(range(n_in + 1))
        word_idx = Signal(range(K + 1))
        byte_idx = Signal(2)
        hs = Signal()
        m.d.comb += hs.eq(self.pixels.valid & self.pixels.ready)

        slots = lay.slots
        full = Signal(max(1, slots))  # slot s holds an image not yet fed
        from_slot = Signal()  # the inference in progress came from a slot
        if slots:
            nb = lay.slot_bytes  # the tag, then the packed spikes
            wslot = Signal(range(slots))  # the slot the next INFER frame fills
            rslot = Signal(range(slots))  # the slot fed next
            bases = Array(Const(lay.slot_base + k * nb, len(self.infer.base)) for k in range(slots))
            start_infer_q = Signal()
            m.d.sync += start_infer_q.eq(self.infer.start)
            m.d.comb += self.infer.base.eq(bases[wslot])
            with m.If(start_infer_q):
                m.d.sync += [full.bit_select(wslot, 1).eq(1), wslot.eq(wslot + 1)]
            # feeding a slot: its bytes are read in order into a 4-byte FIFO, one read per cycle
            # without a buffer write; the tag, then per 8 inputs a mask byte (and for pixels the
            # nonzero values) are taken from its head. Reads run ahead of the frame's last byte (to
            # the slot's end), so the FIFO is cleared as each slot starts.
            jb = Signal(range(nb + 1))
            inflight = Signal()
            clear = Signal()
            m.submodules.slot_fifo = fifo = ResetInserter(clear)(SyncFIFO(width=8, depth=4))
            count = fifo.level
            head = fifo.r_data
            pop = Signal()
            sh = Signal(8)  # the current mask
            cnt = Signal(range(9))  # its bits not yet used
            tag_v = Signal()
            issue = Signal()
            m.d.comb += fifo.r_en.eq(pop)
        with m.FSM(name="runner") as fsm:
            with m.State("IDLE"):
                m.d.comb += rd.addr.eq(0)
                with m.If(start_run_q):
                    m.d.sync += [feed_idx.eq(0), word_idx.eq(0), byte_idx.eq(0), result_valid.eq(0),
                                 from_slot.eq(0)]
                    m.next = "FEED"
                if slots:
                    with m.Elif(full.bit_select(rslot, 1)):
                        m.d.sync += [feed_idx.eq(0), word_idx.eq(0), byte_idx.eq(0), result_valid.eq(0),
                                     from_slot.eq(1), jb.eq(0), inflight.eq(0), cnt.eq(0), tag_v.eq(0)]
                        m.d.comb += clear.eq(1)
                        m.next = "FEED_SLOT"
            with m.State("FEED"):
                m.d.comb += [self.pixels.valid.eq(1), self.pixels.payload.eq(rd.data),
                             rd.addr.eq(Mux(hs, feed_idx + 1, feed_idx))]
                with m.If(hs):
                    m.d.sync += feed_idx.eq(feed_idx + 1)
                    with m.If(feed_idx == n_in - 1):
                        m.next = "COLLECT"
            if slots:
                with m.State("FEED_SLOT"):
                    have = fifo.r_rdy
                    # at most 3 held or on their way: the byte read this cycle always has room
                    m.d.comb += [issue.eq((count + inflight < 3) & (jb != nb) & ~self.wr_busy),
                                 rd.addr.eq(bases[rslot] + jb)]
                    m.d.sync += inflight.eq(issue)
                    with m.If(issue):
                        m.d.sync += jb.eq(jb + 1)
                    m.d.comb += [fifo.w_en.eq(inflight), fifo.w_data.eq(rd.data)]
                    last = hs & (feed_idx == n_in - 1)
                    with m.If(hs):
                        m.d.sync += [sh.eq(sh >> 1), cnt.eq(cnt - 1), feed_idx.eq(feed_idx + 1)]
                    if not self.infer_pixels:  # a spike per mask bit, as pixel 255 or 0
                        m.d.comb += [self.pixels.valid.eq(cnt != 0), self.pixels.payload.eq(sh[0].replicate(8))]
                    with m.If(~tag_v):  # the slot's first byte is the request's tag
                        m.d.comb += pop.eq(have)
                        with m.If(have):
                            m.d.sync += [self.reply.tag.eq(head), tag_v.eq(1)]
                    if self.infer_pixels:
                        with m.Elif(cnt == 0):  # the next group's mask
                            m.d.comb += pop.eq(have)
                            with m.If(have):
                                m.d.sync += [sh.eq(head), cnt.eq(8)]
                        with m.Else():  # a pixel: its value from the FIFO when its mask bit is set
                            m.d.comb += [self.pixels.valid.eq(~sh[0] | have),
                                         self.pixels.payload.eq(Mux(sh[0], head, 0)),
                                         pop.eq(hs & sh[0])]
                    else:
                        # the next mask (8 spikes) moves in as the last bit of this one is taken
                        with m.Elif(have & ((cnt == 0) | ((cnt == 1) & hs))):
                            m.d.comb += pop.eq(1)
                            m.d.sync += [sh.eq(head), cnt.eq(8)]
                    with m.If(last):  # fed: the slot is free again
                        m.d.sync += [full.bit_select(rslot, 1).eq(0), rslot.eq(rslot + 1)]
                        m.next = "COLLECT"
            with m.State("COLLECT"):
                # one byte per cycle into the result memory: a word is accepted with its last byte.
                # An INFER's result waits while the responder sends (it may be reading the last one).
                go = Signal()
                m.d.comb += go.eq(~from_slot | ~self.responder_busy) if slots else go.eq(1)
                m.d.comb += self.result.ready.eq(go & (byte_idx == 3))
                with m.If(self.result.valid & go):
                    m.d.comb += [self.res.en.eq(1), self.res.addr.eq(Cat(byte_idx, word_idx)),
                                 self.res.data.eq(self.result.payload.word_select(byte_idx, 8))]
                    m.d.sync += byte_idx.eq(byte_idx + 1)
                with m.If(self.result.valid & self.result.ready):
                    m.d.sync += word_idx.eq(word_idx + 1)
                    with m.If(word_idx == K - 1):
                        m.d.sync += result_valid.eq(1)
                        if slots:
                            with m.If(from_slot):
                                m.next = "REPLY"
                            with m.Else():
                                m.next = "IDLE"
                        else:
                            m.next = "IDLE"
            if slots:
                with m.State("REPLY"):
                    # a RUN's reply was sent at its start; an INFER's carries the result
                    m.d.comb += self.reply.req.eq(1)
                    with m.If(self.reply.ack):
                        m.next = "IDLE"
        busy = ~fsm.ongoing("IDLE")
        if slots:
            # the next slot is free, and no RUN's inference reads the pixels
            m.d.comb += [self.running.eq(busy | full.any()),
                         self.infer.ok.eq(~full.bit_select(wslot, 1) & ~(busy & ~from_slot))]
        else:
            m.d.comb += self.running.eq(busy)
        return m


class Responder(wiring.Component):
    """Reply requests in, response frames out to :class:`UARTTx`.

    Ports: ``req`` In(:func:`reply_signature`), registered here (the parser's decision and the
    response's start are in different cycles); ``tx`` Out(byte stream); ``res`` Out(read port) of
    the result bytes; ``busy`` Out(1): a response is pending or being sent. A parser request while a
    response is being sent waits for it; a second one in that time is dropped. With ``infer``: ``run`` In(:func:`run_reply_signature`), an
    INFER's result reply, taken (``ack``) when the responder is idle and no parser reply is due.
    """

    def __init__(self, info: bytes, *, n_words: int, infer: bool = False):
        self.info, self.n_words, self.infer = bytes(info), n_words, infer
        members = {
            "req": In(reply_signature()),
            "tx": Out(stream.Signature(unsigned(8))),
            "res": Out(read_port(4 * n_words, 8)),
            "busy": Out(1),
        }
        if infer:
            members["run"] = In(run_reply_signature())
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        K = self.n_words
        res_rp = self.res
        rsp_req, rsp_cmd, rsp_status, rsp_kind = self.req.req, self.req.cmd, self.req.status, self.req.kind
        info = Array(Const(b, 8) for b in self.info)
        r_cmd = Signal(8)
        r_status = Signal(8)
        r_kind = Signal(ReplyKind)
        r_tag = Signal(8)
        r_len = Signal(16)
        r_crc = Signal(8)
        pos = Signal(16)  # byte index within the response frame
        cur = Signal(8)
        pidx = Signal(16)
        m.d.comb += pidx.eq(pos - 5)
        with m.Switch(pos):
            with m.Case(0):
                m.d.comb += cur.eq(P.RSP_SYNC)
            with m.Case(1):
                m.d.comb += cur.eq(r_cmd)
            with m.Case(2):
                m.d.comb += cur.eq(r_status)
            with m.Case(3):
                m.d.comb += cur.eq(r_len[:8])
            with m.Case(4):
                m.d.comb += cur.eq(r_len[8:])
            with m.Default():
                with m.If(pidx >= r_len):
                    m.d.comb += cur.eq(r_crc)
                with m.Elif((r_kind == ReplyKind.INFER_RESULT) & (pidx == 4 * K) if self.infer else Const(0)):
                    m.d.comb += cur.eq(r_tag)  # INFER: the tag last
                with m.Elif(r_kind == ReplyKind.INFO):
                    m.d.comb += cur.eq(info[pidx[:max(1, (len(self.info) - 1).bit_length())]])
                with m.Else():
                    m.d.comb += cur.eq(res_rp.data)

        m.d.comb += self.tx.payload.eq(cur)
        # The parser's reply request, registered: the decision (CRC, command, length, state checks)
        # and the responder's start are in different cycles (the reply leaves one cycle later).
        req_q, cmd_q, status_q, kind_q = Signal(), Signal(8), Signal(8), Signal(ReplyKind)
        m.d.sync += [req_q.eq(rsp_req), cmd_q.eq(rsp_cmd), status_q.eq(rsp_status), kind_q.eq(rsp_kind)]
        # With INFER, one reply that comes due while another is being sent waits here (a further one
        # is dropped); without, a host waits for each reply, and a colliding one is dropped.
        p_v, p_cmd, p_status, p_kind = Signal(), Signal(8), Signal(8), Signal(ReplyKind)

        def start(c, st, kind):
            other = Mux(kind == ReplyKind.INFER_RESULT, 4 * K + 1, 0) if self.infer else 0  # the result and tag
            plen = Mux(kind == ReplyKind.INFO, len(self.info), Mux(kind == ReplyKind.RESULT, 4 * K, other))
            return [r_cmd.eq(c), r_status.eq(st), r_kind.eq(kind), r_len.eq(plen), r_crc.eq(0), pos.eq(0)]

        hold = [p_v.eq(1), p_cmd.eq(cmd_q), p_status.eq(status_q), p_kind.eq(kind_q)] if self.infer else []
        with m.FSM(name="responder") as fsm:
            with m.State("IDLE"):
                with m.If(p_v if self.infer else Const(0)):
                    if self.infer:
                        m.d.sync += [*start(p_cmd, p_status, p_kind), p_v.eq(0)]
                        with m.If(req_q):
                            m.d.sync += hold
                        m.next = "SEND"
                with m.Elif(req_q):
                    m.d.sync += start(cmd_q, status_q, kind_q)
                    m.next = "SEND"
                if self.infer:
                    with m.Elif(self.run.req):
                        m.d.comb += self.run.ack.eq(1)
                        m.d.sync += [*start(P.Cmd.INFER, P.Status.OK, ReplyKind.INFER_RESULT), r_tag.eq(self.run.tag)]
                        m.next = "SEND"
            with m.State("SEND"):
                if self.infer:
                    with m.If(req_q & ~p_v):
                        m.d.sync += hold
                m.d.comb += self.tx.valid.eq(1)
                # the result byte at pidx is read the cycle before it is sent (read latency 1)
                m.d.comb += res_rp.addr.eq(Mux(self.tx.ready, pidx + 1, pidx))
                with m.If(self.tx.ready):
                    m.d.sync += pos.eq(pos + 1)
                    with m.If(pos != 0):
                        m.d.sync += r_crc.eq(crc8_next(r_crc, cur))
                    with m.If(pos == r_len + 5):
                        m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | req_q | (p_v if self.infer else 0))
        return m
