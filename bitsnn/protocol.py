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

- ``INFO`` (no payload) -> 16 bytes: protocol version u8, flags u8 (bit 0: weight writes
  supported; bit 1: the weights are volatile -- SPRAM the bitstream does not initialise -- and must
  be written before the first RUN; bit 2: INFER served; bit 3: INFER carries pixels; bit 4: the
  convolutions are event stages), inputs u16, hidden layers u8, classes u8,
  result words u8, lanes u8, model id (the first 4 bytes of the hardware model's content hash),
  the UART's bit rate u32.
- ``LOAD`` (exactly ``inputs`` bytes, one uint8 pixel each; with ``given`` coding ``inputs`` is T
  times the model's inputs, every step's spikes 0/1 in the order of
  :func:`bitsnn.hwplan.stream_inputs`) -> no payload.
- ``RUN`` (no payload) -> no payload; starts an inference on the loaded image and replies at once.
- ``READ`` (no payload) -> ``4 * (2 + hidden + classes)`` bytes: the accelerator's result words as
  u32: class, cycle count, each hidden layer's spike count, then the class scores (int32).
- ``WRITE_WEIGHTS`` (u8 layer, u16 input column i, u16 byte offset b, then 1..:data:`MAX_WEIGHT_CHUNK`
  bytes) -> no payload. The bytes are bytes b, b+1, ... of column i of the layer's weights as
  :func:`weight_columns` lays them out (input i's fan-out: bit t of byte b is the weight to neuron
  8b+t, 1 = +1), and must not run past the column. ``BAD_ADDRESS`` for a layer, column or byte
  outside the model; ``UNSUPPORTED`` on designs whose weights are fixed in the bitstream. The
  design applies nothing until the frame's CRC is checked, then writes all its bytes.
- ``INFER`` (a tag u8, then the image: :func:`infer_payload`) -> the result bytes, as READ
  returns them, then the tag, once the inference is done. The tag (any value; a host counts its
  requests) ties a reply to its request, so a lost request cannot shift the results. The image is
  sent in groups of 8 inputs: a mask byte (bit t: input 8g + t is not 0), then, on pixel-input
  designs and ``rate``-coded ones (INFO flag :data:`FLAG_INFER_PIXELS`), the group's nonzero
  pixels in order. On a spike-input design that is the spikes packed 8 per byte
  (:func:`pack_spikes`); with ``given`` coding, every step's (:func:`infer_inputs`). The design holds :data:`INFER_SLOTS` images: a host may
  send the next INFER before the last one's reply comes (at most ``INFER_SLOTS`` unanswered), and
  the replies come in order; an INFER that finds every slot taken is answered ``BUSY``.

A request whose length field exceeds :func:`max_request_payload` (what no command takes) is
answered ``BAD_LENGTH`` as soon as the length is read; the design then ignores the line until it
has been quiet for the inter-byte timeout.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

from .hwplan import (WRITABLE_WEIGHT_BITS, input_values, output_layout, result_words, runtime_weights_problem,
                     stream_inputs, write_columns)

__all__ = [
    "PROTOCOL_VERSION",
    "REQ_SYNC",
    "RSP_SYNC",
    "Cmd",
    "Status",
    "FLAG_WEIGHT_WRITE",
    "FLAG_WEIGHTS_VOLATILE",
    "FLAG_INFER",
    "FLAG_INFER_PIXELS",
    "FLAG_EVENT_STAGES",
    "decode_infer_payload",
    "infer_slot_bytes",
    "infer_fits",
    "infer_carries_pixels",
    "infer_inputs",
    "input_values",
    "MAX_PAYLOAD",
    "INFER_SLOTS",
    "packed_input_bytes",
    "pack_spikes",
    "infer_payload",
    "infer_reply",
    "unpack_spikes",
    "image_traffic",
    "run_cycles",
    "BufferLayout",
    "buffer_layout",
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
    "write_column_bytes",
    "WRITABLE_WEIGHT_BITS",
    "weight_write_payloads",
    "model_id",
]

PROTOCOL_VERSION = 2
REQ_SYNC = 0xA5
#: the longest payload a frame carries: its length field has 16 bits
MAX_PAYLOAD = 0xFFFF
RSP_SYNC = 0x5A
CRC8_POLY = 0x07
#: header + crc bytes around a request / response payload
REQ_OVERHEAD = 5
RSP_OVERHEAD = 6
FLAG_WEIGHT_WRITE = 0x01
#: the design keeps (some) weights in memory the bitstream does not initialise (iCE40 SPRAM)
FLAG_WEIGHTS_VOLATILE = 0x02
#: the design serves INFER
FLAG_INFER = 0x04
#: INFER carries 8-bit pixels (their masks and nonzero values), not packed spikes
FLAG_INFER_PIXELS = 0x08
#: the design's convolutions are event stages (built with conv_engine "event"), so that a host
#: predicts its cycle counts with them
FLAG_EVENT_STAGES = 0x10
#: images a design holds for INFER: one being fed or run, the others waiting
INFER_SLOTS = 4
#: the most weight bytes one WRITE_WEIGHTS frame carries
MAX_WEIGHT_CHUNK = 256
#: WRITE_WEIGHTS header: layer u8, row u16, byte offset u16
WEIGHT_HEADER = 5
INFO_LEN = 16
#: the most lanes a design's event cores may have: INFO reports them in one byte
MAX_LANES = 255


class Cmd(enum.IntEnum):
    """Request command codes."""

    INFO = 0x01
    LOAD = 0x02
    RUN = 0x03
    READ = 0x04
    WRITE_WEIGHTS = 0x05
    INFER = 0x06


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
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds 65535")
    body = bytes([cmd & 0xFF]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([REQ_SYNC]) + body + bytes([crc8(body)])


def encode_response(cmd: int, status: int, payload: bytes = b"") -> bytes:
    body = bytes([cmd & 0xFF, status & 0xFF]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([RSP_SYNC]) + body + bytes([crc8(body)])


def expected_request_length(cmd: int, n_inputs: int) -> int | None:
    """The exact payload length a command takes (None: variable, WRITE_WEIGHTS)."""
    return {Cmd.INFO: 0, Cmd.LOAD: n_inputs, Cmd.RUN: 0, Cmd.READ: 0,
            Cmd.INFER: 1 + packed_input_bytes(n_inputs)}.get(cmd)  # spike input; pixels: 1 + masks + nonzero


@dataclass(frozen=True)
class BufferLayout:
    """The design's image buffer, in bytes: LOAD's pixels at 0, then the INFER slots (``slots`` of
    ``slot_bytes``, from ``slot_base``: an INFER's payload, its tag and packed spikes), then
    WRITE_WEIGHTS's staging area (from ``stage``)."""

    n_inputs: int
    slots: int
    slot_bytes: int
    weight_write: bool

    @property
    def slot_base(self) -> int:
        return self.n_inputs

    @property
    def stage(self) -> int:
        return self.slot_base + self.slots * self.slot_bytes

    @property
    def depth(self) -> int:
        return self.stage + (MAX_WEIGHT_CHUNK if self.weight_write else 0)


def infer_slot_bytes(n_inputs: int, *, pixels: bool) -> int:
    """The longest INFER payload: the tag, a mask byte per 8 inputs and, for pixels, every input."""
    return 1 + packed_input_bytes(n_inputs) + (int(n_inputs) if pixels else 0)


def infer_fits(n_inputs: int, *, pixels: bool) -> bool:
    """Whether INFER can carry an image of ``n_inputs`` inputs: its longest frame fits the 16-bit
    length field. A design serves INFER by default exactly then (hw.top.UARTTop, the estimate and
    the report's link timing all ask this)."""
    return infer_slot_bytes(n_inputs, pixels=pixels) <= MAX_PAYLOAD


def infer_carries_pixels(model) -> bool:
    """Whether INFER carries 8-bit pixels (masks and nonzero values) to a design of ``model``:
    pixel input, or ``rate`` coding (the design's generators compare the pixels); else the inputs
    as packed 0/1 spikes."""
    return model.input_encoding == "pixels" or model.input_coding == "rate"


def infer_inputs(model, x) -> np.ndarray:
    """(B, :func:`input_values`) uint8: what INFER carries for each of a batch
    (:func:`infer_payload`): the spikes the host thresholds (``threshold`` coding), else what the
    Accelerator's stream takes (:func:`bitsnn.hwplan.stream_inputs`: the pixels, or every step's
    given spikes in the input store's order)."""
    if model.input_coding == "threshold":
        return model.encode_input(x)
    return stream_inputs(model, x)


def buffer_layout(n_inputs: int, *, infer: bool, weight_write: bool, pixels: bool = False) -> BufferLayout:
    """The image buffer of a design with ``n_inputs`` inputs (see :class:`BufferLayout`)."""
    return BufferLayout(int(n_inputs), INFER_SLOTS if infer else 0, infer_slot_bytes(n_inputs, pixels=pixels),
                        bool(weight_write))


def packed_input_bytes(n_inputs: int) -> int:
    """INFER's payload: one bit per input spike."""
    return -(-int(n_inputs) // 8)


def pack_spikes(spikes) -> bytes:
    """One image's 0/1 input spikes (``HardwareModel.encode_input``) -> INFER's payload: bit t of
    byte b is spike 8b + t."""
    s = np.asarray(spikes, dtype=np.uint8).reshape(-1)
    if s.size and s.max() > 1:
        raise ValueError("spikes must be 0 or 1")
    return np.packbits(s, bitorder="little").tobytes()


def infer_payload(tag: int, values, *, pixels: bool = False) -> bytes:
    """INFER's payload: the tag byte, then per group of 8 inputs a mask byte (bit t: input 8g+t is
    not 0) and, with ``pixels``, the group's nonzero values. ``values``: one image's first-layer
    inputs (``HardwareModel.encode_input``), 0/1 spikes unless ``pixels``."""
    v = np.asarray(values, dtype=np.uint8).reshape(-1)
    if not pixels:
        return bytes([int(tag) & 0xFF]) + pack_spikes(v)
    masks = np.packbits(v != 0, bitorder="little")
    out = bytearray([int(tag) & 0xFF])
    for g, mask in enumerate(masks):
        out.append(int(mask))
        grp = v[8 * g: 8 * g + 8]
        out += grp[grp != 0].tobytes()
    return bytes(out)


def decode_infer_payload(payload: bytes, n_inputs: int, *, pixels: bool) -> tuple[int, np.ndarray]:
    """The inverse of :func:`infer_payload`: (tag, the n_inputs values); ProtocolError when the
    payload does not hold what its masks announce."""
    data = bytes(payload)
    if not pixels:
        if len(data) != 1 + packed_input_bytes(n_inputs):
            raise ProtocolError(f"INFER payload of {len(data)} bytes, expected {1 + packed_input_bytes(n_inputs)}")
        return data[0], unpack_spikes(data[1:], n_inputs)
    out = np.zeros(packed_input_bytes(n_inputs) * 8, np.uint8)
    pos = 1
    for g in range(packed_input_bytes(n_inputs)):
        if pos >= len(data):
            raise ProtocolError("INFER payload ends inside its masks")
        mask = data[pos]
        pos += 1
        for t in range(8):
            if mask >> t & 1:
                if pos >= len(data):
                    raise ProtocolError("INFER payload ends inside its pixels")
                out[8 * g + t] = data[pos]
                pos += 1
    if pos != len(data):
        raise ProtocolError(f"INFER payload has {len(data) - pos} bytes after its last group")
    return data[0], out[:n_inputs]


def infer_reply(payload: bytes, n_hidden: int, n_classes: int) -> tuple["Result", int]:
    """An INFER reply's payload -> (the result, the tag)."""
    if not payload:
        raise ProtocolError("empty INFER reply")
    return Result.from_bytes(payload[:-1], n_hidden, n_classes), payload[-1]


def unpack_spikes(data: bytes, n_inputs: int) -> np.ndarray:
    """The inverse of :func:`pack_spikes`: (n_inputs,) uint8 0/1."""
    return np.unpackbits(np.frombuffer(bytes(data), np.uint8), count=n_inputs, bitorder="little")


def run_cycles(n_inputs: int, cycles, n_words: int, *, infer_pixels: bool = False):
    """Clock cycles of one run in the UART top: the image fed one pixel per cycle (an INFER of
    pixels takes a cycle more per mask byte), the Accelerator's ``cycles`` (its cycle word), the
    result words stored one byte per cycle. (A pixel INFER may wait a cycle more for a byte
    behind a write to the buffer, at most one per byte the UART receives.)"""
    return n_inputs + (packed_input_bytes(n_inputs) if infer_pixels else 0) + cycles + 4 * n_words


def image_traffic(n_inputs: int, n_words: int, *, infer: bool, nonzero: float = 0.0) -> tuple[float, int]:
    """Bytes on the line per image, (to the device, from it): one INFER and its result reply
    (``nonzero``: the image's nonzero pixels, for a pixel INFER), or LOAD (8-bit pixels), RUN and
    READ with their replies."""
    result = RSP_OVERHEAD + 4 * n_words
    if infer:
        return REQ_OVERHEAD + 1 + packed_input_bytes(n_inputs) + nonzero, result + 1
    return 3 * REQ_OVERHEAD + n_inputs, 2 * RSP_OVERHEAD + result


def max_request_payload(n_inputs: int, slot_bytes: int = 0) -> int:
    """The largest payload any request may carry on a design with ``n_inputs`` inputs: a LOAD's
    ``n_inputs`` bytes, a full WRITE_WEIGHTS frame, or the design's longest INFER (``slot_bytes``),
    whichever is longest (whether or not the design serves weight writes). A longer length field
    gets ``BAD_LENGTH`` at once."""
    return max(n_inputs, WEIGHT_HEADER + MAX_WEIGHT_CHUNK, slot_bytes)


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


def write_column_bytes(model) -> list:
    """Per layer of ``model`` (a hardware model), the bytes WRITE_WEIGHTS writes: (columns, bytes)
    uint8, row i = the fan-out of weight-memory column i (:func:`bitsnn.hwplan.write_columns`:
    a dense layer after a convolution has a column per map-store address, padding columns 0).
    +-1 weights: bit t of byte b is the weight to neuron 8b+t, 1 = +1 (:func:`weight_columns`);
    b-bit weights (b in 2, 4, 8): byte b holds neurons (8/b)·b .. as two's-complement b-bit
    fields, the lowest neuron in the lowest bits. None for a convolution (not written at run time)."""
    out, prev = [], None
    for index, (layer, (ncol, nbytes)) in enumerate(zip(model.layers, write_columns(model))):
        if ncol == 0:
            out.append(None)
            prev = layer
            continue
        b = layer.bits
        if (why := runtime_weights_problem(layer, index)):
            raise ValueError(why)
        if b == 1:
            cols = weight_columns(layer.weight_bits, layer.n_in)
        else:
            per = 8 // b
            w = layer.weights_int().astype(np.int64).T & ((1 << b) - 1)  # (n_in, n_out)
            w = np.concatenate([w, np.zeros((layer.n_in, nbytes * per - layer.n_out), np.int64)], axis=1)
            cols = (w.reshape(layer.n_in, nbytes, per) << (b * np.arange(per))).sum(axis=2).astype(np.uint8)
        lay = output_layout(model, prev) if prev is not None else None
        if lay is not None:  # after a convolution or a timed layer: the store's order (even with no padding)
            wide = np.zeros((ncol, nbytes), np.uint8)
            wide[lay.step_layout.store_index()] = cols
            cols = wide
        out.append(cols)
        prev = layer
    return out


def weight_write_payloads(model) -> list[bytes]:
    """WRITE_WEIGHTS payloads that write every run-time weight of ``model`` (a hardware model;
    :func:`write_column_bytes`): one per column, split into :data:`MAX_WEIGHT_CHUNK`-byte pieces;
    a convolution's layer gets none."""
    out = []
    for li, cols in enumerate(write_column_bytes(model)):
        if cols is None:
            continue
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

    def __init__(self, max_payload: int = MAX_PAYLOAD):
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
    #: lanes of the design's event cores (0: not reported), so that a host predicts the device's
    #: cycle counts
    lanes: int = 0
    #: the UART's bit rate
    baud: int = 0

    @property
    def infer(self) -> bool:
        return bool(self.flags & FLAG_INFER)

    @property
    def infer_pixels(self) -> bool:
        return bool(self.flags & FLAG_INFER_PIXELS)

    @property
    def event_stages(self) -> bool:
        return bool(self.flags & FLAG_EVENT_STAGES)

    @property
    def weight_write(self) -> bool:
        return bool(self.flags & FLAG_WEIGHT_WRITE)

    @property
    def weights_volatile(self) -> bool:
        return bool(self.flags & FLAG_WEIGHTS_VOLATILE)

    def to_bytes(self) -> bytes:
        return struct.pack(
            "<BBHBBBB4sI", self.version, self.flags, self.n_inputs, self.n_hidden, self.n_classes,
            self.n_result_words, self.lanes, self.model_id, self.baud,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "Info":
        if data and data[0] != PROTOCOL_VERSION:
            raise ProtocolError(f"the device speaks protocol version {data[0]}, this host {PROTOCOL_VERSION}")
        if len(data) != INFO_LEN:
            raise ProtocolError(f"INFO payload of {len(data)} bytes, expected {INFO_LEN}")
        v, f, n, h, c, w, lanes, mid, baud = struct.unpack("<BBHBBBB4sI", data)
        return cls(v, f, n, h, c, w, mid, lanes, baud)


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
