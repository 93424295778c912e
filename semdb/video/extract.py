"""One frame of a video read back at its time: a frame item's thumbnail, and a retrain's
re-embedding of a frame."""

from __future__ import annotations

from PIL import Image

from ..errors import ImageError
from .frames import decoded_frames, frame_rotation, open_video, upright


def frame_at(path: str, ms: int, size: int, max_megapixels: float | None = None) -> Image.Image:
    """The frame shown at `ms` (the last one at or before it), RGB, upright, its short side
    at most `size`; ImageError if the video cannot be read there."""
    container, stream = open_video(path, max_megapixels)
    try:
        stream.thread_type = "AUTO"
        start = stream.start_time or 0
        target = start + int(ms / 1000 / stream.time_base)
        container.seek(max(target, start), stream=stream, backward=True)  # the keyframe before
        best = None
        for frame in decoded_frames(path, container, stream):
            if best is not None and frame.pts is not None and frame.pts > target:
                break
            best = frame
        if best is None:
            raise ImageError(path, f"no frame at {ms / 1000:.3f} s")
        return upright(best, size, frame_rotation(best))
    finally:
        container.close()
