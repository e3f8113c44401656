"""bitsnn.sim: the NumPy golden model and co-simulation of the generated hardware."""
