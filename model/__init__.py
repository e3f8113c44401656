"""bitsnn.model: BitSNN training in PyTorch and export to the hardware-model file.

The public layers, for use in your own ``nn.Module`` and training loop (docs/ecosystem.md):
:class:`InputSpikes`, :class:`BinaryConv2d`, :class:`BinaryDense`, :class:`BinaryLinear`,
:class:`SpikeActivation` and the surrogates in :data:`SURROGATES`; :func:`export` traces such a
module into the hardware-model file. They are imported on first use, so that importing a light
submodule (``bitsnn.model.cache``) does not load torch.
"""

from importlib import import_module

_PUBLIC = {
    "InputSpikes": "layers", "BinaryConv2d": "layers", "BinaryDense": "layers", "BinaryLinear": "layers",
    "SpikeActivation": "layers", "SURROGATES": "surrogate", "BitSNN": "network", "export": "trace",
    "trace_network": "trace",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
