"""The board link's facts (bitsnn.link): bit rates against the boards' USB bridges and the design's
receiver, each board's default rate, the refusal of a rate that cannot work (before any build),
and the throughput formula that ``bitsnn report`` prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitsnn import BitsnnError
from bitsnn import protocol as P
from bitsnn.boards import FACTS, get_board, known_rates
from bitsnn.hwmodel import random_model
from bitsnn.link import BRIDGES, RateError, check_rate, default_baud, link_timing


def test_bridge_rates_follow_the_ftdi_divisor():
    ft2232h, ft231x = BRIDGES["FT2232H"], BRIDGES["FT231X"]
    assert ft2232h.actual(3_000_000) == 3_000_000 and ft2232h.actual(12_000_000) == 12_000_000
    assert ft231x.actual(2_000_000) == 2_000_000  # 3 MHz / 1.5
    assert ft231x.actual(115200) == pytest.approx(3e6 / 26, rel=1e-9)  # n = 26.0 (26.04 rounded to 1/8)
    assert ft2232h.actual(9_000_000) in (8_000_000, 12_000_000)  # no divisor between 1 and 1.5


def test_each_board_defaults_to_a_rate_exact_on_both_ends():
    """iCEBreaker: 3,000,000 baud at 24 MHz (divisor 8, the FT2232H's 12 MHz / 4); ULX3S:
    2,000,000 at 50 MHz (divisor 25, the FT231X's 3 MHz / 1.5); at another clock the default moves."""
    assert FACTS["icebreaker"].default_baud() == 3_000_000
    assert FACTS["ulx3s-85f"].default_baud() == 2_000_000
    assert FACTS["icebreaker"].default_baud(12e6) == 1_500_000
    assert check_rate(24e6, 3_000_000, BRIDGES["FT2232H"]) == 8
    assert check_rate(50e6, 2_000_000, BRIDGES["FT231X"]) == 25
    assert known_rates() == [3_000_000, 2_000_000, 115200]
    for clk in (12e6, 24e6, 30e6, 36e6, 48e6):
        rate = default_baud(clk, BRIDGES["FT2232H"])
        assert clk / check_rate(clk, rate, BRIDGES["FT2232H"]) == rate  # exact on both ends


@pytest.mark.parametrize("clk, baud, bridge, why", [
    (24e6, 5_000_000, "FT2232H", "off with divisor"),  # 24 / 5 = 4.8: divisor 5 gives 4.8 Mbaud
    (50e6, 4_000_000, "FT231X", "above the FT231X's maximum"),
    (24e6, 12_000_000, "FT2232H", "too slow"),  # 2 clocks per bit
    (25e6, 2_500_000, "FT231X", "apart"),  # the design makes 2.5 Mbaud, the FT231X 3 (no divisor 1.2)
])
def test_rates_that_cannot_work_are_refused(clk, baud, bridge, why):
    with pytest.raises(RateError, match=why):
        check_rate(clk, baud, BRIDGES[bridge])


def test_receiver_margin_is_checked():
    """At 4 clocks per bit the receiver samples a quarter bit from an edge: enough with rates that
    agree, not with a line 1.7 % fast (within the rate check, but the drift over the frame takes
    the stop bit's sample to 0.09 bit from its end)."""
    from bitsnn.link import Bridge

    assert check_rate(24e6, 6_000_000) == 4
    with pytest.raises(RateError, match="from an edge"):
        check_rate(24e6, 6_000_000, Bridge("fast", 6_100_000, 12_000_000))
    assert check_rate(48e6, 6_000_000, Bridge("fast", 6_100_000, 12_000_000)) == 8


def test_build_refuses_a_bad_rate_before_any_work(tmp_path):
    model = random_model(np.random.default_rng(0), [64, 16, 4])
    path = model.save(tmp_path / "m.bsnn")
    r = subprocess.run([str(Path(sys.executable).parent / "bitsnn"), "build", "--board", "icebreaker",
                        "--model", str(path), "-o", str(tmp_path / "out"), "--baud", "5000000"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bitsnn build: error: --baud: icebreaker: 5e+06 baud is 4.0% off")
    assert not (tmp_path / "out").exists()
    with pytest.raises(BitsnnError, match="above the FT231X's maximum"):
        get_board("ulx3s-85f").check_baud(4_000_000)
    assert get_board("ulx3s-85f").check_baud(None) == 2_000_000


def test_link_timing_formula():
    """tiny (576 inputs, 13 result words) at 3 Mbaud: INFER is 5 + 1 + 72 = 78 bytes up and
    6 + 52 + 1 = 59 down, so the uplink bounds it at 3e6 / 780 images/s; LOAD/RUN/READ costs
    (15 + 576 + 18 + 52) bytes and the run one after the other."""
    t = link_timing(n_inputs=576, n_words=13, infer=True, baud=3e6, compute_s=50e-6)
    assert (t.up_bytes, t.down_bytes, t.bound) == (78, 59, "uplink")
    assert t.images_per_s == pytest.approx(3e6 / 780)
    seq = link_timing(n_inputs=576, n_words=13, infer=False, baud=3e6, compute_s=50e-6)
    assert (seq.up_bytes, seq.down_bytes, seq.bound) == (591, 70, "round-trip")
    assert seq.per_image_s == pytest.approx(661 * 10 / 3e6 + 50e-6)
    pix = link_timing(n_inputs=784, n_words=14, infer=True, infer_pixels=True, nonzero=150, baud=3e6, compute_s=2e-4)
    assert pix.up_bytes == 5 + 1 + 98 + 150
    assert P.image_traffic(576, 13, infer=True) == (78, 59)
    slow = link_timing(n_inputs=16, n_words=13, infer=True, baud=3e6, compute_s=1e-3)
    assert slow.bound == "compute" and slow.images_per_s == pytest.approx(1000)
