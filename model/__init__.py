"""bitsnn.model: BitSNN training in PyTorch and export to the hardware-model file."""
