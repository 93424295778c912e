"""A video's frames, sampled and decoded with PyAV (FFmpeg in its wheels; no system ffmpeg).

Frames no other frame depends on (most B-frames) are not decoded at all (FFmpeg's skip_frame
NONREF: a third fewer frames to decode on a typical H.264 stream, measured 0.18 s against
0.29 s on a 720p clip); the rest are decoded with FFmpeg's own threads, and only a few are
looked at: about CHECKS_PER_SECOND a second are sampled on a 64x36 grid (read from the decoded
planes, turned to RGB), and a frame is kept when these colours differ from the last ones checked
by more than `scene_diff` (a mean absolute difference on 0-255: a cut; colour, not brightness
alone, so that a cut between two shots of equal brightness is seen), or when `every_s` seconds
have passed since the last kept frame. A kept frame is scaled by FFmpeg straight to the size CLIP wants (its short side
`size`), then turned upright as the stream's display matrix says (phones record portrait
videos as rotated landscape). Timestamps come from each frame's pts, so variable frame rates
are timed right. Memory stays bounded whatever the length: frames stream through.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import ImageError

EVERY_S = 2.0  # a frame at least every this many seconds (docs/VIDEOS.md: what it costs)
SCENE_DIFF = 24.0  # mean |difference| of the RGB colours of a 64x36 grid (0-255) that counts as a cut
CHECKS_PER_SECOND = 10  # thumbnails compared a second: a cut is found within 0.1 s
THUMB = (64, 36)
YUV_PLANAR = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})  # 8-bit planes
_ROTATE = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


@dataclass(frozen=True)
class Sampling:
    every_s: float = EVERY_S
    scene_diff: float = SCENE_DIFF
    max_megapixels: float | None = 100.0  # a bigger frame size is refused before decoding
    threads: int = 0  # FFmpeg decoding threads (0: as many as it likes)


@dataclass(frozen=True)
class VideoInfo:
    width: int  # as displayed (rotation applied)
    height: int
    duration_ms: int
    rotation: int  # degrees counterclockwise the stored frames are turned for display: 0, 90, 180, 270
    taken: float | None  # the container's creation time, POSIX seconds


@dataclass(frozen=True)
class Frame:
    ms: int  # time in the video
    image: Image.Image  # RGB, upright, short side `size`
    cut: bool  # kept at a scene change (else: first frame, or the every_s rule)


def open_video(path: str, max_megapixels: float | None = None):
    """(container, video stream); ImageError for anything FFmpeg cannot open, a
    file without a video stream or a frame size over `max_megapixels`."""
    import av  # noqa: PLC0415 - PyAV (~35 ms): loaded by the first video read, not by every command

    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise ImageError(path, f"cannot open video ({_reason(err)})") from None
    try:
        if not container.streams.video:
            raise ImageError(path, "no video stream")
        stream = container.streams.video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        if not w or not h:
            raise ImageError(path, "video stream has no frame size")
        if max_megapixels is not None and w * h > max_megapixels * 1e6:
            mp = f"{w}x{h} ({w * h / 1e6:.0f} MP)"
            raise ImageError(path, f"video is {mp}, over the {max_megapixels:g} MP limit (--max-megapixels)")
        return container, stream
    except BaseException:
        container.close()
        raise


def sample(path: str, size: int, sampling: Sampling = Sampling()) -> tuple[VideoInfo, Iterator[Frame]]:
    """The video's info now (ImageError if it cannot be opened) and its kept frames as they
    are decoded. A decoding error after some frames ends the video there (a truncated file
    keeps what plays); before any, it is an ImageError."""
    container, stream = open_video(path, sampling.max_megapixels)
    try:
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = sampling.threads
        stream.codec_context.skip_frame = "NONREF"  # a cut is still seen within a few frames
        decoded = decoded_frames(path, container, stream)
        first = next(decoded, None)  # the display matrix travels with the frames
        if first is None:
            raise ImageError(path, "video has no frames")
    except BaseException:
        container.close()
        raise
    rotation = frame_rotation(first)
    w, h = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
    info = VideoInfo(w, h, _duration_ms(container, stream), rotation, _creation(container))
    return info, _frames(container, stream, itertools.chain([first], decoded), info, size, sampling)


def frame_rotation(frame) -> int:
    """Degrees counterclockwise to turn the frame for display (its display matrix): 0, 90, 180 or 270."""
    return round((frame.rotation or 0) / 90) % 4 * 90


def _frames(container, stream, decoded, info: VideoInfo, size: int, sampling: Sampling) -> Iterator[Frame]:
    start = stream.start_time or 0
    base = stream.time_base
    check_gap = 1000 // CHECKS_PER_SECOND
    last_kept = last_check = None
    last_thumb = None
    n = 0
    try:
        for frame in decoded:
            ms = round(float((frame.pts - start) * base) * 1000) if frame.pts is not None else n * 40
            n += 1
            if last_check is not None and ms - last_check < check_gap and ms - last_kept < sampling.every_s * 1000:
                continue
            thumb = thumbnail(frame)
            cut = last_thumb is not None and float(np.abs(thumb - last_thumb).mean()) > sampling.scene_diff
            last_thumb, last_check = thumb, ms
            if last_kept is None or cut or ms - last_kept >= sampling.every_s * 1000:
                last_kept = ms
                yield Frame(max(ms, 0), upright(frame, size, info.rotation), cut)
    finally:
        container.close()


def decoded_frames(path, container, stream):
    """The stream's frames; stops at a decoding error once frames have come (ImageError before)."""
    import av  # noqa: PLC0415 - as in open_video

    got = False
    try:
        for frame in container.decode(stream):
            got = True
            yield frame
    except (av.FFmpegError, OSError) as err:
        if not got:
            raise ImageError(path, f"cannot decode video ({_reason(err)})") from None


def thumbnail(frame) -> np.ndarray:
    """The frame's colours on a THUMB grid, RGB (float32), read straight from its decoded Y, U
    and V planes (BT.601): FFmpeg's scaler costs ~3 ms a call at this size (a new context each
    time), this a few microseconds. Other pixel formats go through the scaler."""
    if frame.format.name not in YUV_PLANAR:
        return frame.to_ndarray(width=THUMB[0], height=THUMB[1], format="rgb24").astype(np.float32)
    y, u, v = (_grid(plane) for plane in frame.planes[:3])
    u, v = u - 128, v - 128
    return np.stack([y + 1.402 * v, y - 0.344 * u - 0.714 * v, y + 1.772 * u], -1).clip(0, 255)


def _grid(plane) -> np.ndarray:
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    at_y = np.arange(THUMB[1]) * plane.height // THUMB[1]
    at_x = np.arange(THUMB[0]) * plane.width // THUMB[0]
    return rows[np.ix_(at_y, at_x)].astype(np.float32)


def upright(frame, size: int, rotation: int) -> Image.Image:
    """The frame scaled (by FFmpeg, area averaging) to short side `size` and turned upright."""
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    if scale < 1:
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
    img = frame.to_image(width=w, height=h, interpolation="AREA")  # FFmpeg scales: no full-size RGB copy
    return img.transpose(_ROTATE[rotation]) if rotation else img


def _duration_ms(container, stream) -> int:
    if stream.duration is not None and stream.time_base is not None:
        return max(0, round(float(stream.duration * stream.time_base) * 1000))
    if container.duration is not None:
        return max(0, container.duration // 1000)  # microseconds
    return 0


def _creation(container) -> float | None:
    text = container.metadata.get("creation_time")
    if not text:
        return None
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def _reason(err: BaseException) -> str:
    return " ".join(str(getattr(err, "strerror", None) or err).split()) or type(err).__name__
