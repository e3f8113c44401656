"""The host driver and ``bitsnn run`` end to end against the real design: UARTTop around the
real Accelerator (a 40-12-5 random model) in the Amaranth simulator, behind a pseudo-terminal
(:class:`bitsnn.sim.uart_pty.SimulatedDevice`, 4 clocks per bit) that pyserial opens like a board.

Covers a normal inference equal to the golden and cycle models, a corrupted frame (BAD_CHECKSUM,
then recovery), a partial frame (TIMEOUT, then recovery), the driver's retries (no reply; a
corrupted request), and the ``bitsnn run`` command (a few images; a wrong model id)."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

pytest.importorskip("serial")
if not sys.platform.startswith(("linux", "darwin")):
    pytest.skip("needs a POSIX pseudo-terminal", allow_module_level=True)

from bitsnn import protocol as P  # noqa: E402
from bitsnn.cli import main as cli_main  # noqa: E402
from bitsnn.firmware.driver import Device, DeviceError  # noqa: E402
from bitsnn.hwmodel import random_model  # noqa: E402
from bitsnn.sim import cycles as cycles_mod  # noqa: E402
from bitsnn.sim import golden  # noqa: E402
from bitsnn.sim.uart_pty import SimulatedDevice  # noqa: E402
from conftest import write_idx_set  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("uart_pty")]

H, W = 5, 8  # 40-pixel images
#: seconds the driver waits for a reply: the simulated UART runs at a few thousand cycles/s
TIMEOUT = 8.0


@pytest.fixture(scope="module")
def model():
    return random_model(np.random.default_rng(1), [H * W, 12, 5], input_shape=(H, W))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(7).integers(0, 256, (6, H, W), dtype=np.uint8)


@pytest.fixture(scope="module")
def device(model):
    with SimulatedDevice(model, divisor=4, timeout_cycles=3000) as d:
        yield d


@pytest.fixture
def dev(device):
    d = Device(device.port, device.baud, timeout=TIMEOUT, retries=2)
    yield d
    d.close()


def expected(model, img) -> P.Result:
    g = golden.run(model, np.asarray(img, np.uint8)[None])
    c = cycles_mod.predict_cycles(model, g, mode="event", lanes=32, word=32)
    return P.Result(int(g.classes[0]), int(c[0]), tuple(int(x) for x in g.spike_counts[0]),
                    tuple(int(x) for x in g.scores[0]))


def test_inference_equals_golden(model, images, dev):
    info = dev.get_info()
    assert info.model_id == P.model_id(model.content_hash)
    assert (info.n_inputs, info.n_hidden, info.n_classes) == (H * W, 1, 5)
    for img in images[:2]:
        rec = dev.infer(img)
        assert rec.result == expected(model, img)
        assert rec.latency_s > 0
    assert dev.retried == 0


def test_bad_checksum_then_recovery(model, images, dev):
    frame = bytearray(P.encode_request(P.Cmd.LOAD, images[0].tobytes()))
    frame[-1] ^= 0xFF
    dev.send_raw(frame)
    rsp = dev.read_response(TIMEOUT)
    assert rsp is not None and (rsp.cmd, rsp.status) == (P.Cmd.LOAD, P.Status.BAD_CHECKSUM)
    # the bad LOAD left no image behind
    assert dev.request(P.Cmd.RUN).status == P.Status.NO_IMAGE
    assert dev.infer(images[1]).result == expected(model, images[1])


def test_partial_frame_times_out_then_recovery(model, images, dev):
    dev.send_raw(P.encode_request(P.Cmd.LOAD, images[0].tobytes())[:10])
    rsp = dev.read_response(TIMEOUT)
    assert rsp is not None and (rsp.cmd, rsp.status) == (P.Cmd.LOAD, P.Status.TIMEOUT)
    assert dev.get_info().model_id == P.model_id(model.content_hash)
    assert dev.infer(images[2]).result == expected(model, images[2])


def test_stream_equals_golden(model, images, dev):
    """INFER with the device's slots all in use: every result equals the golden and cycle models."""
    recs = dev.stream(model.encode_input(images), window=P.INFER_SLOTS)
    assert [r.result for r in recs] == [expected(model, img) for img in images]
    assert dev.recovered == 0


def test_stream_recovers_from_line_errors(model, images, dev, device):
    """A corrupted INFER in the middle of a stream (BAD_CHECKSUM) and a lost one (silence): the
    stream waits for quiet, sends the unanswered images again one at a time, and every result is
    still the golden one, in order."""
    frame = P.REQ_OVERHEAD + 1 + P.packed_input_bytes(H * W)
    device.corrupt_input(frame + 6, 0x08)  # a payload byte of the second request
    recs = dev.stream(model.encode_input(images), window=3)
    device.drop_input(frame)  # the first request of the next stream vanishes
    recs += dev.stream(model.encode_input(images[:2]), window=2)
    assert [r.result for r in recs] == [expected(model, img) for img in [*images, *images[:2]]]
    assert dev.recovered == 2


def test_rate_negotiation(model, device):
    """A host at the wrong rate gets garbled bytes both ways and no valid reply (the simulated
    line honours the rate the host sets); negotiation tries the candidates and settles on the
    device's rate, which INFO reports."""
    with Device(device.port, 115200, timeout=1.5, retries=0) as d:
        with pytest.raises(DeviceError, match="no valid response"):
            d.get_info()
        info = d.negotiate([115200, device.baud])
        assert info.baud == device.baud == d.baud == 1_000_000
        assert info.model_id == P.model_id(model.content_hash)


def test_driver_retries_lost_and_corrupted_requests(model, images, device):
    with Device(device.port, device.baud, timeout=3.0, retries=2) as d:
        d.get_info()
        device.drop_input(P.REQ_OVERHEAD)  # the next INFO request vanishes on the line
        t0 = time.monotonic()
        d.get_info()
        assert d.attempts == 2 and d.retried == 1 and time.monotonic() - t0 >= 3.0
        device.corrupt_input(10, 0x40)  # a payload byte of the coming LOAD: BAD_CHECKSUM, sent again
        assert d.infer(images[3]).result == expected(model, images[3])
        assert d.retried == 2


@pytest.fixture(scope="module")
def files(model, images, tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    labels = np.array([expected(model, im).klass for im in images], np.uint8)
    labels[-1] = (labels[-1] + 1) % 5  # one wrong label: accuracy 5/6, not a mismatch
    write_idx_set(d / "data", {
        "train-images-idx3-ubyte": images, "train-labels-idx1-ubyte": labels,
        "t10k-images-idx3-ubyte": images, "t10k-labels-idx1-ubyte": labels,
    })
    other = random_model(np.random.default_rng(2), [H * W, 12, 5], input_shape=(H, W))
    return model.save(d / "m.bsnn"), other.save(d / "other.bsnn"), d / "data"


def test_run_cli(device, files, capsys):
    mpath, _, data = files
    rc = cli_main(["run", "--port", device.port, "--baud", str(device.baud), "--model", str(mpath), "--images", "3", "--data-dir", str(data),
                   "--clock-mhz", "12", "--timeout", str(TIMEOUT)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "accuracy: 100.00% on 3 images" in out and "mismatches: 0" in out
    assert "host round trip (INFER)" in out and "us mean at 12 MHz" in out and "spikes per inference" in out
    assert "1000000 baud, INFER (packed spikes)" in out and "images/s measured" in out and "predicted by the link" in out


def test_run_cli_wrong_model(device, files, capsys):
    _, other, data = files
    rc = cli_main(["run", "--port", device.port, "--baud", str(device.baud), "--model", str(other), "--images", "2", "--data-dir", str(data),
                   "--timeout", str(TIMEOUT)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "model id" in err and "build and program the bitstream" in err and len(err.strip().splitlines()) == 1


def test_run_cli_bad_port(files, capsys):
    mpath, _, data = files
    rc = cli_main(["run", "--port", "/dev/nonexistent-bitsnn", "--model", str(mpath), "--images", "1",
                   "--data-dir", str(data)])
    assert rc == 1 and "cannot open serial port" in capsys.readouterr().err


@pytest.fixture(scope="module")
def spram_device(model):
    """The same design with its first layer in SPRAM: INFO says the weights are volatile, and the
    memory starts empty until the host writes it."""
    with SimulatedDevice(model, divisor=4, timeout_cycles=3000, spram_layers=[0]) as d:
        yield d


def test_spram_design_needs_and_takes_weights(model, images, spram_device, files, capsys):
    d = Device(spram_device.port, spram_device.baud, timeout=TIMEOUT, retries=2)
    try:
        info = d.get_info()
        assert info.weight_write and info.weights_volatile
        assert d.infer(images[0]).result != expected(model, images[0])  # nothing written yet
        bad = P.encode_weight_write(0, H * W, 0, b"\x00")  # column 40 of a 40-input layer
        assert d.request(P.Cmd.WRITE_WEIGHTS, bad).status == P.Status.BAD_ADDRESS
        assert d.request(P.Cmd.WRITE_WEIGHTS, P.encode_weight_write(0, 0, 1, b"\x00\x00")).status == P.Status.BAD_ADDRESS
    finally:
        d.close()
    mpath, _, data = files
    rc = cli_main(["run", "--port", spram_device.port, "--baud", str(spram_device.baud), "--model", str(mpath), "--images", "3", "--data-dir",
                   str(data), "--timeout", str(TIMEOUT)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "writing the model's weights (SPRAM" in out and "in 52 frames" in out
    assert "accuracy: 100.00% on 3 images" in out and "mismatches: 0" in out


def test_write_weights_refused_by_a_rom_design(device, files, capsys):
    mpath, _, data = files
    rc = cli_main(["run", "--port", device.port, "--baud", str(device.baud), "--model", str(mpath), "--images", "1", "--data-dir", str(data),
                   "--timeout", str(TIMEOUT), "--write-weights"])
    err = capsys.readouterr().err
    assert rc == 1 and "no run-time weight memory" in err


def test_conv_model_over_the_uart(capsys):
    """A convolutional model in the UART top (simulated board): the driver's results (class,
    cycles, the conv layer's spike count, scores) equal the golden and cycle models."""
    conv = random_model(np.random.default_rng(4), [64, 5], input_shape=(8, 8), convs=((4, 3, 2),),
                        threshold_spread=0.5)
    imgs = np.random.default_rng(8).integers(0, 256, (2, 8, 8), dtype=np.uint8)
    with SimulatedDevice(conv, divisor=4, timeout_cycles=3000) as sim_dev:
        d = Device(sim_dev.port, sim_dev.baud, timeout=TIMEOUT, retries=2)
        try:
            info = d.get_info()
            assert (info.n_inputs, info.n_hidden, info.n_classes) == (64, 1, 5)
            for img in imgs:
                assert d.infer(img).result == expected(conv, img)
            assert [r.result for r in d.stream(conv.encode_input(imgs))] == [expected(conv, img) for img in imgs]
        finally:
            d.close()
    assert golden.run(conv, imgs).spike_counts.min() > 0


def test_multibit_conv_model_with_spram_weights_over_the_uart():
    """A 4-bit pixel convolution and a 4-bit output layer whose weights live in SPRAM (written over
    the UART in the map store's column order, two 4-bit weights a byte): before the write the
    results are wrong, after it every result equals the golden and cycle models."""
    conv = random_model(np.random.default_rng(4), [64, 5], input_shape=(8, 8), input_encoding="pixels",
                        convs=((4, 3, 2),), threshold_spread=0.5, weight_bits={0: 4, 1: 4})
    imgs = np.random.default_rng(8).integers(0, 256, (2, 8, 8), dtype=np.uint8)
    with SimulatedDevice(conv, divisor=4, timeout_cycles=3000, spram_layers=[1]) as sim_dev:
        d = Device(sim_dev.port, sim_dev.baud, timeout=TIMEOUT, retries=2)
        try:
            info = d.get_info()
            assert info.weight_write and info.weights_volatile
            assert d.infer(imgs[0]).result != expected(conv, imgs[0])  # nothing written yet
            # columns: the 4 x 4 x 4 pooled map's store addresses (4 x 4 x 4 = 64, no padding); 5
            # neurons of 4 bits: 3 bytes a column
            assert d.load_weights(conv) == 64
            assert d.request(P.Cmd.WRITE_WEIGHTS, P.encode_weight_write(0, 0, 0, b"\x00")).status == P.Status.BAD_ADDRESS
            assert d.request(P.Cmd.WRITE_WEIGHTS, P.encode_weight_write(1, 0, 2, b"\x00\x00")).status == P.Status.BAD_ADDRESS
            for img in imgs:
                assert d.infer(img).result == expected(conv, img)
        finally:
            d.close()


def test_pixel_input_design_streams_nonzero_pixels(images):
    """A pixel-input design serves INFER with each group's mask and nonzero 8-bit pixels: the
    driver's stream equals the golden and cycle models."""
    pix = random_model(np.random.default_rng(5), [H * W, 12, 5], input_shape=(H, W), input_encoding="pixels")
    imgs = images.copy()
    imgs[imgs < 120] = 0  # mostly zeros, as MNIST
    with SimulatedDevice(pix, divisor=4, timeout_cycles=3000) as sim_dev:
        with Device(sim_dev.port, sim_dev.baud, timeout=TIMEOUT, retries=2) as d:
            assert d.get_info().infer_pixels
            recs = d.stream(pix.encode_input(imgs))
    assert [r.result for r in recs] == [expected(pix, img) for img in imgs]


def test_run_cli_takes_the_event_stages_a_design_reports(tmp_path, capsys):
    """A model over time built with event stages for its convolutions (a bank of accumulators per
    step) says so in INFO (FLAG_EVENT_STAGES): `bitsnn run` without --conv-engine predicts its
    cycles with them, 0 mismatches (the window stages' cycle counts differ on every image)."""
    hm = random_model(np.random.default_rng(0), [0, 5], input_shape=(8, 8), convs=((4, 3, 2), (8, 3, 1)),
                      neurons={0: {"neuron": "lif", "leak": 6554, "shift": 1}, 1: {"neuron": "if"}}, timesteps=3,
                      input_coding="threshold", threshold_spread=0.3)
    imgs = np.random.default_rng(8).integers(0, 256, (3, 8, 8)).astype(np.uint8)
    labels = golden.run(hm, imgs).classes.astype(np.uint8)
    write_idx_set(tmp_path / "data", {"train-images-idx3-ubyte": imgs, "train-labels-idx1-ubyte": labels,
                                      "t10k-images-idx3-ubyte": imgs, "t10k-labels-idx1-ubyte": labels})
    mpath = hm.save(tmp_path / "m.bsnn")
    with SimulatedDevice(hm, divisor=4, timeout_cycles=3000, lanes=4, conv_engine="event") as dev:
        with Device(dev.port, dev.baud, timeout=TIMEOUT, retries=2) as d:
            assert d.get_info().event_stages
        rc = cli_main(["run", "--port", dev.port, "--baud", str(dev.baud), "--model", str(mpath), "--images", "3",
                       "--data-dir", str(tmp_path / "data"), "--timeout", str(TIMEOUT)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "accuracy: 100.00% on 3 images" in out and "mismatches: 0" in out
    window = cycles_mod.predict_cycles(hm, golden.run(hm, imgs), mode="event", lanes=4, word=32)
    event = cycles_mod.predict_cycles(hm, golden.run(hm, imgs), mode="event", lanes=4, word=32, conv_engine="event")
    assert (window != event).all()  # without the flag the run would count mismatches
