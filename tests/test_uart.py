"""The UART cores and the UART top level in the Amaranth simulator, around the real
:class:`bitsnn.hw.Accelerator` (small random models, and the trained tiny model on a real MNIST
image): results against the golden model and the exact cycle model; hypothesis for random bytes,
corrupted frames and wrong lengths; commands during a run; timeouts."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitsnn import protocol as P
from bitsnn.hw.top import UARTTop
from bitsnn.hw.uart import UARTRx, UARTTx, baud_divisor
from bitsnn.hwmodel import random_model
from bitsnn.sim import cycles as cycles_mod
from bitsnn.sim import golden
from uart_sim import receive_forever, run_top, ticks

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
DIV = 4


N_IN = 40


@pytest.fixture(scope="module")
def small_model():
    """40-12-5: a LOAD frame is 45 bytes, an inference well under 100 cycles."""
    return random_model(np.random.default_rng(1), [N_IN, 12, 5])


@pytest.fixture(scope="module")
def wide_model():
    """300-12-5: a LOAD (300 bytes) is the longest request, longer than a full WRITE_WEIGHTS."""
    return random_model(np.random.default_rng(3), [300, 12, 5])


@pytest.fixture(scope="module")
def long_model():
    """40-128-5 built with one lane: an inference takes thousands of cycles (BUSY tests)."""
    return random_model(np.random.default_rng(1), [N_IN, 128, 5])


def make_top(hm, timeout=300, **accel):
    return UARTTop(hm, clk_freq=DIV * 1_000_000, baud=1_000_000, timeout_cycles=timeout, **accel)


def expected_result(hm, img, *, mode="event", lanes=32, word=32) -> P.Result:
    """What READ must return for ``img``: the golden model plus the exact cycle model."""
    g = golden.run(hm, np.frombuffer(bytes(img), np.uint8).reshape((1, *hm.input_shape)))
    cyc = cycles_mod.predict_cycles(hm, g, mode=mode, lanes=lanes, word=word)
    return P.Result(int(g.classes[0]), int(cyc[0]), tuple(int(c) for c in g.spike_counts[0]),
                    tuple(int(x) for x in g.scores[0]))


def reply_gap(top, cmd=None) -> int:
    """Idle cycles after a request by which its response has been sent (the longest possible
    one when ``cmd`` is None)."""
    plen = {P.Cmd.READ: 4 * top.n_words, P.Cmd.INFO: len(top.info)}.get(cmd, 0 if cmd else 4 * top.n_words)
    commit = P.MAX_WEIGHT_CHUNK + 2 if cmd in (None, P.Cmd.WRITE_WEIGHTS) else 0
    return 10 * top.divisor * (P.RSP_OVERHEAD + plen) + 30 + commit


def script(top, reqs):
    """Requests, each followed by just enough idle time for its response."""
    return [(P.encode_request(c, p), reply_gap(top, c)) for c, p in reqs]


def responses(raw: bytes) -> list[P.Response]:
    p = P.ResponseParser()
    out = p.feed(raw)
    assert p.skipped == 0 and p.crc_errors == 0 and not p.buf, f"garbled response bytes {raw.hex()}"
    return out


# ---- protocol module ---------------------------------------------------------------------------

def test_crc8_known_value():
    assert P.crc8(b"123456789") == 0xF4  # CRC-8/SMBUS check value


@given(st.binary(max_size=40), st.integers(0, 255))
def test_request_roundtrip_and_single_byte_errors_detected(payload, cmd):
    f = P.encode_request(cmd, payload)
    assert f[0] == P.REQ_SYNC and f[2] | f[3] << 8 == len(payload)
    assert P.crc8(f[1:-1]) == f[-1]
    for i in range(1, len(f)):
        bad = bytearray(f)
        bad[i] ^= 0x5A
        assert P.crc8(bytes(bad[1:-1])) != bad[-1]


@given(st.binary(max_size=30), st.lists(st.binary(max_size=20), max_size=3))
def test_response_parser_resyncs(garbage, payloads):
    frames = [P.encode_response(P.Cmd.READ, P.Status.OK, p) for p in payloads]
    garbage = garbage.replace(bytes([P.RSP_SYNC]), b"")
    got = P.ResponseParser().feed(garbage + b"".join(frames))
    assert [r.payload for r in got] == payloads


def test_result_bytes_roundtrip():
    r = P.Result(3, 1234, (5, 6), (-7, 0, 2**31 - 1))
    assert P.Result.from_bytes(r.to_bytes(), 2, 3) == r


def test_baud_divisor():
    assert baud_divisor(12e6, 115200) == 104
    with pytest.raises(ValueError, match="too slow"):
        baud_divisor(300_000, 115200)
    with pytest.raises(ValueError, match="off with divisor"):
        baud_divisor(5 * 115200 * 1.1, 115200)


# ---- UART cores --------------------------------------------------------------------------------

@settings(max_examples=10, **SETTINGS)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=6), st.sampled_from([4, 5, 8]))
def test_uart_tx_to_rx(data, div):
    """TX output wired into RX: every byte arrives, in order, and the receiver's output is
    decoded correctly by an independent bit-level model of the line."""
    from amaranth.hdl import Module, Signal

    m = Module()
    m.submodules.tx = tx = UARTTx(div * 1000, 1000)
    m.submodules.rx = rx = UARTRx(div * 1000, 1000)
    m.d.comb += rx.rx.eq(tx.tx)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    got, line = [], []

    async def producer(ctx):
        for b in data:
            ctx.set(tx.data.payload, b)
            ctx.set(tx.data.valid, 1)
            await ctx.tick().until(tx.data.ready)
        ctx.set(tx.data.valid, 0)
        await ticks(ctx, 12 * div * 2)
        ctx.set(done, 1)

    async def consumer(ctx):
        while not ctx.get(done):
            await ctx.tick()
            if ctx.get(rx.data.valid):
                got.append(ctx.get(rx.data.payload))
            assert not ctx.get(rx.frame_error)

    async def line_model(ctx):
        await receive_forever(ctx, tx.tx, div, line, done=done)

    done = Signal()
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(line_model)
    sim.run()
    assert got == data and line == data


def test_uart_rx_frame_error_and_glitch():
    sim = Simulator(rx := UARTRx(4000, 1000))
    sim.add_clock(1e-6)
    events = []

    async def tb(ctx):
        ctx.set(rx.rx, 0)  # one-cycle glitch: not a start bit
        await ctx.tick()
        ctx.set(rx.rx, 1)
        await ticks(ctx, 20)
        for bit in [0] + [1, 0] * 4 + [0]:  # stop bit 0: frame error
            ctx.set(rx.rx, bit)
            await ticks(ctx, 4)
        ctx.set(rx.rx, 1)
        for _ in range(20):
            await ctx.tick()
            if ctx.get(rx.frame_error):
                events.append("ferr")
            if ctx.get(rx.data.valid):
                events.append("data")

    sim.add_testbench(tb)
    sim.run()
    assert events == ["ferr"]


# ---- the top level: protocol behaviour ---------------------------------------------------------

def test_top_info_load_run_read(small_model):
    top = make_top(small_model)
    img = np.random.default_rng(5).integers(0, 256, N_IN, dtype=np.uint8).tobytes()
    raw = run_top(top, script(top, [
        (P.Cmd.READ, b""), (P.Cmd.RUN, b""), (P.Cmd.INFO, b""), (P.Cmd.LOAD, img), (P.Cmd.RUN, b""),
        (P.Cmd.READ, b""), (P.Cmd.WRITE_WEIGHTS, P.encode_weight_write(0, 1, 0, b"\x0f")),
        (0x42, b""), (P.Cmd.INFO, b"x"), (P.Cmd.LOAD, img[:-1]), (P.Cmd.RUN, b""),
    ]), tail_cycles=100)
    rs = responses(raw)
    assert [(r.cmd, P.Status(r.status)) for r in rs] == [
        (P.Cmd.READ, P.Status.NO_RESULT), (P.Cmd.RUN, P.Status.NO_IMAGE), (P.Cmd.INFO, P.Status.OK),
        (P.Cmd.LOAD, P.Status.OK), (P.Cmd.RUN, P.Status.OK), (P.Cmd.READ, P.Status.OK),
        (P.Cmd.WRITE_WEIGHTS, P.Status.UNSUPPORTED), (0x42, P.Status.UNKNOWN_CMD),
        (P.Cmd.INFO, P.Status.BAD_LENGTH), (P.Cmd.LOAD, P.Status.BAD_LENGTH),
        (P.Cmd.RUN, P.Status.NO_IMAGE),  # a failed LOAD invalidates the image buffer
    ]
    info = P.Info.from_bytes(rs[2].payload)
    assert (info.n_inputs, info.n_hidden, info.n_classes, info.n_result_words) == (N_IN, 1, 5, 8)
    assert info.model_id == P.model_id(small_model.content_hash) and not info.weight_write
    assert P.Result.from_bytes(rs[5].payload, 1, 5) == expected_result(small_model, img)


def test_top_commands_during_a_run_get_busy(long_model):
    """INFO is served during an inference; READ, RUN and LOAD get BUSY (and the LOAD does not
    touch the image being run); the READ after the run returns the golden result."""
    top = make_top(long_model, timeout=300, lanes=1)
    img = np.random.default_rng(2).integers(0, 256, N_IN, dtype=np.uint8).tobytes()
    want = expected_result(long_model, img, lanes=1)
    assert want.cycles > 2500  # long enough for the requests below to land inside the run
    short = reply_gap(top, P.Cmd.RUN)  # time for a reply without payload (BUSY)
    raw = run_top(top, script(top, [(P.Cmd.LOAD, img), (P.Cmd.RUN, b""), (P.Cmd.INFO, b"")]) + [
        (P.encode_request(P.Cmd.READ), short), (P.encode_request(P.Cmd.RUN), short),
        (P.encode_request(P.Cmd.LOAD, bytes(N_IN)), short), (b"", 1000),
    ] + script(top, [(P.Cmd.READ, b"")]), tail_cycles=100)
    rs = responses(raw)
    assert [P.Status(r.status) for r in rs] == [P.Status.OK, P.Status.OK, P.Status.OK, P.Status.BUSY,
                                                 P.Status.BUSY, P.Status.BUSY, P.Status.OK]
    assert P.Result.from_bytes(rs[-1].payload, 1, 5) == want


def test_top_timeout_resets_parser(small_model):
    top = make_top(small_model, timeout=300)
    frame = P.encode_request(P.Cmd.LOAD, bytes(N_IN))
    raw = run_top(top, [(frame[:4], 400)] + script(top, [(P.Cmd.INFO, b"")]), tail_cycles=100)
    rs = responses(raw)
    assert [(r.cmd, P.Status(r.status)) for r in rs] == [(P.Cmd.LOAD, P.Status.TIMEOUT), (P.Cmd.INFO, P.Status.OK)]


def header(cmd: int, n: int) -> bytes:
    """The first four bytes of a request frame announcing ``n`` payload bytes."""
    return bytes([P.REQ_SYNC, cmd, n & 0xFF, n >> 8])


def reply_starts(raw: bytes, times: list) -> list[int]:
    """The cycle at which each response frame in ``raw`` began on tx (``run_top``'s ``times``)."""
    out, i = [], 0
    for r in responses(raw):
        out.append(times[i])
        i += P.RSP_OVERHEAD + len(r.payload)
    return out


def test_max_request_payload():
    assert P.max_request_payload(N_IN) == P.WEIGHT_HEADER + P.MAX_WEIGHT_CHUNK == 0x105
    assert P.max_request_payload(300) == 300
    assert P.max_request_payload(0xFFFF) == 0xFFFF


@pytest.mark.parametrize("model", ["small_model", "wide_model"])
def test_top_oversized_length_answered_at_once(request, model):
    """A length field beyond ``max_request_payload`` gets one BAD_LENGTH (echoing the command) as
    soon as its high byte is read, long before the inter-byte timeout; the rest of the frame is
    dropped, a whole INFO frame inside it included, until the line has been quiet for the timeout.
    Then requests are served again, and the image loaded before was not touched: RUN and READ give
    its result. Lengths over the bound by the high byte (0xFFFF; 0x0200 with a low byte under the
    bound's) and by the low byte alone (bound + 1), for a bound set by WRITE_WEIGHTS (small model)
    and by LOAD (wide model, whose LOAD of exactly the bound is served)."""
    hm = request.getfixturevalue(model)
    top = make_top(hm, timeout=300)
    bound = top.max_payload
    assert bound == P.max_request_payload(hm.n_inputs)
    assert bound == (hm.n_inputs if model == "wide_model" else P.WEIGHT_HEADER + P.MAX_WEIGHT_CHUNK)
    assert (bound + 1) >> 8 == bound >> 8 and 0x0200 >> 8 > bound >> 8 and 0x00 < bound & 0xFF
    img = np.random.default_rng(7).integers(0, 256, hm.n_inputs, dtype=np.uint8).tobytes()
    quiet = top.timeout_cycles + reply_gap(top, P.Cmd.RUN)
    junk = bytes(range(6)) + P.encode_request(P.Cmd.INFO)  # BAD_SYNC bytes and an INFO frame if parsed
    chunks = (script(top, [(P.Cmd.LOAD, img)])
              + [(header(P.Cmd.INFO, 0xFFFF), quiet)]
              + [(header(P.Cmd.LOAD, bound + 1), 1), (junk, quiet)]
              + [(header(0x42, 0x0200), 1), (bytes(20), quiet)]
              + script(top, [(P.Cmd.WRITE_WEIGHTS, P.encode_weight_write(0, 0, 0, bytes(P.MAX_WEIGHT_CHUNK))),
                             (P.Cmd.INFO, b""), (P.Cmd.RUN, b"")])
              + [(b"", hm.n_inputs + 200)]  # the run: one cycle per pixel, then the (short) inference
              + script(top, [(P.Cmd.READ, b"")]))
    times, sent = [], []
    raw = run_top(top, chunks, tail_cycles=100, times=times, sent=sent)
    rs = responses(raw)
    assert [(r.cmd, P.Status(r.status)) for r in rs] == [
        (P.Cmd.LOAD, P.Status.OK), (P.Cmd.INFO, P.Status.BAD_LENGTH), (P.Cmd.LOAD, P.Status.BAD_LENGTH),
        (0x42, P.Status.BAD_LENGTH), (P.Cmd.WRITE_WEIGHTS, P.Status.UNSUPPORTED), (P.Cmd.INFO, P.Status.OK),
        (P.Cmd.RUN, P.Status.OK), (P.Cmd.READ, P.Status.OK)]
    assert rs[5].payload == top.info
    assert P.Result.from_bytes(rs[7].payload, 1, 5) == expected_result(hm, img)
    # each BAD_LENGTH reply starts within a byte time of the header's last stop bit (the receiver
    # delivers a byte mid-way through its stop bit), not a timeout later
    byte_time = 10 * top.divisor
    starts = reply_starts(raw, times)
    for reply_i, header_chunk in ((1, 1), (2, 2), (3, 4)):
        assert sent[header_chunk] - byte_time < starts[reply_i] < sent[header_chunk] + byte_time
        assert starts[reply_i] - sent[header_chunk] < top.timeout_cycles // 4


def test_top_length_at_the_bound_read_to_the_end(small_model):
    """Lengths up to ``max_request_payload`` behave as before: the frame is read to its end and
    judged at its CRC byte. LOAD with exactly the bound (wrong for this model) gets BAD_LENGTH after
    its last byte and, like every failed LOAD, invalidates the image; a full WRITE_WEIGHTS (exactly
    the bound) gets UNSUPPORTED on this design without weight writes; RUN with 9 bytes (low byte over
    the bound's low byte, high byte under) gets BAD_LENGTH at its end."""
    top = make_top(small_model, timeout=300)
    bound = top.max_payload
    assert 9 > bound & 0xFF and bound >> 8 > 0
    img = bytes(range(N_IN))
    ww = P.encode_weight_write(0, 0, 0, bytes(P.MAX_WEIGHT_CHUNK))
    assert len(ww) == bound
    times, sent = [], []
    raw = run_top(top, script(top, [(P.Cmd.LOAD, img), (P.Cmd.LOAD, bytes(bound)), (P.Cmd.WRITE_WEIGHTS, ww),
                                    (P.Cmd.RUN, bytes(9)), (P.Cmd.RUN, b"")]),
                  tail_cycles=100, times=times, sent=sent)
    rs = responses(raw)
    assert [(r.cmd, P.Status(r.status)) for r in rs] == [
        (P.Cmd.LOAD, P.Status.OK), (P.Cmd.LOAD, P.Status.BAD_LENGTH), (P.Cmd.WRITE_WEIGHTS, P.Status.UNSUPPORTED),
        (P.Cmd.RUN, P.Status.BAD_LENGTH), (P.Cmd.RUN, P.Status.NO_IMAGE)]
    byte_time = 10 * top.divisor
    for i, start in enumerate(reply_starts(raw, times)):
        assert sent[i] - byte_time < start < sent[i] + byte_time  # after the whole frame


@pytest.mark.slow
@settings(max_examples=10, **SETTINGS)
@given(garbage=st.binary(min_size=1, max_size=12))
def test_top_random_bytes_then_valid_frame(small_model, garbage):
    """Any bytes, then silence past the timeout, then a valid request: the design answers it
    correctly; every response on the way is a well-formed error frame."""
    top = make_top(small_model, timeout=300)
    raw = run_top(top, [(garbage, 400 + reply_gap(top, P.Cmd.RUN))] + script(top, [(P.Cmd.INFO, b"")]),
                  tail_cycles=100)
    rs = responses(raw)
    assert rs and rs[-1].cmd == P.Cmd.INFO and rs[-1].ok and rs[-1].payload == top.info
    assert all(not r.ok for r in rs[:-1])
    if garbage[0] != P.REQ_SYNC:
        assert rs[0].status == P.Status.BAD_SYNC


@pytest.mark.slow
@settings(max_examples=10, **SETTINGS)
@given(data=st.data())
def test_top_corrupted_frame_gets_error(small_model, data):
    """A valid LOAD frame with one byte changed is never executed: the reply is an error
    (BAD_SYNC, BAD_CHECKSUM or TIMEOUT), and a following good frame still works."""
    top = make_top(small_model, timeout=300)
    img = bytes(data.draw(st.lists(st.integers(0, 255), min_size=N_IN, max_size=N_IN)))
    frame = bytearray(P.encode_request(P.Cmd.LOAD, img))
    i = data.draw(st.integers(0, len(frame) - 1))
    frame[i] ^= data.draw(st.integers(1, 255))
    raw = run_top(top, [(bytes(frame), 400 + reply_gap(top, P.Cmd.RUN))]
                  + script(top, [(P.Cmd.RUN, b""), (P.Cmd.INFO, b"")]), tail_cycles=100)
    rs = responses(raw)
    assert rs[-1].cmd == P.Cmd.INFO and rs[-1].ok
    assert all(not r.ok for r in rs[:-1])
    assert any(r.status == P.Status.NO_IMAGE for r in rs)  # RUN refused: the LOAD did not count


@pytest.mark.slow
@settings(max_examples=8, **SETTINGS)
@given(cmd=st.sampled_from(list(P.Cmd)), n=st.sampled_from([0, 1, 5, 6, 9, N_IN - 1, N_IN, N_IN + 1]))
def test_top_wrong_lengths(small_model, cmd, n):
    top = make_top(small_model, timeout=300)
    want = {P.Cmd.LOAD: N_IN}.get(cmd, 0)
    ok_len = (n == want) if cmd != P.Cmd.WRITE_WEIGHTS else n > P.WEIGHT_HEADER
    raw = run_top(top, [(P.encode_request(cmd, bytes(n)), reply_gap(top))], tail_cycles=400)
    (r,) = responses(raw)
    if ok_len:
        assert r.status != P.Status.BAD_LENGTH
    else:
        assert r.status == P.Status.BAD_LENGTH


@pytest.mark.slow
def test_top_tiny_model_mnist_image(tiny_hwmodel, mnist):
    """A real MNIST test image through the real tiny design behind the UART: LOAD (the model's
    24x24 window of the image, cut out by the host), RUN, READ (divisor 4); class, scores, spike
    count and cycles equal the golden and cycle models."""
    top = make_top(tiny_hwmodel, timeout=300)
    img = tiny_hwmodel.prepare_images(mnist.test_images[:1]).tobytes()
    want = expected_result(tiny_hwmodel, img)
    # the run takes one cycle per pixel to feed the image, then ``cycles``, then the result words
    run_cycles = tiny_hwmodel.n_inputs + want.cycles + top.n_words + 20
    raw = run_top(top, script(top, [(P.Cmd.LOAD, img), (P.Cmd.RUN, b"")]) + [(b"", run_cycles)]
                  + script(top, [(P.Cmd.READ, b"")]), tail_cycles=50)
    rs = responses(raw)
    assert [(r.cmd, P.Status(r.status)) for r in rs] == [
        (P.Cmd.LOAD, P.Status.OK), (P.Cmd.RUN, P.Status.OK), (P.Cmd.READ, P.Status.OK)]
    got = P.Result.from_bytes(rs[2].payload, 1, 10)
    assert got == want
    assert got.klass == int(mnist.test_labels[0])


def test_top_weight_write_applies_only_good_frames(small_model):
    """On a design with writable block-RAM weights: a WRITE_WEIGHTS frame with a bad CRC changes
    nothing (its bytes were only staged); the same frame intact replaces those weights, and the
    next inference (RUN, and INFER) equals the golden model with the new weights. INFO reports the
    write flag."""
    import dataclasses

    top = make_top(small_model, writable=True)
    img = np.random.default_rng(5).integers(0, 256, N_IN, dtype=np.uint8).tobytes()
    l0 = small_model.layers[0]
    cols = P.weight_columns(l0.weight_bits, l0.n_in)
    new_cols = cols.copy()
    new_cols[:, :] ^= 0xFF  # every weight of layer 0 negated, written as 40 frames
    frames = [P.encode_weight_write(0, i, 0, new_cols[i].tobytes()) for i in range(l0.n_in)]
    bad = bytearray(P.encode_request(P.Cmd.WRITE_WEIGHTS, frames[3]))
    bad[-1] ^= 0x01
    gap = reply_gap(top, P.Cmd.WRITE_WEIGHTS)
    raw = run_top(top, script(top, [(P.Cmd.INFO, b"")]) + [(bytes(bad), gap)]
                  + script(top, [(P.Cmd.LOAD, img), (P.Cmd.RUN, b""), (P.Cmd.READ, b"")])
                  + script(top, [(P.Cmd.WRITE_WEIGHTS, f) for f in frames])
                  + script(top, [(P.Cmd.WRITE_WEIGHTS, P.encode_weight_write(0, 0, 2, b"\x01")),  # past the column
                                 (P.Cmd.WRITE_WEIGHTS, P.encode_weight_write(2, 0, 0, b"\x01")),  # no layer 2
                                 (P.Cmd.RUN, b""), (P.Cmd.READ, b"")])
                  + [(infer_frame(small_model, img), reply_gap(top, P.Cmd.READ) + 300)], tail_cycles=100)
    rs = responses(raw)
    st_ = [P.Status(r.status) for r in rs]
    assert P.Info.from_bytes(rs[0].payload).weight_write and not P.Info.from_bytes(rs[0].payload).weights_volatile
    assert st_[1] == P.Status.BAD_CHECKSUM
    assert st_[2:5] == [P.Status.OK] * 3
    assert P.Result.from_bytes(rs[4].payload, 1, 5) == expected_result(small_model, img)
    assert st_[5:45] == [P.Status.OK] * 40
    assert st_[45:] == [P.Status.BAD_ADDRESS, P.Status.BAD_ADDRESS, P.Status.OK, P.Status.OK, P.Status.OK]
    w = np.unpackbits(new_cols, axis=1, count=l0.n_out, bitorder="little").T
    negated = dataclasses.replace(small_model, layers=[dataclasses.replace(l0, weight_bits=np.packbits(
        w, axis=1, bitorder="little")), small_model.layers[1]])
    want = expected_result(negated, img)
    assert want != expected_result(small_model, img)
    assert P.Result.from_bytes(rs[-2].payload, 1, 5) == want
    assert infer_results(rs[-1:]) == [want]  # INFER's slots sit between the image and the staged bytes


# ---- INFER: packed input spikes, the result in the reply, several images in flight ---------------

def infer_frame(hm, img, tag=0x5C) -> bytes:
    return P.encode_request(P.Cmd.INFER, P.infer_payload(tag, hm.encode_input(np.frombuffer(bytes(img), np.uint8)[None])[0]))


def infer_results(rs, tags=None) -> list:
    """The results of INFER replies, checking each carries its request's tag."""
    out = []
    for k, r in enumerate(rs):
        res, tag = P.infer_reply(r.payload, 1, 5)
        assert tag == (0x5C if tags is None else tags[k])
        out.append(res)
    return out


def test_pack_spikes_roundtrip():
    s = (np.random.default_rng(0).random(45) < 0.4).astype(np.uint8)
    data = P.pack_spikes(s)
    assert len(data) == P.packed_input_bytes(45) == 6
    assert P.infer_payload(0x1FF, s) == b"\xff" + data
    assert np.array_equal(P.unpack_spikes(data, 45), s)
    assert data[0] == int("".join(map(str, s[:8][::-1])), 2)  # bit t of byte 0 is spike t
    with pytest.raises(ValueError):
        P.pack_spikes([0, 2])


def test_info_reports_rate_and_infer(small_model):
    top = make_top(small_model)
    info = P.Info.from_bytes(responses(run_top(top, script(top, [(P.Cmd.INFO, b"")]), tail_cycles=50))[0].payload)
    assert (info.version, info.baud, info.infer) == (P.PROTOCOL_VERSION, 1_000_000, True)
    with pytest.raises(P.ProtocolError, match="version 1"):
        P.Info.from_bytes(bytes([1]) + bytes(11))  # a version-1 device's 12-byte INFO


def test_top_infer_streamed_equals_golden(small_model):
    """A host that keeps INFER_SLOTS requests in flight (the next frame's start bit right after
    the last stop bit): every reply is OK, in order, and equals the golden and cycle models."""
    from bitsnn.sim.link_sim import stream_requests

    imgs = np.random.default_rng(7).integers(0, 256, (10, N_IN), dtype=np.uint8)
    tags = list(range(250, 256)) + list(range(4))  # any byte
    r = stream_requests(make_top(small_model), [infer_frame(small_model, im, t) for im, t in zip(imgs, tags)],
                        window=P.INFER_SLOTS)
    assert [(x.cmd, P.Status(x.status)) for x in r.responses] == [(P.Cmd.INFER, P.Status.OK)] * len(imgs)
    assert infer_results(r.responses, tags) == [expected_result(small_model, img) for img in imgs]


def test_top_infer_beyond_the_slots_gets_busy(long_model):
    """Six INFER frames back to back while inferences take thousands of cycles: the sixth finds
    its slot still waiting (BUSY, and the waiting image is untouched), and so does a LOAD; the five
    taken are answered in order with their own results. Then LOAD/RUN/READ work as before."""
    top = make_top(long_model, timeout=300, lanes=1)
    imgs = np.random.default_rng(3).integers(0, 256, (6, N_IN), dtype=np.uint8)
    want = [expected_result(long_model, im, lanes=1) for im in imgs]
    frames = b"".join(infer_frame(long_model, im) for im in imgs)
    wait = sum(w.cycles for w in want) + 6 * (N_IN + 100 + 10 * top.divisor * (P.RSP_OVERHEAD + 4 * top.n_words))
    raw = run_top(top, [(frames + P.encode_request(P.Cmd.LOAD, imgs[0].tobytes()), wait)] + script(top, [(P.Cmd.LOAD, imgs[5].tobytes()), (P.Cmd.RUN, b"")])
                  + [(b"", want[5].cycles + N_IN + 50)] + script(top, [(P.Cmd.READ, b"")]), tail_cycles=100)
    rs = responses(raw)
    # the LOAD's BUSY waits behind the first result reply, if that is being sent
    infers = [r for r in rs if r.cmd == P.Cmd.INFER]
    assert [P.Status(r.status) for r in infers] == [P.Status.BUSY] + [P.Status.OK] * 5
    assert infer_results(infers[1:]) == want[:5]
    assert [(r.cmd, P.Status(r.status)) for r in rs if r.cmd != P.Cmd.INFER] == [
        (P.Cmd.LOAD, P.Status.BUSY), (P.Cmd.LOAD, P.Status.OK), (P.Cmd.RUN, P.Status.OK), (P.Cmd.READ, P.Status.OK)]
    assert P.Result.from_bytes(rs[-1].payload, 1, 5) == want[5]


def test_top_infer_hostile_input(small_model):
    """Garbage, a truncated INFER (timeout), a bad-CRC INFER, a wrong length, then good ones:
    each bad frame gets its one-line error and runs nothing; the good INFERs return their own
    results."""
    top = make_top(small_model, timeout=300)
    rng = np.random.default_rng(11)
    a, b = (rng.integers(0, 256, N_IN, dtype=np.uint8).tobytes() for _ in range(2))
    good_a, good_b = infer_frame(small_model, a), infer_frame(small_model, b)
    bad_crc = bytearray(good_b)
    bad_crc[-1] ^= 0x10
    result_gap = reply_gap(top, P.Cmd.READ)
    raw = run_top(top, [
        (b"\x00\x13\x37", reply_gap(top, 0)),
        (good_a[:7], 400),  # truncated: TIMEOUT
        (bytes(bad_crc), reply_gap(top, 0)),  # BAD_CHECKSUM: nothing runs
        (P.encode_request(P.Cmd.INFER, bytes(P.packed_input_bytes(N_IN))), reply_gap(top, 0)),  # no tag
        (good_a, 1), (good_b, 2 * result_gap),  # back to back
    ], tail_cycles=100)
    rs = responses(raw)
    assert [(r.cmd, P.Status(r.status)) for r in rs] == [
        (0, P.Status.BAD_SYNC), (P.Cmd.INFER, P.Status.TIMEOUT), (P.Cmd.INFER, P.Status.BAD_CHECKSUM),
        (P.Cmd.INFER, P.Status.BAD_LENGTH), (P.Cmd.INFER, P.Status.OK), (P.Cmd.INFER, P.Status.OK)]
    assert infer_results(rs[4:]) == [expected_result(small_model, x) for x in (a, b)]


def test_infer_payload_pixels_roundtrip():
    v = np.random.default_rng(1).integers(0, 256, 45).astype(np.uint8)
    v[np.random.default_rng(2).random(45) < 0.7] = 0
    data = P.infer_payload(7, v, pixels=True)
    assert len(data) == 1 + P.packed_input_bytes(45) + np.count_nonzero(v)
    tag, back = P.decode_infer_payload(data, 45, pixels=True)
    assert tag == 7 and np.array_equal(back, v)
    assert P.decode_infer_payload(P.infer_payload(9, v > 0), 45, pixels=False)[1].tolist() == (v > 0).tolist()
    with pytest.raises(P.ProtocolError, match="ends inside its pixels"):
        P.decode_infer_payload(data[:-1], 45, pixels=True)
    with pytest.raises(P.ProtocolError, match="after its last group"):
        P.decode_infer_payload(data + b"\x01", 45, pixels=True)


def test_top_infer_pixels_streamed_equals_golden():
    """A pixel-input design: INFER carries each group's mask and nonzero 8-bit pixels. Images from
    empty to dense, 4 in flight: every reply equals the golden and cycle models; lengths outside
    [tag + masks, tag + masks + every pixel] get BAD_LENGTH; a payload whose masks announce more
    pixels than it holds still gets a reply (no hang), and the next INFER is right."""
    from bitsnn.sim.link_sim import stream_requests

    hm = random_model(np.random.default_rng(4), [N_IN, 12, 5], input_encoding="pixels")
    rng = np.random.default_rng(9)
    imgs = rng.integers(0, 256, (8, N_IN), dtype=np.uint8)
    for k, frac in enumerate([1.0, 0.0, 0.9, 0.5, 0.7, 0.3, 0.95, 0.6]):
        imgs[k, rng.random(N_IN) < frac] = 0
    top = make_top(hm)
    info = P.Info.from_bytes(responses(run_top(top, script(top, [(P.Cmd.INFO, b"")]), tail_cycles=50))[0].payload)
    assert info.infer and info.infer_pixels
    frames = [P.encode_request(P.Cmd.INFER, P.infer_payload(k, im, pixels=True)) for k, im in enumerate(imgs)]
    r = stream_requests(make_top(hm), frames, window=P.INFER_SLOTS)
    assert [P.Status(x.status) for x in r.responses] == [P.Status.OK] * len(imgs)
    assert [P.infer_reply(x.payload, 1, 5) for x in r.responses] == [
        (expected_result(hm, im), k) for k, im in enumerate(imgs)]
    ng = P.packed_input_bytes(N_IN)
    short = bytes(1 + ng - 1)
    long_ = bytes(1 + ng + N_IN + 1)
    lying = bytes([3]) + b"\xff" * ng  # every mask set, no pixel sent
    raw = run_top(top, [(P.encode_request(P.Cmd.INFER, short), reply_gap(top, 0)),
                        (P.encode_request(P.Cmd.INFER, long_), reply_gap(top, 0)),
                        (P.encode_request(P.Cmd.INFER, lying), reply_gap(top, P.Cmd.READ) + 300),
                        (frames[3], reply_gap(top, P.Cmd.READ) + 300)], tail_cycles=100)
    rs = responses(raw)
    assert [P.Status(x.status) for x in rs] == [P.Status.BAD_LENGTH, P.Status.BAD_LENGTH, P.Status.OK, P.Status.OK]
    assert P.infer_reply(rs[2].payload, 1, 5)[1] == 3
    assert P.infer_reply(rs[3].payload, 1, 5) == (expected_result(hm, imgs[3]), 3)


def test_top_without_infer(small_model):
    """``infer=False`` (what ``bitsnn build --infer auto`` picks for a design near the device's
    limit) leaves the slots out: INFO has no INFER flag, INFER gets UNSUPPORTED, LOAD/RUN/READ work."""
    top = make_top(small_model, infer=False)
    img = np.random.default_rng(5).integers(0, 256, N_IN, dtype=np.uint8).tobytes()
    assert top.layout.depth == N_IN
    rs = responses(run_top(top, script(top, [(P.Cmd.INFO, b""), (P.Cmd.INFER, infer_frame(small_model, img)[4:-1]),
                                            (P.Cmd.LOAD, img), (P.Cmd.RUN, b""), (P.Cmd.READ, b"")]), tail_cycles=50))
    assert not P.Info.from_bytes(rs[0].payload).infer
    assert [P.Status(r.status) for r in rs[1:]] == [P.Status.UNSUPPORTED, P.Status.OK, P.Status.OK, P.Status.OK]
    assert P.Result.from_bytes(rs[-1].payload, 1, 5) == expected_result(small_model, img)
