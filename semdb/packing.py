"""Fixed-length bit packing of codes: M indices of `nbits` bits each -> ceil(M*nbits/8) bytes.

Layout is little-endian within each byte (the first index sits in the lowest bits), the same
layout FAISS uses for 4-bit PQ codes, so a 4-bit code row can be handed to FAISS as it is.
"""

from __future__ import annotations

import numpy as np


def code_bytes(m: int, nbits: int) -> int:
    return (m * nbits + 7) // 8


def pack(indices: np.ndarray, nbits: int) -> np.ndarray:
    """(n, M) integer indices in [0, 2**nbits) -> (n, code_bytes) uint8."""
    indices = np.asarray(indices)
    n, m = indices.shape
    if nbits == 8:
        return indices.astype(np.uint8)
    if nbits == 4 and m % 2 == 0:  # the hot path: two nibbles per byte
        return (indices[:, 0::2] | (indices[:, 1::2] << 4)).astype(np.uint8)
    # Expand every index into its bits (LSB first), concatenate, then let numpy pack bytes.
    shifts = np.arange(nbits, dtype=np.uint32)
    bits = ((indices.astype(np.uint32)[:, :, None] >> shifts) & 1).astype(np.uint8)
    bits = bits.reshape(n, m * nbits)
    return np.packbits(bits, axis=1, bitorder="little")


def unpack(codes: np.ndarray, m: int, nbits: int) -> np.ndarray:
    """(n, code_bytes) uint8 -> (n, M) int64 indices; inverse of pack."""
    codes = np.asarray(codes, dtype=np.uint8)
    n = codes.shape[0]
    if nbits == 8:
        return codes[:, :m].astype(np.int64)
    if nbits == 4:  # the hot path for fast-scan-shaped codes: two nibbles per byte
        out = np.empty((n, codes.shape[1] * 2), dtype=np.int64)
        out[:, 0::2] = codes & 0x0F
        out[:, 1::2] = codes >> 4
        return out[:, :m]
    bits = np.unpackbits(codes, axis=1, bitorder="little")[:, : m * nbits]
    bits = bits.reshape(n, m, nbits).astype(np.int64)
    return (bits << np.arange(nbits, dtype=np.int64)).sum(axis=2)
