"""The ``--images DIR`` input: embed a folder of class sub-folders with a CLIP model, build
zero-shot class prompts, and add the mainstream-codec baselines (JPEG / WebP re-encoding at
given qualities) as pre-computed variants evaluated at their real bits per pixel.

    DIR/
      cat/   *.jpg ...      -> class "cat"
      golden_retriever/ ... -> class "golden retriever"

Each image is decoded once at full size (EXIF-oriented RGB), embedded, then for every
requested codec quality re-encoded in memory, decoded again and embedded: that variant's bits
are the re-encoded file's real size, and its bits per pixel are relative to the ORIGINAL
image's pixel count (the paper's convention for codec baselines).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, features

from ..errors import ImageError, InputError
from ..images import discover, load_image
from ..progress import report
from ..rows import unit_rows
from .data import BenchData, Variant, validate

DEFAULT_PROMPTS = ("a photo of a {}.",)
CODECS = {"jpeg": ("JPEG", "JPEG"), "webp": ("WEBP", "WebP")}  # key -> (Pillow format, label)


def class_folders(root: Path) -> list[tuple[str, Path]]:
    """Sorted non-hidden immediate sub-folders of ``root`` as (class name, folder); the class
    name is the folder name with '_' read as a space."""
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [(p.name.replace("_", " ").strip(), p) for p in subs]


def _check_qualities(values, what: str) -> list[int]:
    if isinstance(values, (str, int)):
        values = [v for v in str(values).split(",") if v.strip()]
    out = []
    for q in values or ():
        try:
            v = int(str(q).strip())
        except ValueError:
            raise InputError(f"--{what}-quality {q!r}: not an integer from 1 to 100") from None
        if not 1 <= v <= 100:
            raise InputError(f"--{what}-quality {q!r}: must be an integer from 1 to 100")
        if v not in out:
            out.append(v)
    return out


def reencode(img, fmt: str, quality: int):
    """(decoded re-encoded image, size in bits) of ``img`` saved as ``fmt`` at ``quality``."""

    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=int(quality))
    nbits = buf.tell() * 8
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB"), nbits


def class_text_embeddings(embedder, class_names: Sequence[str], prompts: Sequence[str]) -> np.ndarray:
    """Per class, the normalised mean of the unit text embeddings of every prompt template
    (CLIP's prompt ensembling)."""
    texts = [p.format(c) for c in class_names for p in prompts]
    emb = embedder.encode_texts(texts).reshape(len(class_names), len(prompts), -1).mean(axis=1)
    return unit_rows(emb)


def load_image_folder(
    folder: str | Path,
    embedder,
    *,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    jpeg_quality: Sequence[int] = (),
    webp_quality: Sequence[int] = (),
    max_per_class: int | None = None,
    batch_size: int = 32,
    progress=None,
    on_message: Callable[[str], None] | None = None,
    name: str | None = None,
) -> BenchData:
    """Embed ``folder``'s class sub-folders with ``embedder`` (a ``semdb.clip.embedder.Embedder``).

    Returns a :class:`BenchData` with ``image_emb``, ``label``, ``class_names``,
    ``class_text_emb`` (prompt-ensembled) and one :class:`Variant` per codec quality
    (``jpeg-q10``, ``webp-q50``...). Unreadable images are skipped with a message.
    ``progress``: ``progress(stage, done, total)`` (semdb.progress), stage "embedding images".
    """

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"--images {root}: not a directory; give a folder with one sub-folder per class")
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise InputError("--prompt: give at least one template such as 'a photo of a {}.'")
    for p in prompts:
        if "{}" not in p:
            raise InputError(f"--prompt {p!r}: the template needs '{{}}' where the class name goes")
    codecs: list[tuple[str, str, str, int]] = []  # (key, pillow format, family label, quality)
    for key, values in (("jpeg", jpeg_quality), ("webp", webp_quality)):
        fmt, label = CODECS[key]
        qs = _check_qualities(values, key)
        if qs and key == "webp" and not features.check("webp"):
            raise InputError("--webp-quality: this Pillow has no WebP support; drop the option")
        codecs += [(key, fmt, label, q) for q in qs]

    classes = class_folders(root)
    files: list[tuple[Path, int]] = []
    names: list[str] = []
    for cname, sub in classes:
        found = list(discover([sub]))
        if max_per_class is not None:
            found = found[: int(max_per_class)]
        if not found:
            continue
        names.append(cname)
        files += [(f, len(names) - 1) for f in found]
    if len(names) < 2:
        raise InputError(
            f"--images {root}: found {len(names)} class sub-folder(s) with images; zero-shot needs at least 2 "
            "(one sub-folder of images per class)"
        )
    if len(set(names)) != len(names):
        raise InputError(f"--images {root}: two sub-folders give the same class name; rename one")

    say = on_message or (lambda msg: None)
    done = 0
    emb_parts: list[np.ndarray] = []
    labels: list[int] = []
    pixels: list[int] = []
    var_emb: dict[int, list[np.ndarray]] = {i: [] for i in range(len(codecs))}
    var_bits: dict[int, list[int]] = {i: [] for i in range(len(codecs))}
    var_secs = [0.0] * len(codecs)
    skipped = 0
    for start in range(0, len(files), batch_size):
        batch = []
        for path, lab in files[start : start + batch_size]:
            try:
                batch.append((load_image(path), lab))
            except ImageError as exc:
                skipped += 1
                say(f"skipped: {exc}")
            done += 1
            report(progress, "embedding images", done, len(files))
        if not batch:
            continue
        imgs = [im for im, _ in batch]
        emb_parts.append(embedder.encode_images(imgs))
        labels += [lab for _, lab in batch]
        pixels += [im.width * im.height for im in imgs]
        for i, (_, fmt, _, q) in enumerate(codecs):
            t0 = time.perf_counter()
            coded = [reencode(im, fmt, q) for im in imgs]
            var_secs[i] += time.perf_counter() - t0
            var_bits[i] += [b for _, b in coded]
            var_emb[i].append(embedder.encode_images([im for im, _ in coded]))
    if not emb_parts:
        raise InputError(f"--images {root}: none of the {len(files)} images could be read")
    if skipped:
        say(f"{skipped} of {len(files)} images could not be read and were left out")

    image_emb = np.concatenate(emb_parts)
    label = np.asarray(labels, dtype=np.int64)
    present = sorted(set(labels))
    if len(present) < 2:
        raise InputError(f"--images {root}: images of only one class could be read; zero-shot needs 2+")
    pix = np.asarray(pixels, dtype=np.float64)
    variants = [
        Variant(
            name=f"{key}-q{q}",
            family=label_,
            emb=np.concatenate(var_emb[i]),
            bits=np.asarray(var_bits[i], dtype=np.float64),
            pixels=pix,
            encode_seconds=var_secs[i],
            note=f"{label_} quality {q} (Pillow), re-encoded from the originals; bpp over original pixels",
        )
        for i, (key, _, label_, q) in enumerate(codecs)
    ]
    class_emb = class_text_embeddings(embedder, names, prompts)
    return validate(
        image_emb,
        label=label,
        class_names=names,
        class_text_emb=class_emb,
        name=name or root.name,
        variants=variants,
    )
