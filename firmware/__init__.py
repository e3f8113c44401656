"""bitsnn.firmware: the host side of the UART protocol."""
