"""Host driver for the bitsnn UART protocol (bitsnn.protocol), over pyserial.

Every request waits for its response with a timeout; a request that gets no valid response
(lost, corrupted, or a ``TIMEOUT``/``BAD_CHECKSUM``/``BAD_SYNC`` reply from a line error) is sent
again up to ``retries`` times. ``BUSY`` replies to READ are polled until the inference ends.

:meth:`Device.stream` keeps the line busy: it sends INFER requests (packed input spikes, or the
nonzero pixels and their masks) while up
to ``window`` are unanswered, so the device's replies, its inferences and the host's next images
overlap. :meth:`Device.negotiate` finds the device's bit rate among candidates and then uses the
rate the device reports in INFO.
"""

from __future__ import annotations

import contextlib

import time
from dataclasses import dataclass

import numpy as np

from bitsnn import BitsnnError
from bitsnn import protocol as P

__all__ = ["Device", "DeviceError", "InferenceRecord"]

#: statuses caused by the line (noise, lost bytes): worth sending the same request again
_RETRYABLE = {P.Status.BAD_SYNC, P.Status.BAD_CHECKSUM, P.Status.TIMEOUT}


class DeviceError(BitsnnError):
    """The device answered with an error, or did not answer within the retries."""

    def __init__(self, msg: str, status: int | None = None):
        super().__init__(msg)
        self.status = status


@dataclass(frozen=True)
class InferenceRecord:
    result: P.Result
    latency_s: float  # wall time on the host, from the request's first byte to its reply


class Device:
    """A bitsnn design behind a serial port.

    ``port``: a pyserial port object (anything with ``write``, ``read``, ``reset_input_buffer``
    and a ``timeout`` attribute) or a port name opened with ``baud``.
    """

    def __init__(self, port, baud: int = 115200, *, timeout: float = 1.0, retries: int = 3):
        if isinstance(port, str):
            import serial

            try:
                port = serial.serial_for_url(port, baudrate=baud, timeout=0.05)
            except (serial.SerialException, ValueError) as e:
                raise BitsnnError(f"cannot open serial port {port}: {e}") from None
        self.ser = port
        self.timeout = timeout
        self.retries = retries
        self.parser = P.ResponseParser()
        self.info: P.Info | None = None
        self.retried = 0  # requests sent again, over the device's lifetime
        self.recovered = 0  # streams that fell back to one request at a time after a line error
        self.attempts = 0  # attempts the last request took
        self._pending: list[P.Response] = []

    def close(self):
        self.ser.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- frames ------------------------------------------------------------------------------
    def _receive(self, deadline: float) -> P.Response | None:
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            chunk = self.ser.read(max(1, getattr(self.ser, "in_waiting", 0) or 1))
            if chunk:
                got = self.parser.feed(chunk)
                if got:
                    # keep any later frame for the next call
                    self._pending = got[1:] + self._pending
                    return got[0]

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests and diagnostics: malformed or partial frames)."""
        self.ser.write(bytes(data))

    def read_response(self, timeout: float | None = None) -> P.Response | None:
        """The next well-formed response frame within ``timeout`` seconds (default: the device's
        timeout), whatever command it answers; None when none comes."""
        if self._pending:
            return self._pending.pop(0)
        return self._receive(time.monotonic() + (self.timeout if timeout is None else timeout))

    def _drain(self):
        """Forget stale bytes and frames (after a timeout the device may still answer late)."""
        self._pending = []
        with contextlib.suppress(OSError):  # a port that went away: the next read reports it
            self.ser.reset_input_buffer()
        self.parser = P.ResponseParser()

    def request(self, cmd: int, payload: bytes = b"", *, retry_statuses=_RETRYABLE) -> P.Response:
        """Send one request, return the device's response to it (status may be an error).

        Retries (up to ``retries`` more times) when no response comes within ``timeout`` or the
        response reports a line error. Raises DeviceError when every attempt failed.
        """
        frame = P.encode_request(cmd, payload)
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                self._drain()
            self.attempts = attempt + 1
            pend, self._pending = self._pending, []
            self.ser.write(frame)
            deadline = time.monotonic() + self.timeout
            rsp = None
            # stale responses (e.g. a late answer to an earlier attempt) do not echo our command
            for r in pend:
                if r.cmd == cmd:
                    rsp = r
                    break
            while rsp is None:
                r = self._receive(deadline)
                if r is None:
                    break
                if r.cmd == (cmd & 0xFF) or (r.cmd == 0 and r.status in _RETRYABLE):
                    rsp = r
            if rsp is None:
                last = "no response"
                continue
            if rsp.status in retry_statuses:
                last = f"status {rsp.status_name()}"
                continue
            return rsp
        raise DeviceError(
            f"{P.Cmd(cmd).name if cmd in P.Cmd._value2member_map_ else hex(cmd)}: "
            f"no valid response after {self.retries + 1} attempts ({last})"
        )

    def _ok(self, cmd: int, payload: bytes = b"") -> bytes:
        rsp = self.request(cmd, payload)
        if not rsp.ok:
            raise DeviceError(f"{P.Cmd(cmd).name}: device replied {rsp.status_name()}", rsp.status)
        return rsp.payload

    # ---- commands ----------------------------------------------------------------------------
    def get_info(self) -> P.Info:
        try:
            self.info = P.Info.from_bytes(self._ok(P.Cmd.INFO))
        except P.ProtocolError as e:
            raise DeviceError(f"INFO: {e}") from None
        return self.info

    @property
    def baud(self) -> int | None:
        return getattr(self.ser, "baudrate", None)

    def negotiate(self, rates, *, log=None) -> P.Info:
        """Find the device's bit rate: try INFO at each of ``rates`` in turn (one retry each); then
        switch to the rate the device reports, if the port is not at it already. DeviceError
        when no rate gets an answer."""
        tried = []
        for rate in dict.fromkeys(int(r) for r in rates):
            self._set_rate(rate)
            retries, self.retries = self.retries, 1
            try:
                info = self.get_info()
            except DeviceError as e:
                tried.append(f"{rate} ({e})")
                if log:
                    log(f"no answer at {rate} baud")
                continue
            finally:
                self.retries = retries
            if info.baud and info.baud != rate:
                self._set_rate(info.baud)
                info = self.get_info()
            return info
        raise DeviceError("no answer from the device at " + ", ".join(tried))

    def _set_rate(self, rate: int) -> None:
        if hasattr(self.ser, "baudrate"):
            try:
                self.ser.baudrate = int(rate)
            except (ValueError, OSError) as e:
                raise DeviceError(f"the port cannot run at {rate} baud: {e}") from None
        self._drain()

    def load(self, pixels) -> None:
        """LOAD one image: the device's ``n_inputs`` first-layer pixels (a model with an input crop
        takes the window: ``HardwareModel.prepare_images`` cuts it out of a whole image)."""
        data = np.asarray(pixels, dtype=np.uint8).reshape(-1).tobytes()
        info = self.info or self.get_info()
        if len(data) != info.n_inputs:
            raise BitsnnError(f"image has {len(data)} pixels, the device takes {info.n_inputs}")
        self._ok(P.Cmd.LOAD, data)

    def run(self) -> None:
        rsp = self.request(P.Cmd.RUN)
        # BUSY on a repeated RUN: the first attempt started the inference, only its reply was lost
        if not (rsp.ok or (rsp.status == P.Status.BUSY and self.attempts > 1)):
            raise DeviceError(f"RUN: device replied {rsp.status_name()}", rsp.status)

    def read(self, *, busy_timeout: float | None = None) -> P.Result:
        """READ the last result, polling while the device reports BUSY."""
        info = self.info or self.get_info()
        deadline = time.monotonic() + (busy_timeout if busy_timeout is not None else 10 * self.timeout)
        while True:
            rsp = self.request(P.Cmd.READ)
            if rsp.ok:
                return P.Result.from_bytes(rsp.payload, info.n_hidden, info.n_classes)
            if rsp.status != P.Status.BUSY or time.monotonic() > deadline:
                raise DeviceError(f"READ: device replied {rsp.status_name()}", rsp.status)

    def infer(self, pixels) -> InferenceRecord:
        """LOAD (8-bit pixels), RUN and READ: one image, on any design."""
        t0 = time.perf_counter()
        self.load(pixels)
        self.run()
        res = self.read()
        return InferenceRecord(res, time.perf_counter() - t0)

    def infer_spikes(self, spikes) -> InferenceRecord:
        """One INFER: the image's first-layer inputs (``HardwareModel.encode_input``: 0/1 spikes
        sent packed, or 8-bit pixels sent as masks and nonzero values); the reply is the result.
        Retried like any request (a repeated INFER runs the same image)."""
        info = self.info or self.get_info()
        tag = self._next_tag()
        t0 = time.perf_counter()
        for _ in range(self.retries + 1):
            rsp = self.request(P.Cmd.INFER, self._spike_payload(tag, spikes, info),
                               retry_statuses=_RETRYABLE | {P.Status.BUSY})
            if not rsp.ok:
                raise DeviceError(f"INFER: device replied {rsp.status_name()}", rsp.status)
            res, got = P.infer_reply(rsp.payload, info.n_hidden, info.n_classes)
            if got == tag:
                return InferenceRecord(res, time.perf_counter() - t0)
            self._quiesce()  # a late reply to an earlier request: wait for quiet, ask again
        raise DeviceError(f"INFER: no reply with tag {tag} after {self.retries + 1} attempts")

    def _next_tag(self) -> int:
        self._tag = (getattr(self, "_tag", 0) + 1) & 0xFF
        return self._tag

    @staticmethod
    def _spike_payload(tag: int, values, info: P.Info) -> bytes:
        """INFER's payload for one image's first-layer inputs (0/1 spikes, or 8-bit pixels on a
        pixel-input design: INFO says which)."""
        if not info.infer:
            raise BitsnnError("the device does not serve INFER: use LOAD, RUN and READ")
        s = np.asarray(values, dtype=np.uint8).reshape(-1)
        if s.size != info.n_inputs:
            raise BitsnnError(f"{s.size} inputs, the device takes {info.n_inputs}")
        if not info.infer_pixels and s.size and s.max() > 1:
            raise BitsnnError("the device takes input spikes (0/1): threshold the pixels first (HardwareModel.encode_input)")
        return P.infer_payload(tag, s, pixels=info.infer_pixels)

    def stream(self, spikes, *, window: int = P.INFER_SLOTS, progress=None) -> list[InferenceRecord]:
        """INFER every row of ``spikes`` (n, n_inputs: ``HardwareModel.encode_input``, spikes or
        pixels as the device takes them) with up to ``window`` requests unanswered
        (the device holds INFER_SLOTS images, so a window up to that never meets BUSY). Replies
        come in order, each with its request's tag. After anything else than the OK reply with the
        expected tag (a line error, a lost request, BUSY, silence) the stream waits until the line
        is quiet, then sends the unanswered images again one at a time with :meth:`infer_spikes`
        (an inference repeated gives the same result) and goes on."""
        info = self.info or self.get_info()
        if not 1 <= window <= P.INFER_SLOTS:
            raise BitsnnError(f"window must be in 1..{P.INFER_SLOTS}, got {window}")
        spikes = list(spikes)
        n = len(spikes)
        tags = [self._next_tag() for _ in range(n)]
        frames = [P.encode_request(P.Cmd.INFER, self._spike_payload(t, s, info)) for t, s in zip(tags, spikes)]
        out: list[InferenceRecord | None] = [None] * n
        sent_at = [0.0] * n
        nxt = done = 0
        while done < n:
            while nxt < n and nxt - done < window:
                sent_at[nxt] = time.perf_counter()
                self.ser.write(frames[nxt])
                nxt += 1
            rsp = self.read_response()
            if rsp is not None and rsp.ok and rsp.cmd == P.Cmd.INFER:
                res, tag = P.infer_reply(rsp.payload, info.n_hidden, info.n_classes)
                if tag == tags[done]:
                    out[done] = InferenceRecord(res, time.perf_counter() - sent_at[done])
                    done += 1
                    if progress:
                        progress(done, n)
                    continue
            self.recovered += 1
            self._quiesce()
            for i in range(done, nxt):
                out[i] = self.infer_spikes(spikes[i])
                if progress:
                    progress(i + 1, n)
            done = nxt
        return out

    def _quiesce(self) -> None:
        """Read and drop bytes until the line has been quiet for the reply timeout."""
        quiet_until = time.monotonic() + self.timeout
        while time.monotonic() < quiet_until:
            if self.ser.read(max(1, getattr(self.ser, "in_waiting", 0) or 1)):
                quiet_until = time.monotonic() + self.timeout
        self._drain()

    def write_weights(self, layer: int, col: int, offset: int, data: bytes) -> None:
        """WRITE_WEIGHTS: bytes ``offset``.. of input ``col``'s fan-out in ``layer`` (see bitsnn.protocol)."""
        self._ok(P.Cmd.WRITE_WEIGHTS, P.encode_weight_write(layer, col, offset, data))

    def load_weights(self, hwmodel, progress=None) -> int:
        """Write every weight of ``hwmodel`` into the device (one frame per input column and
        layer); ``progress(done, total)`` after each frame. Returns the number of frames."""
        info = self.info or self.get_info()
        if not info.weight_write:
            raise BitsnnError("the device has no run-time weight memory (its weights are in the bitstream)")
        frames = P.weight_write_payloads(hwmodel)
        for i, payload in enumerate(frames):
            self._ok(P.Cmd.WRITE_WEIGHTS, payload)
            if progress is not None:
                progress(i + 1, len(frames))
        return len(frames)
