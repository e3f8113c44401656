"""bitsnn: trained binary spiking neural networks to FPGA bitstreams.

Stages, one folder each, data flowing one way through the hardware-model file:

- ``bitsnn.model``    (model/)    PyTorch training and export (the only stage importing torch)
- ``bitsnn.sim``      (sim/)      NumPy golden model, co-simulation
- ``bitsnn.hw``       (hw/)       Amaranth generators
- ``bitsnn.boards``   (boards/)   bitstreams with Yosys + nextpnr
- ``bitsnn.firmware`` (firmware/) host side of the UART protocol
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("bitsnn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"


class BitsnnError(Exception):
    """An error caused by the user's input or environment.

    The CLI prints its message as one line and exits non-zero; no traceback.
    """


def export(model, example_input, path=None, **kwargs):
    """Trace your own ``nn.Module`` of bitsnn layers into the hardware-model file at ``path``;
    see :func:`bitsnn.model.trace.export` (imports torch on first use)."""
    from .model.trace import export as _export

    return _export(model, example_input, path, **kwargs)


__all__ = ["BitsnnError", "__version__", "export"]
