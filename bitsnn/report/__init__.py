"""Reports: spikes, synaptic events, weight-memory reads, cycles, latency and energy per inference.

Everything here is a function of plain inputs (a :class:`~bitsnn.hwmodel.HardwareModel`, a golden
result, a cycles array, a build-report dict, toggle counts), so it is testable without training or
a toolchain; :func:`report_main` (``bitsnn report``) only wires them together. NumPy only, plus
matplotlib (Agg, no pyplot state) for the plots and pyvcd for reading waveforms.

Two energy estimates, kept apart on purpose (docs/report.md has every constant with its source):

(a) ``asic_45nm``: an operation-count model with Horowitz's 45 nm, 0.9 V figures (ISSCC 2014).
    These are ASIC figures for a 45 nm process, NOT FPGA figures; they compare the SNN's
    operations with an equivalent fp32 ANN on the same network, nothing more::

        E_snn = sum_l [ syn_events_l * E_add(acc_bits_l) + compares_l * E_add(acc_bits_l)
                        + weight_bits_read_l / 64 * E_sram64 ]
        E_ann = sum_l n_in_l * n_out_l * (E_fmul32 + E_fadd32) + weights * 32 / 64 * E_sram64

(b) ``fpga``: E = P_static * latency + cycles * E_clock + toggles * E_toggle, with the static
    power, clock energy per cycle and energy per toggle of the board's device (see
    :data:`FPGA_POWER`); a term whose constant has no trustworthy source is reported as unknown
    (null) and the total is then marked as a lower bound.

The package follows those seams: :mod:`.constants` (cited numbers), :mod:`.counts` (operation
counts), :mod:`.energy` (energy and timing), :mod:`.vcd` (toggles from a waveform), :mod:`.build`
(the build report), :mod:`.plots`, :mod:`.core` (the report dict and writing it) and :mod:`.cli`
(``bitsnn report``).
"""

from .build import check_build_report, load_build_report
from .cli import make_report, report_main, summary_lines, sweep_point
from .constants import FPGA_POWER, HOROWITZ_45NM, Constant, FpgaPowerModel
from .core import REPORT_KEYS, REPORT_MARKER, REPORT_VERSION, build_report, check_report_dir, write_report
from .counts import LayerCounts, acc_bits, layer_counts
from .energy import ann_fp32_energy, asic_energy, fpga_energy, timing
from .plots import plot_accuracy_energy, plot_feature_maps, plot_spike_raster, plot_spikes_per_layer, plot_utilisation
from .vcd import ToggleCounts, count_toggles

__all__ = [
    "REPORT_VERSION", "REPORT_KEYS", "REPORT_MARKER", "check_report_dir", "Constant", "HOROWITZ_45NM", "FpgaPowerModel", "FPGA_POWER", "LayerCounts",
    "ToggleCounts", "acc_bits", "layer_counts", "asic_energy", "ann_fp32_energy", "fpga_energy", "timing",
    "count_toggles", "load_build_report", "check_build_report", "build_report", "write_report", "plot_spike_raster",
    "plot_feature_maps", "plot_spikes_per_layer", "plot_accuracy_energy", "plot_utilisation", "summary_lines",
    "sweep_point", "make_report", "report_main",
]
