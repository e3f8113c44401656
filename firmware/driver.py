"""Host driver for the bitsnn UART protocol (bitsnn.protocol), over pyserial.

Every request waits for its response with a timeout; a request that gets no valid response
(lost, corrupted, or a ``TIMEOUT``/``BAD_CHECKSUM``/``BAD_SYNC`` reply from a line error) is sent
again up to ``retries`` times. ``BUSY`` replies to READ are polled until the inference ends.
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
    latency_s: float  # wall time LOAD + RUN + READ on the host


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
        self.info = P.Info.from_bytes(self._ok(P.Cmd.INFO))
        if self.info.version != P.PROTOCOL_VERSION:
            raise DeviceError(f"device speaks protocol version {self.info.version}, host {P.PROTOCOL_VERSION}")
        return self.info

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
        t0 = time.perf_counter()
        self.load(pixels)
        self.run()
        res = self.read()
        return InferenceRecord(res, time.perf_counter() - t0)

    def write_weights(self, layer: int, col: int, offset: int, data: bytes) -> None:
        """WRITE_WEIGHTS: bytes ``offset``.. of input ``col``'s fan-out in ``layer`` (see bitsnn.protocol)."""
        self._ok(P.Cmd.WRITE_WEIGHTS, P.encode_weight_write(layer, col, offset, data))

    def load_weights(self, hwmodel, progress=None) -> int:
        """Write every weight of ``hwmodel`` into the device (one frame per input column and
        layer); ``progress(done, total)`` after each frame. Returns the number of frames."""
        info = self.info or self.get_info()
        if not info.weight_write:
            raise BitsnnError("the device has no run-time weight memory (its weights are in the bitstream)")
        frames = P.weight_write_payloads(hwmodel.layers)
        for i, payload in enumerate(frames):
            self._ok(P.Cmd.WRITE_WEIGHTS, payload)
            if progress is not None:
                progress(i + 1, len(frames))
        return len(frames)
