"""The UART protocol between a host and the bitsnn top level (hw/top.py), defined once.

NumPy/stdlib only: the hardware generator (``bitsnn.hw.top``) and the host driver
(``bitsnn.firmware``) both take every constant and helper from here. docs/protocol.md has the prose.

Frames (all multi-byte integers little-endian)::

    request:   REQ_SYNC | cmd  |          len_lo | len_hi | payload[len] | crc
    response:  RSP_SYNC | cmd  | status | len_lo | len_hi | payload[len] | crc

``crc`` is CRC-8 (polynomial 0x07, initial value 0, no reflection, no final XOR; "CRC-8/SMBUS")
over every byte after the sync byte up to the end of the payload. A response echoes the request's
command (0 where the request had none, e.g. a bad sync byte or a timed-out frame); ``status`` is
:class:`Status.OK` or an error code, and error responses carry no payload.

Commands:

- ``INFO`` (no payload) -> 12 bytes: protocol version u8, flags u8 (bit 0: weight writes
  supported; bit 1: the weights are volatile -- SPRAM the bitstream does not initialise -- and must
  be written before the first RUN), inputs u16, hidden layers u8, classes u8, result words u8, reserved u8, model id
  (the first 4 bytes of the hardware model's content hash).
- ``LOAD`` (exactly ``inputs`` bytes, one uint8 pixel each) -> no payload.
- ``RUN`` (no payload) -> no payload; starts an inference on the loaded image and replies at once.
- ``READ`` (no payload) -> ``4 * (2 + hidden + classes)`` bytes: the accelerator's result words as
  u32: class, cycle count, each hidden layer's spike count, then the class scores (int32).
- ``WRITE_WEIGHTS`` (u8 layer, u16 input column i, u16 byte offset b, then 1..:data:`MAX_WEIGHT_CHUNK`
  bytes) -> no payload. The bytes are bytes b, b+1, ... of column i of the layer's weights as
  :func:`weight_columns` lays them out (input i's fan-out: bit t of byte b is the weight to neuron
  8b+t, 1 = +1), and must not run past the column. ``BAD_ADDRESS`` for a layer, column or byte
  outside the model; ``UNSUPPORTED`` on designs whose weights are fixed in the bitstream. The
  design applies nothing until the frame's CRC is checked, then writes all its bytes.

A request whose length field exceeds :func:`max_request_payload` (what no command takes) is
answered ``BAD_LENGTH`` as soon as the length is read; the design then ignores the line until it
has been quiet for the inter-byte timeout.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

from .hwplan import result_words

__all__ = [
    "PROTOCOL_VERSION",
    "REQ_SYNC",
    "RSP_SYNC",
    "Cmd",
    "Status",
    "FLAG_WEIGHT_WRITE",
    "FLAG_WEIGHTS_VOLATILE",
    "MAX_WEIGHT_CHUNK",
    "INFO_LEN",
    "MAX_LANES",
    "REQ_OVERHEAD",
    "RSP_OVERHEAD",
    "crc8",
    "crc8_update",
    "CRC8_TABLE",
    "encode_request",
    "encode_response",
    "ResponseParser",
    "Response",
    "Info",
    "Result",
    "expected_request_length",
    "max_request_payload",
    "result_words",
    "ProtocolError",
    "WEIGHT_HEADER",
    "encode_weight_write",
    "weight_columns",
    "weight_write_payloads",
    "model_id",
]

PROTOCOL_VERSION = 1
REQ_SYNC = 0xA5
RSP_SYNC = 0x5A
CRC8_POLY = 0x07
#: header + crc bytes around a request / response payload
REQ_OVERHEAD = 5
RSP_OVERHEAD = 6
FLAG_WEIGHT_WRITE = 0x01
#: the design keeps (some) weights in memory the bitstream does not initialise (iCE40 SPRAM)
FLAG_WEIGHTS_VOLATILE = 0x02
#: the most weight bytes one WRITE_WEIGHTS frame carries
MAX_WEIGHT_CHUNK = 256
#: WRITE_WEIGHTS header: layer u8, row u16, byte offset u16
WEIGHT_HEADER = 5
INFO_LEN = 12
#: the most lanes a design's event cores may have: INFO reports them in one byte
MAX_LANES = 255


class Cmd(enum.IntEnum):
    """Request command codes."""

    INFO = 0x01
    LOAD = 0x02
    RUN = 0x03
    READ = 0x04
    WRITE_WEIGHTS = 0x05


class Status(enum.IntEnum):
    """Response status codes: OK or why the request was refused."""

    OK = 0x00
    BAD_SYNC = 0x01  #: a byte outside a frame that is not REQ_SYNC (one reply per burst)
    BAD_CHECKSUM = 0x02  #: the frame's CRC-8 does not match
    BAD_LENGTH = 0x03  #: the payload length is wrong for the command
    UNKNOWN_CMD = 0x04  #: no such command
    BUSY = 0x05  #: an inference is running; only INFO is served
    TIMEOUT = 0x06  #: the frame stopped mid-way for longer than the inter-byte timeout
    NO_IMAGE = 0x07  #: RUN without a complete LOAD since reset or the last failed LOAD
    NO_RESULT = 0x08  #: READ before any inference finished
    UNSUPPORTED = 0x09  #: not supported by this design (e.g. weight writes into bitstream ROM)
    BAD_ADDRESS = 0x0A  #: WRITE_WEIGHTS outside the model's layers/rows/bytes


class ProtocolError(Exception):
    """A malformed or unexpected frame seen by the host."""


def _make_table() -> tuple[int, ...]:
    table = []
    for b in range(256):
        c = b
        for _ in range(8):
            c = ((c << 1) ^ CRC8_POLY) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        table.append(c)
    return tuple(table)


CRC8_TABLE = _make_table()


def crc8_update(crc: int, byte: int) -> int:
    """One byte of CRC-8/SMBUS (what the hardware computes per received byte)."""
    return CRC8_TABLE[(crc ^ byte) & 0xFF]


def crc8(data: bytes | bytearray, crc: int = 0) -> int:
    for b in data:
        crc = CRC8_TABLE[crc ^ b]
    return crc


def encode_request(cmd: int, payload: bytes = b"") -> bytes:
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes exceeds 65535")
    body = bytes([cmd & 0xFF]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([REQ_SYNC]) + body + bytes([crc8(body)])


def encode_response(cmd: int, status: int, payload: bytes = b"") -> bytes:
    body = bytes([cmd & 0xFF, status & 0xFF]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([RSP_SYNC]) + body + bytes([crc8(body)])


def expected_request_length(cmd: int, n_inputs: int) -> int | None:
    """The exact payload length a command takes (None: variable, WRITE_WEIGHTS)."""
    return {Cmd.INFO: 0, Cmd.LOAD: n_inputs, Cmd.RUN: 0, Cmd.READ: 0}.get(cmd)


def max_request_payload(n_inputs: int) -> int:
    """The largest payload any request may carry on a design with ``n_inputs`` inputs: a LOAD's
    ``n_inputs`` bytes or a full WRITE_WEIGHTS frame, whichever is longer (whether or not the design
    serves weight writes). A longer length field gets ``BAD_LENGTH`` at once."""
    return max(n_inputs, WEIGHT_HEADER + MAX_WEIGHT_CHUNK)


def encode_weight_write(layer: int, col: int, offset: int, data: bytes) -> bytes:
    """The WRITE_WEIGHTS payload: header (layer u8, column u16, byte offset u16) and the bytes."""
    if not 1 <= len(data) <= MAX_WEIGHT_CHUNK:
        raise ValueError(f"a weight write carries 1..{MAX_WEIGHT_CHUNK} bytes, got {len(data)}")
    return struct.pack("<BHH", layer, col, offset) + bytes(data)


def weight_columns(weight_bits: np.ndarray, n_in: int) -> np.ndarray:
    """A layer's packed weights (n_out, ceil(n_in/8)) as the hardware model stores them (row j =
    neuron j) -> (n_in, ceil(n_out/8)) uint8, row i = input i's fan-out, little-endian bits."""
    w = np.unpackbits(np.asarray(weight_bits, dtype=np.uint8), axis=-1, count=n_in, bitorder="little")
    return np.packbits(np.ascontiguousarray(w.T), axis=-1, bitorder="little")


def weight_write_payloads(layers) -> list[bytes]:
    """WRITE_WEIGHTS payloads that write every weight of ``layers`` (hardware-model layers, with
    ``weight_bits`` and ``n_in``): one per column, split into :data:`MAX_WEIGHT_CHUNK`-byte pieces."""
    out = []
    for li, layer in enumerate(layers):
        cols = weight_columns(layer.weight_bits, layer.n_in)
        for i, col in enumerate(cols):
            for off in range(0, len(col), MAX_WEIGHT_CHUNK):
                out.append(encode_weight_write(li, i, off, col[off:off + MAX_WEIGHT_CHUNK].tobytes()))
    return out


@dataclass(frozen=True)
class Response:
    cmd: int
    status: int
    payload: bytes

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def status_name(self) -> str:
        try:
            return Status(self.status).name
        except ValueError:
            return f"0x{self.status:02x}"


class ResponseParser:
    """Incremental response-frame parser: feed bytes, collect complete :class:`Response` frames.

    Bytes before a sync byte are skipped and counted in ``skipped``; a frame with a wrong CRC is
    dropped and counted in ``crc_errors`` (the parser then resynchronises on the next sync byte).
    """

    def __init__(self, max_payload: int = 0xFFFF):
        self.max_payload = max_payload
        self.buf = bytearray()
        self.skipped = 0
        self.crc_errors = 0

    def feed(self, data: bytes) -> list[Response]:
        self.buf += data
        out = []
        while True:
            i = self.buf.find(bytes([RSP_SYNC]))
            if i < 0:
                self.skipped += len(self.buf)
                self.buf.clear()
                return out
            if i:
                self.skipped += i
                del self.buf[:i]
            if len(self.buf) < 5:
                return out
            n = self.buf[3] | (self.buf[4] << 8)
            if n > self.max_payload:
                self.crc_errors += 1
                del self.buf[:1]
                continue
            if len(self.buf) < RSP_OVERHEAD + n:
                return out
            frame = bytes(self.buf[: RSP_OVERHEAD + n])
            if crc8(frame[1:-1]) != frame[-1]:
                self.crc_errors += 1
                del self.buf[:1]
                continue
            del self.buf[: RSP_OVERHEAD + n]
            out.append(Response(frame[1], frame[2], frame[5:-1]))


@dataclass(frozen=True)
class Info:
    version: int
    flags: int
    n_inputs: int
    n_hidden: int
    n_classes: int
    n_result_words: int
    model_id: bytes
    #: lanes of the design's event cores (byte 7, reserved before: 0 means not reported), so that
    #: a host predicts the device's cycle counts
    lanes: int = 0

    @property
    def weight_write(self) -> bool:
        return bool(self.flags & FLAG_WEIGHT_WRITE)

    @property
    def weights_volatile(self) -> bool:
        return bool(self.flags & FLAG_WEIGHTS_VOLATILE)

    def to_bytes(self) -> bytes:
        return struct.pack(
            "<BBHBBBB4s", self.version, self.flags, self.n_inputs, self.n_hidden, self.n_classes,
            self.n_result_words, self.lanes, self.model_id,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "Info":
        if len(data) != INFO_LEN:
            raise ProtocolError(f"INFO payload of {len(data)} bytes, expected {INFO_LEN}")
        v, f, n, h, c, w, lanes, mid = struct.unpack("<BBHBBBB4s", data)
        return cls(v, f, n, h, c, w, mid, lanes)


def model_id(content_hash: str) -> bytes:
    """The 4-byte model id INFO reports: the first 4 bytes of the content hash."""
    return bytes.fromhex(content_hash[:8])


@dataclass(frozen=True)
class Result:
    """One inference as READ returns it."""

    klass: int
    cycles: int
    spike_counts: tuple[int, ...]
    scores: tuple[int, ...]

    @classmethod
    def from_words(cls, words, n_hidden: int) -> "Result":
        words = [int(w) & 0xFFFFFFFF for w in words]
        scores = tuple(int(np.int32(np.uint32(w))) for w in words[2 + n_hidden :])
        return cls(words[0], words[1], tuple(words[2 : 2 + n_hidden]), scores)

    @classmethod
    def from_bytes(cls, data: bytes, n_hidden: int, n_classes: int) -> "Result":
        k = result_words(n_hidden, n_classes)
        if len(data) != 4 * k:
            raise ProtocolError(f"READ payload of {len(data)} bytes, expected {4 * k}")
        return cls.from_words(struct.unpack(f"<{k}I", data), n_hidden)

    def to_bytes(self) -> bytes:
        words = [self.klass, self.cycles, *self.spike_counts, *(s & 0xFFFFFFFF for s in self.scores)]
        return struct.pack(f"<{len(words)}I", *words)
