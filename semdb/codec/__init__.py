"""semdb's learned codec: CLIP embedding -> a few hundred bits, searchable by ADC."""

from .codec import MAX_BITS, Codec, bits_problem, check_embeddings

__all__ = ["MAX_BITS", "Codec", "bits_problem", "check_embeddings"]
