"""Damaging files on purpose, for the tests of corruption checks."""


def flip_byte(path, offset=-1):
    """Invert the bits of one byte of a file in place."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
