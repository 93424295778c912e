"""The search structure over one codec's codes (FAISS's shape: the index owns its quantizer)."""

from __future__ import annotations

from .adc import AdcIndex, FlatIndex
from .ivf import IvfIndex


def codec_index(codec, codes, ivf=None):
    """A reusable search structure over `codes` written by `codec` (build once, query many
    times). `ivf`: (centroids, lists) of an IVF over these codes: an IvfIndex, whose search scans
    the nearest `nprobe` lists; else every code is scanned. A codec whose decoder is not additive
    (the paper's) is searched by decoding its codes first."""
    codes = codec.check_codes(codes)  # (unpacking all codes just to validate them would cost M x 8 bytes/item)
    if not codec.quantizer.adc:
        return FlatIndex(codec.decode(codes))
    norms = codec.norms if codec.scoring == "cosine" else None
    bias = codec.tensors["mean"]
    if ivf is not None:
        span = None if codec.n_coarse else codec.decoder
        return IvfIndex(codec.tables, bias, codes, codec.nbits, norms, ivf[0], ivf[1], span=span)
    return AdcIndex(codec.tables, bias, codes, codec.nbits, norms=norms)
