"""The in-bench check shared by the cocotb benches: each image against the golden model as it completes."""

from __future__ import annotations

import numpy as np


def tap_order(taps: dict, l: int, rows):
    """Hidden layer ``l``'s tapped store bits (a row or rows) in torch's flat order: ``taps`` holds
    ``tap{l}``, the store address of each output (a convolution's or a timed layer's store), and
    for signed spikes ``tapneg{l}``, the address of its -1 spike (then int8 -1/0/+1)."""
    if f"tap{l}" not in taps:
        return rows
    pos = rows[..., taps[f"tap{l}"]]
    if f"tapneg{l}" in taps:
        return pos.astype(np.int8) - rows[..., taps[f"tapneg{l}"]].astype(np.int8)
    return pos

__all__ = ["InOrderChecker"]


class InOrderChecker:
    """Compares image b's observations with the expected values the moment it completes."""

    def __init__(self, exp, log):
        self.exp, self.log = exp, log
        self.mismatches = 0

    def check(self, b, klass, scores, counts, cycles, spikes):
        e = self.exp
        if "classes" not in e:  # no expected values given (e.g. a waveform run): observe only
            return
        bad = []
        if klass != e["classes"][b]:
            bad.append(f"class {klass} != {e['classes'][b]}")
        if not np.array_equal(scores, e["scores"][b]):
            bad.append("scores differ")
        if not np.array_equal(counts, e["spike_counts"][b]):
            bad.append(f"spike counts {counts.tolist()} != {e['spike_counts'][b].tolist()}")
        for l, s in enumerate(spikes):
            if not np.array_equal(s, e[f"spikes{l}"][b]):
                bad.append(f"layer {l} spikes differ")
        if "cycles" in e and cycles != e["cycles"][b]:
            bad.append(f"cycles {cycles} != {e['cycles'][b]}")
        if bad:
            self.mismatches += 1
            if self.mismatches <= 5:
                self.log.error("image %d: %s", b, "; ".join(bad))
