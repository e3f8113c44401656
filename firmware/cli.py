"""``bitsnn run``: stream test images to a bitsnn design over UART (:class:`~bitsnn.firmware.driver.Device`)
and report accuracy, latency and spikes, checked against the golden model and the cycle model.

The device's INFO must report the model id of ``--model`` (the first 4 bytes of its content hash),
so results are never compared with the wrong network.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from bitsnn import BitsnnError
from bitsnn import protocol as P
from bitsnn.hwplan import DEFAULT_WORD

__all__ = ["run_main", "run_images", "check_info"]

#: what board builds generate (bitsnn.hwplan.DEFAULT_WORD); the lanes come from the device's INFO
#: (bitsnn.hwplan.default_lanes when it reports none)
WORD = DEFAULT_WORD


def check_info(info: P.Info, hm, model_path) -> None:
    """BitsnnError unless the device runs ``hm``."""
    want = P.model_id(hm.content_hash)
    if info.model_id != want:
        raise BitsnnError(
            f"the device runs model id {info.model_id.hex()}, but {model_path} has id {want.hex()} "
            f"(content hash {hm.content_hash[:16]}...): build and program the bitstream for this model")
    shape = (info.n_inputs, info.n_hidden, info.n_classes)
    if shape != (P.input_values(hm), len(hm.hidden_layers), hm.num_classes):
        raise BitsnnError(f"the device reports {shape[0]} inputs, {shape[1]} hidden layers, {shape[2]} classes; "
                          f"{model_path} is {hm.describe()}")


def run_images(dev, images, hm, *, window: int = P.INFER_SLOTS, progress=None) -> tuple[list[P.Result], np.ndarray]:
    """Infer every image on ``dev``; the results and the host's time from each request to its
    reply (s). A design that serves INFER gets the images' inputs as INFER carries them
    (``protocol.infer_inputs``), ``window`` requests in flight; any other gets LOAD, RUN and READ
    per image (``hwplan.stream_inputs``). With ``given`` coding the images are every step's
    spikes, (n, T, *input_shape)."""
    from bitsnn.hwplan import stream_inputs

    info = dev.info or dev.get_info()
    if info.infer:
        recs = dev.stream(P.infer_inputs(hm, images), window=window, progress=progress)
    else:
        recs = []
        for i, img in enumerate(stream_inputs(hm, images)):
            recs.append(dev.infer(img))
            if progress:
                progress(i + 1, len(images))
    return [r.result for r in recs], np.asarray([r.latency_s for r in recs], np.float64)


def predicted_link(info: P.Info, run_cycles: np.ndarray, clock_mhz: float | None, nonzero: float = 0.0):
    """The link's images/s for this device (:func:`bitsnn.link.link_timing`) at the rate it reports;
    the compute counts only when the clock is known. ``nonzero``: the images' mean nonzero inputs."""
    from bitsnn.link import link_timing

    compute = float(np.mean(run_cycles)) / (clock_mhz * 1e6) if clock_mhz else 0.0
    return link_timing(n_inputs=info.n_inputs, n_words=info.n_result_words, infer=info.infer,
                       infer_pixels=info.infer_pixels, nonzero=nonzero, baud=info.baud, compute_s=compute)


def run_main(args, out=None, device=None) -> int:
    """The ``bitsnn run`` subcommand: 0 when every result equals the golden model, 1 otherwise.
    ``device``: an open :class:`Device` (tests), instead of opening ``args.port``."""
    out = out or sys.stdout

    def say(msg=""):
        print(msg, file=out, flush=True)

    from bitsnn.data import model_inputs
    from bitsnn.hwmodel import HardwareModel
    from bitsnn.hwplan import CONV_ENGINES, HardwarePlan, check_supported, default_lanes
    from bitsnn.sim import cycles as cycles_mod
    from bitsnn.sim import golden

    from .driver import Device

    if not Path(args.model).is_file():
        raise BitsnnError(f"hardware model {args.model} not found")
    hm = HardwareModel.load(args.model)
    check_supported(hm)  # before any work
    images, labels = model_inputs(args.images, hm, getattr(args, "data_dir", None), spikes=getattr(args, "spikes", None))
    n = len(images)
    mode = getattr(args, "mode", None) or "event"
    given_engine = getattr(args, "conv_engine", None)
    conv_engine = given_engine or "auto"
    if conv_engine not in CONV_ENGINES:
        raise BitsnnError(f"--conv-engine must be one of {', '.join(CONV_ENGINES)}, not {conv_engine!r}")
    HardwarePlan.of(hm, mode=mode, lanes=default_lanes(hm), word=WORD, conv_engine=conv_engine)  # before any I/O
    clock_mhz = getattr(args, "clock_mhz", None)

    dev = device
    baud = getattr(args, "baud", None)
    if dev is None:
        try:
            import serial  # noqa: F401
        except ImportError:
            raise BitsnnError("pyserial is not installed (pip install bitsnn[firmware])") from None
        from bitsnn.boards import LEGACY_BAUD

        dev = Device(args.port, int(baud or LEGACY_BAUD), timeout=float(getattr(args, "timeout", None) or 2.0))
    try:
        from bitsnn.boards import known_rates

        rates = ([baud] if baud else []) + known_rates(clock_mhz * 1e6 if clock_mhz else None)
        info = dev.negotiate(rates, log=say)
        check_info(info, hm, args.model)
        say(f"device: protocol v{info.version}, model id {info.model_id.hex()} ({hm.describe()}), "
            f"{info.baud} baud, " + ("INFER (nonzero pixels)" if info.infer_pixels else "INFER (packed spikes)"
                                  if info.infer else "LOAD/RUN/READ (8-bit pixels)"))
        if info.weights_volatile or getattr(args, "write_weights", False):
            if not info.weight_write:
                raise BitsnnError("--write-weights: the device has no run-time weight memory "
                                  "(its weights are in the bitstream)")
            tw = time.perf_counter()

            def wprogress(i, total):
                if i == total or i % max(1, total // 5) == 0:
                    say(f"  weights: {i}/{total} frames, {time.perf_counter() - tw:.1f} s")

            say("writing the model's weights" + (" (SPRAM: not initialised by the bitstream)" if info.weights_volatile else ""))
            frames = dev.load_weights(hm, progress=wprogress)
            say(f"wrote {sum(l.n_in * -(-l.n_out // 8) for l in hm.layers)} weight bytes in {frames} frames "
                f"in {time.perf_counter() - tw:.1f} s")
        t0 = time.perf_counter()

        def progress(i, total):
            if total >= 20 and i % max(1, total // 10) == 0:
                say(f"  {i}/{total} images, {time.perf_counter() - t0:.1f} s")

        results, lat = run_images(dev, images, hm, window=int(getattr(args, "window", None) or P.INFER_SLOTS),
                                  progress=progress)
        wall = time.perf_counter() - t0
    finally:
        if device is None:
            dev.close()

    g = golden.run(hm, images)
    lanes = info.lanes or default_lanes(hm)
    if given_engine is None and info.event_stages:  # the design says it was built with event stages
        conv_engine = "event"
    want_cycles = cycles_mod.predict_cycles(hm, g, mode=mode, lanes=lanes, word=WORD, conv_engine=conv_engine)
    classes = np.array([r.klass for r in results], np.int64)
    cyc = np.array([r.cycles for r in results], np.int64)
    counts = np.array([r.spike_counts for r in results], np.int64).reshape(n, -1)
    bad = []
    for b, r in enumerate(results):
        why = []
        if r.klass != g.classes[b]:
            why.append(f"class {r.klass} != golden {g.classes[b]}")
        d = np.flatnonzero(np.array(r.scores) != g.scores[b])
        if d.size:
            why.append(f"score of class {d[0]} {r.scores[d[0]]} != golden {g.scores[b][d[0]]}")
        d = np.flatnonzero(counts[b] != g.spike_counts[b])
        if d.size:
            why.append(f"layer {d[0]} spike count {counts[b][d[0]]} != golden {g.spike_counts[b][d[0]]}")
        if r.cycles != want_cycles[b]:
            why.append(f"cycles {r.cycles} != cycle model {want_cycles[b]} ({mode} mode, {lanes} lanes, {conv_engine} convolution stages)")
        if why:
            bad.append((b, "; ".join(why)))

    if labels is not None:
        say(f"accuracy: {np.mean(classes == labels):.2%} on {n} images (golden {np.mean(g.classes == labels):.2%})")
    else:
        say(f"accuracy: not known ({args.spikes} has no labels)")
    say(f"mismatches: {len(bad)}")
    how = "INFER" if info.infer else "LOAD+RUN+READ"
    say(f"host round trip ({how}): mean {lat.mean() * 1e3:.2f} ms, max {lat.max() * 1e3:.2f} ms")
    x = P.infer_inputs(hm, images)
    link = predicted_link(info, P.run_cycles(info.n_inputs, cyc, info.n_result_words, infer_pixels=info.infer_pixels),
                          clock_mhz, nonzero=float(np.count_nonzero(x, axis=1).mean()))
    say(f"end to end: {n / wall:.1f} images/s measured; {link.images_per_s:.0f} predicted by the link at "
        f"{info.baud} baud ({link.bound}-bound: {link.formula()}"
        + ("" if clock_mhz else "; compute not counted: give --clock-mhz") + ")")
    dev_lat = f"mean {cyc.mean():.1f}, min {cyc.min()}, max {cyc.max()} cycles"
    if clock_mhz:
        dev_lat += f" = {cyc.mean() / clock_mhz:.2f} us mean at {clock_mhz:g} MHz"
    say(f"device latency: {dev_lat}")
    per_layer = ", ".join(f"layer {l} {v:.1f}" for l, v in enumerate(counts.mean(axis=0)))
    say(f"spikes per inference: mean {counts.sum(axis=1).mean():.1f} ({per_layer})")
    if dev.retried or getattr(dev, "recovered", 0):
        say(f"requests retried: {dev.retried}; streams recovered after a line error: {getattr(dev, 'recovered', 0)}")
    if bad:
        say(f"MISMATCH: first at image {bad[0][0]}: {bad[0][1]}")
        return 1
    return 0
