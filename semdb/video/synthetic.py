"""Generated videos for tests and benchmarks (PyAV encodes them): scenes of solid colours with
a moving shape, hard cuts between them, optional rotation metadata, variable frame rate."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np


@dataclass(frozen=True)
class Scene:
    seconds: float
    color: tuple[int, int, int]
    shape: str = "square"  # "square", "disc" or "bars"
    pan: float = 0.0  # pixels per frame the shape moves (a panning camera)


def write_video(
    path,
    scenes: list[Scene],
    *,
    fps: int = 10,
    size: tuple[int, int] = (160, 96),
    codec: str = "libx264",
    rotation: int = 0,
    vfr: bool = False,
    audio: bool = False,
) -> list[float]:
    """Write the scenes one after another (hard cuts); returns each scene's start time (s).
    `vfr`: frame durations alternate between one and three ticks of 1/fps (variable rate)."""
    w, h = size
    starts = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps * 4)  # room for variable frame durations
        if rotation:
            stream.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=16000) if audio else None
        tick = 0
        for scene in scenes:
            starts.append(tick / fps)
            end = tick + round(scene.seconds * fps)
            n = 0
            while tick < end:
                frame = av.VideoFrame.from_ndarray(draw(scene, n, w, h), format="rgb24")
                frame.pts = tick * 4
                out.mux(stream.encode(frame))
                step = (1 if n % 2 == 0 else 3) if vfr else 1
                tick += step
                n += step
        out.mux(stream.encode())
        if sound is not None:
            _silence(out, sound, tick / fps)
    return starts


def write_audio_only(path, seconds: float = 1.0) -> None:
    with av.open(str(path), "w", format="mp4") as out:
        _silence(out, out.add_stream("aac", rate=16000), seconds)


def _silence(out, stream, seconds: float) -> None:
    n = 1024
    for i in range(int(seconds * stream.rate / n) + 1):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, n), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = stream.rate, i * n
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def draw(scene: Scene, n: int, w: int, h: int) -> np.ndarray:
    """Frame `n` of `scene` at w x h: its colour, and its shape in the inverse colour."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = scene.color
    inverse = tuple(255 - c for c in scene.color)
    s = h // 3
    x = int(w // 4 + scene.pan * n) % w
    y0, y1 = h // 2 - s // 2, h // 2 + s // 2
    if scene.shape == "square":
        img[y0:y1, x : x + s] = inverse
    elif scene.shape == "disc":
        yy, xx = np.ogrid[:h, :w]
        img[(yy - h // 2) ** 2 + (xx - x - s // 2) ** 2 <= (s // 2) ** 2] = inverse
    else:  # bars
        for bx in range(x % (2 * s) - 2 * s, w, 2 * s):  # from off-screen: bars slide in, never pop up
            img[:, max(bx, 0) : max(bx + s // 2, 0)] = inverse
    return img
