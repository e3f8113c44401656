"""Resource estimate of a generated design without running any tool (milliseconds).

``estimate_resources(hwmodel, mode="event", lanes=32, word=32, ...)`` adds up per-block formulas
for the event-mode :class:`~bitsnn.hw.accelerator.Accelerator` inside the
:class:`~bitsnn.hw.top.UARTTop` board design. The large terms are counted exactly from the
generator's own sizing (accumulator bits per neuron, weight-memory words and the block RAM
geometry); the small ones (control, routers, FIFOs, UART top) are constants calibrated against
Yosys/nextpnr runs (docs/hardware.md, "Resource estimate", lists the formulas and the
estimate-vs-actual table).

Keys of the result: ``logic`` (LUT4 logic cells after packing: iCE40 LCs, ECP5 TRELLIS_COMB),
``luts`` (the iCE40 Yosys ``SB_LUT4`` count the model adds up), ``ffs``, ``bram_blocks``, ``bram_bits`` (bits of the blocks used), ``spram_blocks``, ``dsp_blocks`` (multipliers: SB_MAC16, MULT18X18D), and a
``breakdown`` of the estimate by block.
"""

from __future__ import annotations

import math

import numpy as np

from bitsnn import protocol as proto
from bitsnn.hwplan import HardwarePlan, ceil_log2, neuron_accumulator, preact_bits, signed_bits
from bitsnn.kinds import part

__all__ = ["FAMILIES", "estimate_resources", "estimate_dense", "estimate_conv", "estimate_gap", "bram_blocks_for", "membrane_lanes"]

#: block RAM geometries (depth, width) of one block, and the block size in bits
FAMILIES = {
    "ice40": {"block_bits": 4096, "geometries": [(256, 16), (512, 8), (1024, 4), (2048, 2)],
              "spram_depth_bytes": 16 * 1024},
    "ecp5": {"block_bits": 18 * 1024, "geometries": [(512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2),
                                                    (16384, 1)], "spram_depth_bytes": 0},
}


def bram_blocks_for(family: str, width: int, depth: int) -> tuple[int, int]:
    """(blocks, banks): the fewest blocks holding ``depth`` words of ``width`` bits, and how many
    blocks deep that is (the read-data multiplexer has that many inputs). Full-width columns of
    one geometry, plus, for a width that is not a multiple of it, one narrower column of the
    best other geometry (as Yosys maps a 40-bit memory: two 16-bit columns and one 8-bit one)."""
    geos = FAMILIES[family]["geometries"]

    def single(w_, depth_):
        return min((math.ceil(w_ / w) * math.ceil(depth_ / d), -w, math.ceil(depth_ / d)) for d, w in geos)

    best = single(width, depth)
    for d, w in geos:
        cols, rest = divmod(width, w)
        if cols and rest:
            r = single(rest, depth)
            n = cols * math.ceil(depth / d) + r[0]
            if n < best[0]:
                best = (n, -w, max(math.ceil(depth / d), r[2]))
    return best[0], best[2]


def neuron_acc_bits(layer, n_lo, n_hi, sums: int = 1) -> int:
    """Sum of the accumulator widths of neurons n_lo..n_hi-1, as the generator sizes them
    (:func:`bitsnn.hwplan.neuron_accumulator`): the ``step`` neuron model's ``estimate`` part
    (:mod:`bitsnn.kinds`). An output layer adding ``sums`` input maps' sums holds theirs."""
    r = layer.a_max
    if layer.is_output:
        return (n_hi - n_lo) * neuron_accumulator(None, None, r * sums)[2]
    return int(sum(neuron_accumulator(th, c, r)[2]
                   for th, c in zip(layer.thresholds[n_lo:n_hi], layer.compare[n_lo:n_hi])))


def membrane_lanes(layer, lanes: int, width: int, acc_bits: int, bias_in_acc: bool = False,
                   steps: int = 1) -> tuple[float, float]:
    """(LUTs, flip-flops) of a timed stage's P = ``lanes`` membrane lanes of ``width`` bits on
    ``acc_bits``-bit sums
    (:class:`bitsnn.hw.neuron.MembraneLanes`): the ``if``/``lif`` neuron models' ``estimate`` part
    (:mod:`bitsnn.kinds`). A stateful lane: its (V+1)-bit chain of adders (the input, V - theta
    for the compare and the reset, the bias unless the accumulators start at it, the leak: one
    for m = 2^(16-k), one per set bit of any other m, the threshold of the last spike), the step-0 select and the reset's multiplexer, the V-bit register
    and the last spike; a step lane in a timed stage: the compare. Per-group constants cost
    nothing (G small)."""
    P, V = lanes, width
    A = acc_bits + 1
    if not layer.neuron_model.stateful:
        return P * A * _CAL["membrane_cmp_luts_per_bit"], 0.0
    if layer.neuron_model.signed:  # signed_if: the input and bias, V - theta, V + theta (a -1 spike);
        # the start (theta/2) and the result's selects; the count of 0..T (its register and +-1)
        nc = ceil_log2(steps + 1)
        return (P * (V + 1) * 5 * _CAL["membrane_luts_per_adder_bit"] + P * 3 * nc,
                P * (V + 1) + P * nc)
    # a leak m = 2^(16-k) is one subtraction of V >> k; any other m multiplies, V * m as the
    # shift-and-add of its set bits, then the subtraction
    m = int(layer.leak)
    leak = 0 if m == 0 else 1 if m & (m - 1) == 0 else bin(m).count("1")
    adders = 2 + (not bias_in_acc) + leak + (layer.reset == "subtract-next")
    muxes = 1 + (layer.reset != "subtract-next")
    return P * (V + 1) * (adders + muxes) * _CAL["membrane_luts_per_adder_bit"], P * (V + 1)


def _mux_luts(k: int) -> float:
    """LUT4s per output bit of a k:1 multiplexer with registered select (measured ~0.6 per input)."""
    return 0.0 if k <= 1 else 0.6 * k


# Calibrated constants (iCE40 UP5K and ECP5-85F builds of the tiny model, docs/hardware.md).
_CAL = {
    # per core: sequencing, beat register, group select, stage-1 registers
    "core_luts": 45, "core_ffs": 30,
    # per router of chunk W: priority encoder, clear-lowest, chunk register and index
    "router_luts_per_bit": 3.2, "router_ffs_extra": 12,
    # per FIFO (SyncFIFOBuffered) of depth d and payload b bits
    "fifo_luts_per_bit": 2.6, "fifo_ffs_per_entry_bit": 1.0,
    # accelerator sequencer, argmax, cycle counter, result-word mux: 200 before the argmax read the
    # rotating scores[0] instead of a C:1 multiplexer; the trained conv-tiny build then went from
    # 4,743 to 4,645 LC on the iCE40, the trained `conv` build from 15,430 to 15,653 cells on the
    # ECP5 (its wide multiplexers were cheap PFUMX/L6MUX; the rotation's 2:1 muxes are LUT4s):
    # 200 - 98, and 200 + 223 / 1.61 (the ECP5 factor with memory accumulators, the ECP5 default)
    "accel_luts": 102, "ecp5_accel_luts": 339, "accel_ffs": 55,
    # input buffer per bit of W: word assembly register and write data, pixel index
    "input_luts_per_bit": 3.5, "input_ffs_per_bit": 3.5,
    # T input maps (given or rate input): the step and channel counters, the items of T bits (Yosys
    # synth_ice40 of the buffer alone, 784 inputs at T = 4, given: +12 to +19 LUTs, +6 FFs); rate
    # input, per step: its xorshift32 generator (32 state FFs, the XOR network) and the 8-bit
    # compare (rate against threshold input: +125, +250..259, +456 LUTs at T = 2, 4, 8)
    "coded_input_luts": 15, "coded_input_ffs": 6, "rate_luts_per_step": 57, "rate_ffs_per_step": 32,
    # UART top (UARTs, parser, CRC, responder, runner), board reset; its result bytes are a block RAM
    "top_luts": 740, "top_ffs": 228,
    # iCE40 packing: flip-flops other than the accumulators that share a cell with their LUT
    "ice40_other_ff_packed": 0.09,
    # memory accumulators (ECP5): cells per DPR16X4 LUT-RAM cell; threshold ROM + compare per bit
    "lutram_luts_per_cell": 3.0, "mem_cmp_luts_per_bit": 1.0, "mem_ffs_per_acc_bit": 0.5,
    # ECP5: TRELLIS_COMB cells per estimated non-accumulator LUT (registers / memory accumulators)
    "ecp5_other_logic_factor": 2.36, "ecp5_other_logic_factor_memory": 1.61,
    # ROMs up to this many bits become logic rather than a block RAM (Yosys's cost choice)
    "ice40_rom_logic_bits": 1024, "ecp5_rom_logic_bits": 2048,
    # run-time weight writes: per core (address, lane decode, flips) and in the UART top (header,
    # commit and registered checks); fitted to the two SPRAM builds in docs/hardware.md
    "write_luts_per_core": 20, "write_top_luts": 200, "write_top_ffs": 150,
    # a dense core's weight address i*G + g when G is not a power of two, per address bit and
    # multiply: synth_ice40 -dsp of the output stage (10 neurons, 4-bit weights in SPRAM) of two
    # trained conv-tiny models at 2, 4 and 8 lanes: G = 3 took 84 and 98 LUTs and 2 SB_MAC16 more
    # than G = 2 (13 address bits, two multiplies)
    "group_mul_luts_per_bit": 3.5,
    # INFER (hw/top.py): slot state, byte FIFO and mask feeder, tag, the responder's waiting reply;
    # checked on the tiny iCE40 build (estimate 4,894 LC, real 4,920; docs/hardware.md)
    "infer_top_luts": 150, "infer_pixel_luts": 30, "infer_top_ffs": 90,
    # convolution stage (hw/conv.py), fitted to synth_ice40 of four ConvCores: counters, tap and
    # slot tables, flush control and the output store's shifters (constant), per accumulator-word
    # bit; a pixel input's wider operands; the input buffer's pixel-position counters
    "conv_core_luts": 215, "conv_acc_luts_per_bit": 2.47, "conv_pixel_luts_per_bit": 1.1,
    "conv_core_ffs": 30, "conv_ffs_per_acc_bit": 1.1, "conv_input_luts": 20,
    # the same with b-bit kernels times pixels, the multiply and accumulate in SB_MAC16s (synth_ice40
    # -dsp of the trained 4-bit conv-tiny's first ConvCore, P x A = 8 x 16: 493 LUTs, 8 SB_MAC16;
    # the binary one's, 8 x 14: 627 LUTs)
    "conv_dsp_luts_per_acc_bit": 2.17,
    "bypass_luts": 36, "bypass_luts_per_bit": 1.23,
    # ECP5: a convolution layer's TRELLIS_COMB cells and flip-flops, all of its part (core, ROM,
    # router, store), per layer and per accumulator-word bit (P*A): least squares over four ULX3S
    # builds of 784-cC1-cC2-10 stand-ins, three with pixel input (C1 = 8, 16, 32) and one with
    # spike input (C1 = 16); cells -0.7 %, -4.0 %, +1.0 %, +4.0 %, flip-flops within 1 % (each
    # left out of the fit: within 5.7 % and 1.4 %). The iCE40 LUT terms scaled by one ECP5 factor
    # gave +10 % to +36 %; the iCE40 flip-flop terms, +8 % to +20 %.
    "ecp5_conv_layer_logic": 1354, "ecp5_conv_logic_per_acc_bit": 1.68,
    # an event stage of T input maps (a bank of accumulators per step), per accumulator-word bit
    # and bit of the bank number: least squares over two ULX3S builds at 32 lanes, T = 4 lif
    # models with conv2 an event stage: conv-tiny's layers (9,373 cells, estimate +3.5 %; 8,169
    # without the term) and 784-c16w4-c32w4-10w4 (11,430 at 40 MHz, estimate -2.2 %; 9,064
    # without). The iCE40 terms need none: conv-tiny's iCEBreaker build at 4 lanes came out at
    # 4,830 LC against 4,841
    "ecp5_conv_bank_logic_per_acc_bit": 3.0,
    "ecp5_conv_layer_ffs": 153, "ecp5_conv_ffs_per_acc_bit": 1.46,
    # window stage (hw/conv.py WindowCore): control, tap address, pooled write (constant); per lane
    # (adder and start-value multiplexer beyond its A bits) and per lane and input-channel bit
    # (the AND-popcount and the weight table); fitted to three iCEBreaker builds (P x C = 16 x 8
    # pixel-input conv-tiny, 32 x 8, 16 x 16; docs/hardware.md), which it meets exactly
    "window_core_luts": 365, "window_luts_per_lane": 13.4, "window_luts_per_lane_bit": 1.96,
    # its pipeline and counter flip-flops (fitted to the same builds' 1,744 and 1,755), packed
    # with the logic they feed
    "window_core_ffs": 290, "window_rom_luts_factor": 1.5,
    # ECP5: a window layer's TRELLIS_COMB cells per layer and per lane-and-channel bit (its
    # AND-popcount, and its weight table weighted by depth as above), fitted to two ULX3S builds
    # (the trained `conv`, P x C = 32 x 32 in 2 groups, and a 784-c16-c32-10 stand-in, 32 x 16),
    # which it meets; its flip-flops as on the iCE40 plus a constant fitted to the same builds
    "ecp5_window_layer_logic": 1802, "ecp5_window_logic_per_bit": 2.085, "ecp5_window_layer_ffs": 255,
    # membrane lanes of a timed stage (hw/neuron.py): LUTs per bit of each adder and multiplexer
    # of a lane's update chain (synth_ice40 of the trained T = 4 lif conv-tiny's two timed stages,
    # 8 lanes each: 576 and about 700 LUTs over the one-step cores, 0.76 and 0.81 of one per bit);
    # per bit of a step lane's compare. ECP5: cells per such bit, fitted to the ULX3S build of that
    # model at 32 lanes (9,753 cells; the rest of the estimate taken as it is)
    # a timed convolution stage's lane groups beyond one, per bit of the group number (the
    # per-group thresholds, biases and start values selected for the lanes, the group's step
    # sequencing): fitted to the trained T = 4 lif conv-tiny on the iCEBreaker, built at 4 lanes
    # (5,022 LC; G = 2 and 8) and at 2 (4,921 LC with INFER; G = 4 and 16), -7.7 % and -12.8 %
    # without it; synth_ice40 of each stage alone at 2, 4 and 8 lanes moved by 56 to 106 LUTs a
    # doubling of G against the estimate
    "timed_conv_luts_per_group_bit": 60,
    "membrane_luts_per_adder_bit": 0.78, "membrane_cmp_luts_per_bit": 1.0, "ecp5_membrane_cells_per_lut": 0.58,
    # a timed dense layer (hw/core.py EventCore ``timed``): the accumulators' load and enable
    # beyond their adders, per accumulator bit, and a factor on its lanes' terms (membranes, group
    # constants, the read-out multiplexer), least squares over synth_ice40 of trained 576-64-10
    # (16 and 8 lanes) and 576-128-10 (8 lanes) lif models over 4 steps: +1.4 %, -5.0 %, +1.1 %
    "timed_acc_luts_per_bit": 0.63, "timed_lane_factor": 0.94,
    # global sum pooling head (hw/stage.py GapStage), beyond its router and FIFO: per class (its
    # table entry, one-hot register and enable) and per score-counter bit, fitted to synth_ice40 -dsp of
    # the stage alone for the trained 784-c8w4-c32-c10p1w4-gap and -c40p1w4-gap10 heads (344 and
    # 377 LUTs with the router), which it meets; two random heads (5 classes of 4 channels, and 10
    # classes over 2 steps) came out 7.6 % and 0.6 % under
    "gap_luts_per_class": 11.5, "gap_luts_per_counter_bit": 1.4,
}


class _Estimate:
    """The running sums of one estimate, by block, and what every kind's terms read."""

    def __init__(self, *, plan, family, acc_style, writable, spram_layers):
        self.plan, self.family, self.acc_style = plan, family, acc_style
        self.writable, self.spram_layers = writable, spram_layers
        self.block_bits = FAMILIES[family]["block_bits"]
        self.parts = {}

    def add(self, name, luts=0.0, ffs=0.0, packed=0.0, blocks=0, bits=0, spram_blocks=0, ecp5_logic=None,
            ecp5_ffs=None, dsp=0):
        """Add to block ``name``. ``ecp5_logic`` / ``ecp5_ffs``: the block's ECP5 logic cells and
        flip-flops, fitted directly (then its LUTs do not go through the ECP5 factor, and its
        iCE40 flip-flop terms are not used on the ECP5)."""
        p = self.parts.setdefault(name, {"luts": 0.0, "ffs": 0.0, "packed": 0.0, "bram_blocks": 0, "bram_bits": 0,
                                         "spram_blocks": 0, "dsp_blocks": 0, "ecp5_logic": None, "ecp5_ffs": None})
        if ecp5_logic is not None:
            p["ecp5_logic"] = (p["ecp5_logic"] or 0.0) + ecp5_logic
        if ecp5_ffs is not None:
            p["ecp5_ffs"] = (p["ecp5_ffs"] or 0.0) + ecp5_ffs
        p["luts"] += luts
        p["ffs"] += ffs
        p["packed"] += packed
        p["bram_blocks"] += blocks
        p["bram_bits"] += bits
        p["spram_blocks"] += spram_blocks
        p["dsp_blocks"] += dsp

    def rom(self, name, width, depth):
        """A weight ROM: logic when small (Yosys's choice), else block RAM."""
        if width * depth <= _CAL[f"{self.family}_rom_logic_bits"]:
            self.add(name, luts=width * depth / 16)
        else:
            blocks, banks = bram_blocks_for(self.family, width, depth)
            self.add(name, luts=width * _mux_luts(banks), blocks=blocks, bits=blocks * self.block_bits)

    def router(self, li, layer, lp):
        """A layer's router and event FIFO, and the word select of a previous dense layer's spikes."""
        cal, W, k = _CAL, self.plan.word, self.plan.k
        beat = max(1, math.ceil(math.log2(max(2, layer.n_in)))) * k + k.bit_length() + 1
        self.add(f"layer{li}", luts=cal["router_luts_per_bit"] * W * k + cal["fifo_luts_per_bit"] * beat,
                 ffs=W + cal["router_ffs_extra"] + self.plan.fifo_depth * beat * cal["fifo_ffs_per_entry_bit"])
        if li > 0 and lp.input_layout is None:  # registered W-bit word select of the previous layer's spikes
            self.add(f"layer{li}", luts=W * _mux_luts(-(-layer.n_in // W)), ffs=W)


def store_blocks(family: str, width: int, depth: int) -> int:
    """Block RAMs of a convolution's output store, written with one enable per bit (the OR pool).
    The iCE40's SB_RAM40_4K has a per-bit write mask: as any memory. On the ECP5, Yosys gives each
    bit a byte lane of its own, 4 bits per 36-bit DP16KD, 512 deep, and puts a store of at most 64
    words into LUT RAM (measured with synth_ecp5 on 16-, 32- and 64-bit stores of 32 to 1,800 words;
    docs/hardware.md)."""
    if family == "ecp5":
        return 0 if depth <= 64 else -(-width // 4) * -(-depth // 512)
    return bram_blocks_for(family, width, depth)[0]


def estimate_conv(est: _Estimate, li: int, layer, lp) -> None:
    """The ``binary_conv2d`` kind's terms (:class:`~bitsnn.hw.stage.ConvStage`)."""
    cal, family, W, add, block_bits = _CAL, est.family, est.plan.word, est.add, est.block_bits
    cp, name = lp.conv, f"layer{li}"
    P, G, kern = cp.lanes, cp.groups, cp.kernel
    A = cp.acc_bits
    if cp.engine == "window":
        _estimate_window(est, li, layer, lp)
        return
    blocks, banks = bram_blocks_for(family, P * A, cp.acc_words)
    # accumulator memory; the logic grows with its P*A-bit word (the P adders, the write-first
    # bypass, the start-value and spike paths): fitted to Yosys runs of four ConvCores
    # (P*A 24..144, docs/hardware.md); a pixel input's +-x operands widen every adder. Its
    # flip-flops sit behind that logic and share its cells.
    pa = P * A
    # b-bit kernels times pixels: one multiplier a lane, which Yosys puts into a DSP block
    # (SB_MAC16 with -dsp, MULT18X18D) together with the accumulate
    dsp = P if layer.input_kind == "pixels" and cp.wbits > 1 else 0
    if dsp and family == "ice40":
        luts = cal["conv_core_luts"] + cal["conv_dsp_luts_per_acc_bit"] * pa + P * _mux_luts(banks)
    else:
        luts = cal["conv_core_luts"] + cal["conv_acc_luts_per_bit"] * pa + P * _mux_luts(banks)
        if layer.input_kind == "pixels":
            luts += cal["conv_pixel_luts_per_bit"] * pa
    ffs = cal["conv_core_ffs"] + cal["conv_ffs_per_acc_bit"] * pa
    add(name, luts=luts, ffs=ffs, packed=ffs, blocks=blocks, bits=blocks * block_bits, dsp=dsp)
    # in the whole design, the block RAM's write-first bypass: a P*A-bit register of its own
    # cells and a multiplexer (fitted to two iCEBreaker builds of conv models)
    add(name, luts=cal["bypass_luts"] + cal["bypass_luts_per_bit"] * pa, ffs=pa)
    est.rom(name, P * cp.wbits, layer.in_shape[0] * kern * kern * G)
    add(name, blocks=(ob := store_blocks(family, W, -(-cp.out_layout.size // W))), bits=ob * block_bits)
    _membranes(est, name, layer, cp)
    est.router(li, layer, lp)
    # spike count: the next router's events, added up
    add(name, luts=layer.n_out.bit_length(), ffs=layer.n_out.bit_length())
    if family == "ecp5":
        banked = cal["ecp5_conv_bank_logic_per_acc_bit"] * pa * ceil_log2(cp.banks)
        add(name, ecp5_logic=cal["ecp5_conv_layer_logic"] + cal["ecp5_conv_logic_per_acc_bit"] * pa + banked,
            ecp5_ffs=cal["ecp5_conv_layer_ffs"] + cal["ecp5_conv_ffs_per_acc_bit"] * pa)


def _membranes(est: _Estimate, name: str, layer, cp) -> None:
    """A timed stage's membrane lanes (:func:`membrane_lanes`), their flip-flops packed with the
    logic that feeds them."""
    if cp.timed:
        luts, ffs = membrane_lanes(layer, cp.lanes, cp.membrane_bits, cp.acc_bits, cp.bias_in_acc)
        luts += _CAL["timed_conv_luts_per_group_bit"] * ceil_log2(cp.groups)
        ecp5 = est.family == "ecp5"  # the layer's cells are fitted there: these add to them
        est.add(name, luts=luts, ffs=ffs, packed=ffs, ecp5_logic=luts * _CAL["ecp5_membrane_cells_per_lut"] if ecp5 else None,
                ecp5_ffs=ffs if ecp5 else None)


def _estimate_window(est: _Estimate, li: int, layer, lp) -> None:
    """A window stage (:class:`~bitsnn.hw.conv.WindowCore`): P lanes of a C-bit AND-popcount
    (C = the padded input channels) into an A-bit accumulator register each (adder and start-value
    multiplexer, packed with its flip-flop), the tap's C bits picked out of the W-bit input word,
    the weight ROM (P*C bits x G*k*k taps), counters, tap address and the pooled write (constant),
    the output store, the ``seen`` counter. No router, FIFO or accumulator memory."""
    cal, family, W, add, block_bits = _CAL, est.family, est.plan.word, est.add, est.block_bits
    cp, name = lp.conv, f"layer{li}"
    P, G, C, A = cp.lanes, cp.groups, cp.in_channels_padded, cp.acc_bits
    luts = (cal["window_core_luts"] + P * (cal["window_luts_per_lane_bit"] * C + A + cal["window_luts_per_lane"])
            + C * _mux_luts(W // C) + C)
    ffs = cal["window_core_ffs"] + P * A + C
    add(name, luts=luts, ffs=ffs, packed=P * A + cal["window_core_ffs"])
    # the weight table in logic: per bit, a function of the log2(G*k*k)-bit tap number
    rows = G * cp.taps
    rom_per_bit = max(1.0, rows / 16) * (1.0 if rows <= 16 else cal["window_rom_luts_factor"])
    add(name, luts=P * C * rom_per_bit)
    add(name, blocks=(ob := store_blocks(family, W, -(-cp.out_layout.size // W))), bits=ob * block_bits)
    _membranes(est, name, layer, cp)
    seen = cp.in_layout.size.bit_length()
    add(name, luts=seen, ffs=seen)
    if family == "ecp5":
        add(name, ecp5_logic=cal["ecp5_window_layer_logic"] + cal["ecp5_window_logic_per_bit"] * P * C * (1 + rom_per_bit),
            ecp5_ffs=cal["ecp5_window_layer_ffs"] + P * A + C + seen)


def estimate_dense(est: _Estimate, li: int, layer, lp) -> None:
    """The ``binary_dense`` kind's terms (:class:`~bitsnn.hw.stage.DenseStage`, event cores)."""
    cal, family, add, block_bits, plan = _CAL, est.family, est.add, est.block_bits, est.plan
    name = f"layer{li}"
    for core in lp.cores:
        off, n, P, G = core.first, core.n, core.lanes, core.groups
        PB = P * lp.wbits  # the weight word: P lanes of b bits
        rom_luts = 0.0
        if layer.input_kind == "pixels" and lp.wbits > 1:  # a multiplier a lane (not fitted to a build)
            add(name, dsp=P)
        if li in est.spram_layers:
            # 16-bit columns side by side, 16 k-word rows stacked; an address mux (write/read)
            cols, rows = -(-(-(-PB // 8) * 8) // 16), -(-(layer.n_in * G) // (16 * 1024))
            add(f"layer{li}", spram_blocks=cols * rows, luts=ceil_log2(layer.n_in * G))
            blocks, banks = 0, rows
        else:
            # one row per input at one step (:attr:`~bitsnn.hwplan.LayerPlan.weight_columns`): every
            # step's event of an input reads the same row
            depth = lp.weight_columns * G
            blocks, banks = bram_blocks_for(family, PB, depth)
            if not est.writable and PB * depth <= _CAL[f"{family}_rom_logic_bits"]:
                blocks, banks, rom_luts = 0, 1, PB * depth / 16  # Yosys makes a small ROM logic
        if est.writable:  # write address (i*G + g), byte-lane decode, flip table, data replication
            add(f"layer{li}", luts=cal["write_luts_per_core"] + -(-n // 8) + ceil_log2(layer.n_in * G))
        if G & (G - 1):  # i*G + g by a G not a power of two: a multiply (a SB_MAC16 on the iCE40)
            muls = 1 + est.writable  # and its add, for the read address and the write address
            add(name, luts=muls * cal["group_mul_luts_per_bit"] * ceil_log2(lp.weight_columns * G),
                dsp=muls if family == "ice40" else 0)
        acc = neuron_acc_bits(layer, off, off + n, lp.in_steps)
        if lp.timed:
            # a bank of register accumulators per input map (c * a from 0); the read-out's group
            # and bank multiplexers into P registered sums; the membrane lanes, their thresholds
            # and biases per group (a constant table when G > 1); the spike register of every
            # step, a write enable a bit, and its word reads
            A = preact_bits(layer.a_max)
            banks, T = lp.in_steps, lp.out_steps
            S = lp.out_layout.signs  # signed spikes: a +1 and a -1 bit each
            # (each flip-flop here sits behind its own LUT: the adder, the multiplexer, the write
            # enable; a signed input spike flips the weight bit inside the adder's LUT)
            # A signed layer's spike register did not pack with its LUTs: the 576-64-10 signed_if
            # build at 4 lanes took 5,156 LC against 4,755 estimated with it packed (its 384 bits)
            add(name, luts=(1 + cal["timed_acc_luts_per_bit"]) * banks * n * A,
                ffs=banks * n * A + P * A + T * n * S, packed=banks * n * A + P * A + (T * n if S == 1 else 0))
            luts, ffs = membrane_lanes(layer, P, lp.membrane_bits, A, steps=T)
            consts = 2 * P * max(signed_bits(int(v)) for v in [*layer.thresholds, *layer.bias]) if G > 1 else 0
            lane = luts + consts + P * A * (_mux_luts(banks * G) or 1)
            add(name, luts=cal["timed_lane_factor"] * lane + T * n * S + plan.word * _mux_luts(lp.out_layout.size // plan.word),
                ffs=ffs, packed=ffs)
        elif est.acc_style == "registers":
            # accumulators: one adder LUT (with carry) per bit, packed with its flip-flop (a signed
            # input spike flips the weight bit inside it)
            add(name, luts=acc, ffs=acc, packed=acc)
        else:
            # G-deep accumulator memory in LUT RAM (16 x 4 per DPR16X4 cell), P adders of A bits
            # shared by the groups (packed as above), transparent-read bypass, threshold ROM of G
            # words and P comparators at read-out, the accelerator's N-bit spike register
            A = lp.acc_bits
            lutram = math.ceil(P * A / 4) * math.ceil(G / 16)
            add(name, luts=P * A + cal["lutram_luts_per_cell"] * lutram,
                ffs=cal["mem_ffs_per_acc_bit"] * P * A * min(1.0, G / 32), packed=P * A)
            if not layer.is_output:
                add(name, luts=cal["mem_cmp_luts_per_bit"] * P * (A + 1) * max(1, G / 16), ffs=n)
        # weight ROM read-data multiplexer across the banks
        add(name, luts=PB * _mux_luts(banks) + rom_luts, blocks=blocks, bits=blocks * block_bits)
        # control; spike read-out multiplexer; output-layer score registers (core and accelerator)
        out_ffs = 0
        if layer.is_output:
            out_ffs = P * preact_bits(layer.a_max * lp.in_steps)
        add(name, luts=cal["core_luts"] + P * _mux_luts(G) + (0 if layer.is_output else 2 * P),
            ffs=cal["core_ffs"] + P + out_ffs)
        if layer.is_output:  # the accelerator's score registers
            add("accelerator", ffs=n * plan.score_bits)
    est.router(li, layer, lp)
    if not layer.is_output:  # spike count: popcount of P bits per group
        add(name, luts=2 * min(plan.lanes, layer.n_out), ffs=layer.n_out.bit_length())


def estimate_gap(est: _Estimate, li: int, layer, lp) -> None:
    """The ``global_pool`` kind's terms (:class:`~bitsnn.hw.stage.GapStage`): its router and
    event FIFO; per class, its entry of the channel-to-class table and its one-hot register; per
    score counter bit, the adder and the start clear and argmax rotation (packed with its
    flip-flop); the ``done`` delay. Fitted to synth_ice40 of the stage alone (see ``_CAL``)."""
    cal, A, n = _CAL, est.plan.score_bits, layer.n_out
    est.add(f"layer{li}", luts=cal["gap_luts_per_class"] * n + cal["gap_luts_per_counter_bit"] * n * A,
            ffs=n + n * A + 4, packed=n * A)
    est.router(li, layer, lp)


def estimate_resources(hwmodel, *, mode: str = "event", lanes: int = 32, word: int = 32, k: int = 1,
                       max_neurons_per_core: int | None = None, fifo_depth: int = 4,
                       family: str = "ice40", top: str = "uart", spram: bool | None = None,
                       accumulators: str = "auto", writable: bool = False, spram_layers=(), conv_engine: str = "auto",
                       infer: bool | None = None) -> dict:
    """Estimate the resources of ``UARTTop(Accelerator(hwmodel, mode=..., lanes=..., word=...))``.

    ``family``: "ice40" or "ecp5" (block RAM geometry, SPRAM, packing). ``top``: "uart" (the board
    design) or None (the Accelerator alone). ``spram``: the image buffer in SPRAM (default: on
    iCE40, as on the UP5K). ``accumulators``: as the Accelerator's ("auto": memory on ECP5,
    registers on iCE40). ``writable``/``spram_layers``: as the Accelerator's (a SPRAM layer's
    weights take 16-bit x 16 k-word SB_SPRAM256KA tiles instead of block RAM). Only event mode is
    modelled.
    """
    if mode != "event":
        raise ValueError("only mode='event' is modelled")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {tuple(FAMILIES)}, not {family!r}")
    if spram is None:
        spram = family == "ice40"
    plan = HardwarePlan.of(hwmodel, mode=mode, lanes=lanes, word=word, k=k,
                           max_neurons_per_core=max_neurons_per_core, fifo_depth=fifo_depth, conv_engine=conv_engine)
    spram_layers = frozenset(spram_layers)
    if spram_layers and family != "ice40":
        raise ValueError("spram_layers: only the iCE40 UltraPlus has SPRAM")
    writable = bool(writable) or bool(spram_layers)
    if accumulators == "auto":
        accumulators = "memory" if family == "ecp5" else "registers"
    est = _Estimate(plan=plan, family=family, acc_style=accumulators, writable=writable, spram_layers=spram_layers)
    cal, W, add, block_bits = _CAL, word, est.add, est.block_bits
    layers = hwmodel.layers
    n0 = hwmodel.n_inputs
    # input buffer: bitmap of ceil(n0/W) W-bit words, word-assembly register
    # (ECP5: Yosys puts a memory this shallow into LUT RAM, no block); a convolution's image is
    # stored with padded rows, its pixel position kept in two counters
    lay0 = plan.layers[0].input_layout
    words0 = -(-(lay0.size if lay0 else n0) // W)
    bl, _ = bram_blocks_for(family, W, words0) if family == "ice40" or words0 > 64 else (0, 1)
    add("input", luts=cal["input_luts_per_bit"] * W + (cal["conv_input_luts"] if plan.layers[0].conv else 0),
        ffs=cal["input_ffs_per_bit"] * W, blocks=bl, bits=bl * block_bits)
    if lay0 is not None and lay0.steps > 1 or plan.input_coding == "given":  # T input maps
        add("input", luts=cal["coded_input_luts"], ffs=cal["coded_input_ffs"])
    if plan.input_coding == "rate":
        add("input", luts=cal["rate_luts_per_step"] * plan.steps, ffs=cal["rate_ffs_per_step"] * plan.steps)
    if mode == "event" and hwmodel.input_encoding == "pixels":  # the pixel memory (8 bits per input)
        pb, _ = bram_blocks_for(family, 8, lay0.size if lay0 else n0)
        add("input", blocks=pb, bits=pb * block_bits)
    for li, (layer, lp) in enumerate(zip(layers, plan.layers)):
        part(layer.kind, "estimate")(est, li, layer, lp)
    parts = est.parts
    add("accelerator", luts=cal["ecp5_accel_luts" if family == "ecp5" else "accel_luts"], ffs=cal["accel_ffs"])
    if top == "uart":
        rb, _ = bram_blocks_for(family, 8, 4 * plan.n_result_words)
        add("uart_top", luts=cal["top_luts"], ffs=cal["top_ffs"], blocks=rb, bits=rb * block_bits)
        # the image buffer: LOAD's pixels, INFER's slots, WRITE_WEIGHTS's staging area
        pixels, nv = proto.infer_carries_pixels(hwmodel), proto.input_values(hwmodel)
        if infer is None:  # as UARTTop decides
            infer = proto.infer_fits(nv, pixels=pixels)
        nbuf = proto.buffer_layout(nv, infer=infer, weight_write=writable, pixels=pixels).depth
        if infer:  # slot state, the byte FIFO and mask feeder, the tag, the responder's waiting reply
            add("uart_top", luts=cal["infer_top_luts"] + (cal["infer_pixel_luts"] if pixels else 0),
                ffs=cal["infer_top_ffs"])
        if writable:  # header registers, address check, commit counter
            add("uart_top", luts=cal["write_top_luts"], ffs=cal["write_top_ffs"])
        if spram:
            add("image", spram_blocks=-(-nbuf // FAMILIES["ice40"]["spram_depth_bytes"]), luts=20)
        else:
            bl, _ = bram_blocks_for(family, 8, nbuf)
            add("image", blocks=bl, bits=bl * block_bits)
    tot = {key: sum(p[key] for p in parts.values()) for key in ("luts", "ffs", "packed", "bram_blocks",
                                                                 "bram_bits", "spram_blocks", "dsp_blocks")}
    if family == "ecp5":
        tot["ffs"] = sum(p["ffs"] if p["ecp5_ffs"] is None else p["ecp5_ffs"] for p in parts.values())
    # Packing: a flip-flop shares a cell with the LUT driving it only when that LUT drives nothing
    # else (the accumulators); every other flip-flop takes a cell of its own on iCE40. ECP5 slices
    # hold 2 LUTs and 2 FFs with independent use, so there logic counts LUTs (plus carry cells).
    if family == "ice40":
        logic = tot["luts"] + tot["ffs"] - tot["packed"] - cal["ice40_other_ff_packed"] * (tot["ffs"] - tot["packed"])
    else:
        # ECP5 TRELLIS_COMB: one per accumulator bit (CCU2C: two cells per two bits); the rest of
        # the logic maps to more cells than the iCE40 LUT count (wide multiplexers through
        # PFUMX/L6MUX, LUT RAM, route-through cells), calibrated on the ULX3S build.
        f = cal["ecp5_other_logic_factor" + ("_memory" if accumulators == "memory" else "")]
        logic = sum(p["packed"] + f * (p["luts"] - p["packed"]) if p["ecp5_logic"] is None else p["ecp5_logic"]
                    for p in parts.values())
    return {
        "logic": int(round(logic)),
        "luts": int(round(tot["luts"])),
        "ffs": int(round(tot["ffs"])),
        "bram_blocks": int(tot["bram_blocks"]),
        "bram_bits": int(tot["bram_bits"]),
        "spram_blocks": int(tot["spram_blocks"]),
        "dsp_blocks": int(tot["dsp_blocks"]),
        "breakdown": {k_: {kk: (round(v) if isinstance(v, float) else v) for kk, v in p.items()}
                      for k_, p in parts.items()},
    }
