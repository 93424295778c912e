"""Image files: discovery, decoding and content hashing.

- ``discover`` walks files and folders and yields image paths once each, in a stable order.
- ``load_image`` decodes one file to an RGB ``PIL.Image`` (EXIF-oriented, first frame of
  animations, a megapixel guard checked on the header before any pixel is decoded). Every
  failure is an ``ImageError`` whose message is one line: ``"PATH: reason"``.
- ``content_hash`` identifies a file by its bytes (used to detect moved and duplicate files).

Nothing here imports torch or open_clip.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from .errors import ImageError, InputError, display_path  # noqa: F401 - display_path re-exported
from .video.files import is_video_file, is_video_path

pillow_heif.register_heif_opener()  # HEIC/HEIF (iPhone photos) through Pillow

PathLike = str | bytes | os.PathLike

#: Lower-case file extensions (without the dot) that discovery treats as images.
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif"})

#: Default upper bound on header width*height, in megapixels (1 MP = 10**6 pixels).
DEFAULT_MAX_MEGAPIXELS = 100.0

_HASH_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------
# paths


def is_image_path(path: PathLike) -> bool:
    """True if the file name ends with one of ``IMAGE_EXTENSIONS`` (any case)."""
    suffix = os.path.splitext(os.fsdecode(path))[1]
    return suffix[1:].lower() in IMAGE_EXTENSIONS


def is_media_path(path: PathLike) -> bool:
    """An image or a video by its name, or a video by its first bytes (a file without an extension)."""
    return is_image_path(path) or is_video_file(path)


def _inode(path: PathLike) -> tuple[int, int] | None:
    """(st_dev, st_ino) of what ``path`` points to, or None if it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def discover(
    paths: Iterable[PathLike],
    exclude: Iterable[PathLike] = (),
    on_error: Callable[[Path, str], None] | None = None,
) -> Iterator[Path]:
    """Return an iterator over every image and video file under ``paths``, each exactly once
    (semdb.video.files: videos by extension, or by their first bytes when they have none).

    ``paths`` may mix files and directories. Directories are walked recursively in sorted name
    order; hidden entries (names starting with '.') and directories in ``exclude`` (e.g. the
    store itself) are skipped; directory symlinks are followed, with loops cut by remembering
    each visited directory's (device, inode). A file reached twice (two arguments, a symlink
    and its target) is yielded once, under the first path seen. Explicit file arguments are
    yielded if their extension is an image extension, even if their name is hidden.

    A path argument that does not exist raises ``InputError`` at the call, before any walking.
    Unreadable sub-directories are skipped; ``on_error(path, reason)`` is told about them.
    """
    roots = [Path(os.fsdecode(p)) for p in paths]
    check_paths(roots)  # every argument first: fail before any work is done
    return _discover(roots, exclude, on_error)


def check_paths(paths: Iterable[PathLike]) -> None:
    """InputError naming the first of `paths` that does not exist."""
    for path in paths:
        if not os.path.exists(os.fsdecode(path)):
            raise InputError(f"{display_path(path)}: no such file or directory")


def _discover(roots, exclude, on_error) -> Iterator[Path]:
    """The walk itself, a generator (so that ``discover`` can check its arguments eagerly)."""
    excluded = {key for key in map(_inode, exclude) if key is not None}
    visited_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()

    def new_file(path: Path) -> bool:
        real = os.path.realpath(path)
        if real in seen_files:
            return False
        seen_files.add(real)
        return True

    for root in roots:
        if os.path.isdir(root):
            yield from (p for p in _walk(root, excluded, visited_dirs, on_error) if new_file(p))
        elif (is_image_path(root) or is_video_path(root)) and new_file(root):
            yield root


def _walk(
    root: Path,
    excluded: set[tuple[int, int]],
    visited: set[tuple[int, int]],
    on_error: Callable[[Path, str], None] | None,
) -> Iterator[Path]:
    """Depth-first walk of one directory tree (iterative: deep trees cannot hit recursion limits)."""

    def enter(directory: Path) -> Iterator[os.DirEntry] | None:
        key = _inode(directory)
        if key is None or key in visited or key in excluded:
            return None
        visited.add(key)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            if on_error is not None:
                on_error(directory, _os_reason(exc))
            return None
        return iter(entries)

    stack = [it for it in [enter(root)] if it is not None]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()  # follows symlinks
            is_file = not is_dir and entry.is_file()
        except OSError:
            continue  # vanished or unreadable entry
        if is_dir:
            child = enter(path)
            if child is not None:
                stack.append(child)
        elif is_file and is_media_path(path):
            yield path


# --------------------------------------------------------------------------------------------
# decoding


def _os_reason(exc: OSError) -> str:
    """A short human reason for an OS-level failure to read a file."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    return f"cannot read file ({exc.strerror or exc.__class__.__name__})"


def _allow_pillow_up_to(max_pixels: float | None) -> None:
    """Make Pillow's own global bomb guard at least as permissive as ours.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that, whatever
    ``--max-megapixels`` says. Raising it (never lowering it) keeps our limit the one that
    decides; anything Pillow still refuses is over our limit too and becomes an ImageError.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is None:
        return
    if max_pixels is None:
        Image.MAX_IMAGE_PIXELS = None
    elif current < max_pixels:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)


def _too_big(path: PathLike, limit_mp: float, size=None, pixels=None) -> ImageError:
    if size is not None:
        w, h = size
        what = f"{w}x{h} ({w * h / 1e6:.0f} MP)"
    elif pixels is not None:
        what = f"{pixels / 1e6:.0f} MP"
    else:
        what = "too large"
    return ImageError(path, f"image is {what}, over the {limit_mp:g} MP limit (--max-megapixels)")


def load_image(
    path: PathLike,
    draft_size: int | None = None,
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
) -> Image.Image:
    """Decode ``path`` into an RGB image, oriented as its EXIF tag says.

    ``draft_size``: the model's input resolution. Big JPEGs are then decoded at a reduced DCT
    scale and other big images box-reduced, so that the shorter side is still >= draft_size
    (the CLIP transform resizes the shorter side to its input size anyway); this makes
    ingesting camera photos several times faster.
    ``max_megapixels``: refuse images whose header claims more pixels (None: no limit). The
    check happens before decoding, so a decompression bomb costs nothing.

    Raises ``ImageError(path, reason)`` for anything that is not a decodable image.
    """
    max_pixels = None if not max_megapixels else max_megapixels * 1e6
    _allow_pillow_up_to(max_pixels)
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise ImageError(path, "empty file")
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ImageError(path, "not a regular file")
            # Pillow warns (DecompressionBombWarning) just before we reject the same image;
            # silence that duplicate. (catch_warnings is process-global state: harmless here.)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = _decode(fh, path, draft_size, max_pixels, max_megapixels)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_big(path, max_megapixels or 0, pixels=int(found.group(1)) if found else None) from None
    except OSError as exc:
        raise ImageError(path, _os_reason(exc)) from None
    img = _to_rgb(_orient(img), path)
    if draft_size and min(img.size) >= 2 * draft_size:
        # Cheap box-filter reduction of big non-JPEG images (PNG, TIFF, HEIC...), done on the
        # RGB image: Image.reduce refuses palette, 1-bit and 16-bit modes.
        img = img.reduce(min(img.size) // draft_size)
    return img


def _decode(fh, path, draft_size, max_pixels, max_megapixels) -> Image.Image:
    """Open, guard, draft and fully decode; returns the raw (mode as stored) first frame."""
    # ImageFile.LOAD_TRUNCATED_IMAGES stays False: a truncated file must fail, not come out
    # half grey and be indexed as if it were whole.
    try:
        img = Image.open(fh)
    except UnidentifiedImageError:
        raise ImageError(path, "not an image or unsupported format") from None
    except Image.DecompressionBombError:
        raise
    except OSError as exc:
        if exc.errno is not None:  # the OS could not read the file
            raise
        raise _corrupt(path, exc) from None  # Pillow's own complaint ("Truncated File Read")
    except (SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError) as exc:
        # Some plugins accept the magic bytes then choke on the rest of the header.
        raise _corrupt(path, exc) from exc

    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        raise _too_big(path, max_megapixels, size=img.size)
    if w < 1 or h < 1:
        raise ImageError(path, f"image has no pixels ({w}x{h})")

    if draft_size and isinstance(img, JpegImagePlugin.JpegImageFile):  # JPEG and MPO
        # Decode at 1/2, 1/4 or 1/8 scale, Pillow picks the largest reduction that keeps
        # both sides >= draft_size.
        img.draft("RGB", (draft_size, draft_size))
    try:
        img.load()  # force the full decode here so every error surfaces in this function
    except Image.DecompressionBombError:
        raise
    except MemoryError:
        raise ImageError(path, "not enough memory to decode") from None
    except OSError as exc:
        if exc.errno is not None:  # the OS could not read the file
            raise
        raise _corrupt(path, exc) from exc
    except Exception as exc:  # noqa: BLE001 - decoders raise many types for corrupt data
        raise _corrupt(path, exc) from exc
    return img


def _corrupt(path, exc: Exception) -> ImageError:
    """A decoder's complaint about the file's bytes, with its own words (they say where)."""
    return ImageError(path, f"truncated or corrupt image: {str(exc).strip() or type(exc).__name__}")


def _orient(img: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF orientation tag says (phone photos are stored sideways)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the picture
        return img


def _to_rgb(img: Image.Image, path: PathLike) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        # Pillow's own I/F -> RGB conversion clips at 255, turning 16-bit images white.
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
            scale = 255.0
        elif mode.startswith("I;16") or (arr.size and np.nanmax(arr) > 255):
            scale = 255.0 / 65535.0
        else:
            scale = 1.0
        arr = np.nan_to_num(arr * scale).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    try:
        return img.convert("RGB")  # L, 1, CMYK, YCbCr, ...
    except (ValueError, OSError):
        raise ImageError(path, f"unsupported color mode {mode}") from None


_EXIF_IFD, _DATE_TIME_ORIGINAL, _DATE_TIME, _ORIENTATION = 0x8769, 36867, 306, 0x0112


class Header(NamedTuple):
    """What an image file's header says: its size as shown (EXIF orientation applied) and when
    it was taken (EXIF DateTimeOriginal, else DateTime; POSIX seconds, local time; or None)."""

    width: int
    height: int
    taken: float | None


def read_header(path: PathLike) -> Header | None:
    """The file's Header, read without decoding any pixel; None when it cannot be read."""
    import datetime  # noqa: PLC0415 - kept lazy: loaded only on this path (a cold `import semdb` stays light)

    try:
        with Image.open(path) as img:
            (w, h), exif = img.size, img.getexif()
            raw = exif.get_ifd(_EXIF_IFD).get(_DATE_TIME_ORIGINAL) or exif.get(_DATE_TIME)
            turned = exif.get(_ORIENTATION) in (5, 6, 7, 8)  # stored sideways: shown w and h swap
    except Exception:  # noqa: BLE001 - the decoder reports unreadable files; this is only metadata
        return None
    try:
        taken = datetime.datetime.strptime(str(raw).strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S").timestamp()
    except (ValueError, OverflowError, OSError):
        taken = None
    return Header(h, w, taken) if turned else Header(w, h, taken)


def date_taken(path: PathLike) -> float | None:
    """When the photo was taken, from its EXIF header (None: no readable date)."""
    header = read_header(path)
    return header.taken if header else None


# --------------------------------------------------------------------------------------------
# hashing


def content_hash(path: PathLike) -> str:
    """Hex blake2b-128 of the file's bytes, read in 1 MiB chunks (files can be huge)."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ImageError(path, _os_reason(exc)) from None
    return digest.hexdigest()
