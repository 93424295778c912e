"""semdb: a compressed semantic vector database for image collections."""

from .codec import Codec
from .errors import SemdbError

__all__ = ["Codec", "SemdbError"]
__version__ = "0.1.0"
