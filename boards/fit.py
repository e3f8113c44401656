"""What ``bitsnn build`` decides from the estimate before it generates anything: the lanes of a
model with convolutions, the layers whose weights go to SPRAM. Plain data and NumPy (no amaranth),
so that ``bitsnn report`` and the flow take the lanes a build would, without a build."""

from __future__ import annotations

from bitsnn.hwmodel import HardwareModel
from bitsnn.hwplan import DEFAULT_WORD

__all__ = ["DEFAULT_ACCEL", "INFER_LIMIT", "estimate_on", "fit_conv_lanes", "choose_spram_layers", "auto_lanes",
           "board_lanes"]

#: Generation parameters used for board builds: event-driven cores and 32-bit words; the lanes
#: default to bitsnn.hwplan.default_lanes(model) (32, more for a 129..256-neuron layer), fewer for
#: a model with convolutions that would not fit the board otherwise (:func:`fit_conv_lanes`).
DEFAULT_ACCEL = {"mode": "event", "word": DEFAULT_WORD}
#: ``--infer auto`` leaves INFER out when, with it, the estimate passes this share of the logic cells
#: (nextpnr found no placement for the tiny SPRAM build with INFER: 96 % estimated, 5,071 / 5,280
#: LC; the tiny build with INFER, 92.7 % estimated, placed and met timing)
INFER_LIMIT = 0.94


def estimate_on(board, model: HardwareModel, accel: dict) -> dict:
    """The resource estimate of ``model`` built with ``accel`` for ``board`` (a
    :class:`~bitsnn.boards.BoardFacts` or :class:`~bitsnn.boards.common.Board`)."""
    from bitsnn.hw.estimate import estimate_resources

    return estimate_resources(model, family=board.family, **accel)


def fit_conv_lanes(board, model: HardwareModel, accel: dict) -> int:
    """The lanes for a model with convolutions when none are given: ``accel["lanes"]`` (the
    default), halved (not below 1, nor below what run-time weight writes into SPRAM layers take:
    :func:`bitsnn.hwplan.write_lanes_problem`) until the estimate fits within ``INFER_LIMIT`` of the board's
    logic *with INFER* (``accel["infer"]`` "auto" or "on"); only when no such count fits, the
    lanes that fit without it ("auto"; "off" fits without it from the start).

    The link and the core are chosen together: an image's INFER exchange takes longer than its
    compute at any of these lane counts, so INFER sets the images per second, and LOAD/RUN/READ,
    which leaves the line idle while the image computes, is several times slower. The 4-bit
    ``conv-tiny`` on the iCEBreaker measured 313 images/s end to end with 16 lanes and no INFER
    (docs/hardware.md). A convolution's lanes are its adders and popcounts; fewer lanes cost
    cycles (more lane groups), never results. So do a timed layer's membrane lanes (over T steps,
    :func:`bitsnn.hwplan.timed`). Models with neither keep their lanes."""
    from bitsnn import kinds
    from bitsnn.hwplan import timed, write_lanes_problem

    lanes = int(accel["lanes"])
    if not any(kinds.of(layer).output_is_map or timed(model, layer) for layer in model.layers):
        return lanes
    limit = INFER_LIMIT * board.totals.logic
    want = accel.get("infer", "auto")
    writes = bool(accel.get("spram_layers") or accel.get("writable"))

    def fit(infer) -> tuple[int, bool]:
        n = lanes
        while True:
            ok = estimate_on(board, model, dict(accel, lanes=n, infer=infer))["logic"] <= limit
            if ok or n <= 1 or (writes and write_lanes_problem(model, n // 2)):
                return n, ok
            n //= 2

    if want in ("auto", "on", None, True):
        n, ok = fit(None)  # None: INFER wherever an image fits a frame, as the top generates it
        if ok or want in ("on", True):
            return n
    return fit(False)[0]


def choose_spram_layers(board, model: HardwareModel, accel: dict) -> list[int]:
    """"auto": no SPRAM while the weights fit block RAM; otherwise move the dense layers with the
    most weight bits into SPRAM, largest first, until the block RAMs suffice (or SPRAM runs out)."""
    if board.totals.spram_blocks == 0:
        return []
    from bitsnn.hwplan import runtime_weights_problem

    chosen: list[int] = []
    layers = model.layers
    order = sorted((l for l in range(len(layers)) if runtime_weights_problem(layers[l], l) is None),
                   key=lambda l: -layers[l].n_in * layers[l].n_out * layers[l].bits)
    for l in [None, *order]:
        if l is not None:
            chosen = sorted([*chosen, l])
        est = estimate_on(board, model, dict(accel, spram_layers=chosen))
        if est["bram_blocks"] <= board.totals.bram_blocks or est["spram_blocks"] > board.totals.spram_blocks:
            return chosen
    return chosen


def auto_lanes(board, model: HardwareModel, accel: dict, spram) -> int:
    """The lanes a build takes when none are given: the default (with run-time weight writes, the
    ``spram`` layers, 8 x a power of two: :func:`bitsnn.hwplan.default_lanes`), fitted to the board
    for a model with convolutions or membranes."""
    from bitsnn.hwplan import default_lanes

    if spram:
        return fit_conv_lanes(board, model, dict(accel, lanes=default_lanes(model, writable=True), spram_layers=spram))
    return fit_conv_lanes(board, model, dict(accel, lanes=default_lanes(model)))


def board_lanes(board_name: str, model: HardwareModel, conv_engine: str = "auto") -> int:
    """The lanes ``bitsnn build --board board_name`` generates for ``model`` when none are given."""
    from bitsnn.hwplan import default_lanes

    from . import board_facts

    board = board_facts(board_name)
    accel = dict(DEFAULT_ACCEL, lanes=default_lanes(model), conv_engine=conv_engine)
    return auto_lanes(board, model, accel, choose_spram_layers(board, model, accel))
