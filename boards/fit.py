"""What ``bitsnn build`` decides from the estimate before it generates anything: the lanes of a
model with convolutions, the layers whose weights go to SPRAM. Plain data and NumPy (no amaranth),
so that ``bitsnn report`` and the flow take the lanes a build would, without a build."""

from __future__ import annotations

from bitsnn.hwmodel import HardwareModel

__all__ = ["DEFAULT_ACCEL", "INFER_LIMIT", "estimate_on", "fit_conv_lanes", "choose_spram_layers", "auto_lanes",
           "board_lanes"]

#: Generation parameters used for board builds: event-driven cores and 32-bit words; the lanes
#: default to bitsnn.hwplan.default_lanes(model) (32, more for a 129..256-neuron layer), fewer for
#: a model with convolutions that would not fit the board otherwise (:func:`fit_conv_lanes`).
DEFAULT_ACCEL = {"mode": "event", "word": 32}
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
    default), halved, not below 8, while the estimate without INFER is above ``INFER_LIMIT`` of the
    board's logic (the build then keeps INFER only where it still fits: lanes are latency, INFER
    link speed). A convolution's lanes are its adders and popcounts; fewer lanes cost cycles
    (more lane groups), never results. Models without convolutions keep their lanes."""
    from bitsnn.hwmodel import ConvLayer

    lanes = int(accel["lanes"])
    if not any(isinstance(layer, ConvLayer) for layer in model.layers):
        return lanes
    while lanes > 8:
        est = estimate_on(board, model, dict(accel, lanes=lanes, infer=False))
        if est["logic"] <= INFER_LIMIT * board.totals.logic:
            break
        lanes //= 2
    return lanes


def choose_spram_layers(board, model: HardwareModel, accel: dict) -> list[int]:
    """"auto": no SPRAM while the weights fit block RAM; otherwise move the dense layers with the
    most weight bits into SPRAM, largest first, until the block RAMs suffice (or SPRAM runs out)."""
    if board.totals.spram_blocks == 0:
        return []
    from bitsnn.hwmodel import ConvLayer
    from bitsnn.hwplan import WRITABLE_WEIGHT_BITS

    chosen: list[int] = []
    # dense layers only (a convolution's kernels stay in its ROM) whose weights a byte holds whole
    layers = model.layers
    order = sorted((l for l in range(len(layers))
                    if not isinstance(layers[l], ConvLayer) and layers[l].bits in WRITABLE_WEIGHT_BITS),
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
    for a model with convolutions."""
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
