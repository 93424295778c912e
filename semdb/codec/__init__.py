"""semdb's learned codec: CLIP embedding -> a few hundred bits, searchable by ADC."""

from .codec import Codec, check_embeddings

__all__ = ["Codec", "check_embeddings"]
