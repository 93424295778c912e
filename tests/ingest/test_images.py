"""semdb.images on real files written to tmp_path (Pillow, pillow-heif, scikit-image photos)."""

import hashlib
import io
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from kit import png_bytes
from PIL import Image

from semdb.errors import ImageError, InputError
from semdb.images import IMAGE_EXTENSIONS, content_hash, discover, display_path, is_image_path, load_image

skimage_data = pytest.importorskip("skimage.data")


def photo(name="astronaut") -> Image.Image:
    return Image.fromarray(getattr(skimage_data, name)()).convert("RGB")


def touch_image(path: Path, size=(8, 8), color=(255, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def names(paths, root):
    return [str(Path(p).relative_to(root)) for p in paths]


# ---------------------------------------------------------------------------------- discover


def test_extensions_cover_the_documented_formats():
    assert {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif"} <= IMAGE_EXTENSIONS
    assert is_image_path("a/B.JPG") and is_image_path("x.HeIc") and not is_image_path("notes.txt")


def test_discover_recursive_sorted_filters_hidden_and_non_images(tmp_path):
    for rel in ["b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.gif", "z/e.tiff"]:
        touch_image(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub" / "raw.cr2").write_bytes(b"x")
    touch_image(tmp_path / ".hidden" / "secret.png")
    touch_image(tmp_path / "sub" / ".thumbs" / "t.png")
    touch_image(tmp_path / "._resource_fork.jpg")

    found = names(discover([tmp_path]), tmp_path)
    assert found == ["a.JPG", "b.png", "sub/c.webp", "sub/deeper/d.gif", "z/e.tiff"]
    assert names(discover([tmp_path]), tmp_path) == found  # deterministic


def test_discover_excludes_store_dir(tmp_path):
    touch_image(tmp_path / "a.png")
    store = tmp_path / "store"
    touch_image(store / "inside.png")
    assert names(discover([tmp_path], exclude=[store]), tmp_path) == ["a.png"]
    # a store path that does not exist yet is fine
    assert names(discover([tmp_path], exclude=[tmp_path / "nope"]), tmp_path) == ["a.png", "store/inside.png"]


def test_discover_explicit_files_and_dedup(tmp_path):
    a = touch_image(tmp_path / "a.png")
    touch_image(tmp_path / "b.png")
    txt = tmp_path / "readme.txt"
    txt.write_text("hi")
    hidden = touch_image(tmp_path / ".hidden.png")
    found = list(discover([a, tmp_path, a, txt, hidden]))
    assert names(found, tmp_path) == ["a.png", "b.png", ".hidden.png"]
    assert all(isinstance(p, Path) for p in found)


def test_discover_follows_dir_symlinks_and_survives_loops(tmp_path):
    photos = tmp_path / "photos"
    touch_image(photos / "a.png")
    touch_image(photos / "sub" / "b.png")
    (photos / "sub" / "loop").symlink_to(photos)  # photos/sub/loop -> photos
    elsewhere = tmp_path / "elsewhere"
    touch_image(elsewhere / "c.png")
    (photos / "link").symlink_to(elsewhere)
    (photos / "dup.png").symlink_to(photos / "a.png")  # same file twice
    (photos / "broken.png").symlink_to(tmp_path / "missing.png")

    found = names(discover([photos]), photos)
    assert found == ["a.png", "link/c.png", "sub/b.png"]


def test_discover_missing_argument_is_input_error(tmp_path):
    touch_image(tmp_path / "a.png")
    with pytest.raises(InputError, match="nope: no such file or directory"):
        discover([tmp_path, tmp_path / "nope"])  # raised at the call, not on first next()


def test_discover_reports_unreadable_dirs(tmp_path):
    touch_image(tmp_path / "a.png")
    locked = tmp_path / "locked"
    touch_image(locked / "b.png")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: chmod does not make a directory unreadable")
        errors = []
        found = names(discover([tmp_path], on_error=lambda p, why: errors.append((p, why))), tmp_path)
        assert found == ["a.png"]
        assert errors == [(locked, "permission denied")]
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(sys.platform != "linux", reason="arbitrary bytes in names: Linux file systems")
def test_non_utf8_and_newline_names(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9-\xff.png")  # latin-1, not UTF-8
    with open(raw, "wb") as fh:
        Image.new("RGB", (4, 4), (0, 255, 0)).save(fh, format="PNG")
    newline = tmp_path / "two\nlines.jpg"
    touch_image(newline)

    found = list(discover([tmp_path]))
    assert len(found) == 2
    assert os.fsencode(found[0]) == raw or os.fsencode(found[1]) == raw
    for path in found:
        assert load_image(path).size in [(4, 4), (8, 8)]
        shown = display_path(path)
        assert "\n" not in shown
        shown.encode("utf-8")  # printable: no lone surrogates
    assert display_path(newline).endswith("two\\nlines.jpg")
    # bytes path arguments work as well
    assert [os.fsencode(p) for p in discover([os.fsencode(tmp_path)])] == [os.fsencode(p) for p in found]


# -------------------------------------------------------------------------------- load_image


@pytest.mark.parametrize(
    "fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tif"), ("GIF", "gif")]
)
def test_formats_round_trip_to_rgb(tmp_path, fmt, ext):
    path = tmp_path / f"chelsea.{ext}"
    photo("chelsea").save(path, format=fmt)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (451, 300)


def test_heic_round_trip(tmp_path):
    path = tmp_path / "cat.heic"
    photo("chelsea").save(path, format="HEIF", quality=90)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (451, 300)
    ref = np.asarray(photo("chelsea"), dtype=float)
    assert np.abs(np.asarray(img, dtype=float) - ref).mean() < 10


def test_exif_orientation_rotates(tmp_path):
    path = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red band on the left edge
    img.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)
    r, g, b = out.getpixel((10, 2))  # the left band is now at the top
    assert r > 200 and b < 60


def test_draft_decodes_big_jpeg_smaller_but_not_below_draft_size(tmp_path):
    path = tmp_path / "big.jpg"
    photo().resize((2000, 1600)).save(path, quality=90)
    full = load_image(path)
    assert full.size == (2000, 1600)
    small = load_image(path, draft_size=224)
    assert min(small.size) >= 224 and small.size[0] < 2000
    assert small.size[0] / small.size[1] == pytest.approx(2000 / 1600, rel=0.01)


def test_draft_reduces_big_png_too(tmp_path):
    path = tmp_path / "big.png"
    photo().resize((1200, 900)).save(path)
    small = load_image(path, draft_size=224)
    assert 224 <= min(small.size) < 900


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(path)  # red in CMYK
    img = load_image(path, draft_size=8)
    assert img.mode == "RGB" and min(img.size) >= 8
    r, g, b = img.getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60


def test_16bit_grayscale_png_keeps_its_levels(tmp_path):
    path = tmp_path / "deep.png"
    arr = np.full((10, 12), 32768, dtype=np.uint16)
    arr[:, :6] = 65535
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (12, 10)
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert abs(img.getpixel((11, 0))[0] - 128) <= 1  # mid grey, not clipped to white


def test_one_pixel(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("L", (1, 1), 7).save(path)
    img = load_image(path, draft_size=224)
    assert img.mode == "RGB" and img.size == (1, 1) and img.getpixel((0, 0)) == (7, 7, 7)


def test_animated_gif_gives_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 3
    img = load_image(path)
    assert img.mode == "RGB" and img.getpixel((8, 8)) == (255, 0, 0)


def test_transparency_composited_on_white(tmp_path):
    path = tmp_path / "alpha.png"
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    img.save(path)
    out = load_image(path)
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((3, 3)) == (255, 255, 255)
    la = tmp_path / "la.png"
    Image.new("LA", (2, 2), (0, 0)).save(la)
    assert load_image(la).getpixel((1, 1)) == (255, 255, 255)
    pal = tmp_path / "pal.gif"
    Image.new("P", (2, 2), 0).save(pal, transparency=0)
    assert load_image(pal).getpixel((0, 0)) == (255, 255, 255)


def test_png_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(20000, 20000))  # 400 MP of black, ~50 KB on disk
    assert path.stat().st_size < 200_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may leak either
        with pytest.raises(ImageError) as err:
            load_image(path)
    msg = str(err.value)
    assert msg.startswith(str(path) + ": image is") and "400 MP" in msg and "100 MP limit" in msg
    assert "\n" not in msg


def test_image_between_pillow_warning_and_error_is_refused_quietly(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(12500, 12000))  # 150 MP: Pillow only warns, our limit refuses
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match=r"12500x12000 \(150 MP\), over the 100 MP limit"):
            load_image(path)


def test_megapixel_limit_is_configurable(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (200, 200)).save(path)
    with pytest.raises(ImageError, match=r"200x200 \(0 MP\), over the 0.01 MP limit"):
        load_image(path, max_megapixels=0.01)
    assert load_image(path, max_megapixels=None).size == (200, 200)


def test_truncated_jpeg(tmp_path):
    good = io.BytesIO()
    photo().save(good, format="JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert str(err.value).startswith(f"{path}: truncated or corrupt image: ")  # then Pillow's words


def test_truncated_png(tmp_path):
    good = io.BytesIO()
    photo().save(good, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(good.getvalue()[:5000])
    with pytest.raises(ImageError, match="truncated or corrupt image: "):
        load_image(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert str(err.value) == f"{path}: empty file"


def test_text_named_jpg(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_text("this is not a picture\n" * 10)
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert str(err.value) == f"{path}: not an image or unsupported format"


def test_missing_and_directory(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "gone.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_permission_denied(tmp_path):
    path = touch_image(tmp_path / "locked.png")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop reading")
        with pytest.raises(ImageError) as err:
            load_image(path)
        assert str(err.value) == f"{path}: permission denied"
        with pytest.raises(ImageError, match="permission denied"):
            content_hash(path)
    finally:
        path.chmod(0o644)


# ------------------------------------------------------------------------------ content_hash


def test_content_hash(tmp_path):
    a = tmp_path / "a.bin"
    b = tmp_path / "b.bin"
    c = tmp_path / "c.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    a.write_bytes(data)
    b.write_bytes(data)
    c.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    h = content_hash(a)
    assert h == hashlib.blake2b(data, digest_size=16).hexdigest() and len(h) == 32
    assert content_hash(b) == h and content_hash(c) != h
    with pytest.raises(ImageError, match="file not found"):
        content_hash(tmp_path / "nope")


# Every Pillow mode a real photo folder holds, in the formats that store it. Each is decoded
# both below and above the draft threshold (2 x the model's input size), where big non-JPEG
# images are box-reduced: Image.reduce refuses palette, 1-bit and 16-bit modes, so a reduction
# before the RGB conversion once aborted whole ingests.
MODES_BY_FORMAT = [
    ("png", "1"),
    ("png", "L"),
    ("png", "LA"),
    ("png", "P"),
    ("png", "P+transparency"),
    ("png", "RGB"),
    ("png", "RGBA"),
    ("png", "I;16"),
    ("gif", "P"),
    ("gif", "L"),
    ("bmp", "1"),
    ("bmp", "P"),
    ("bmp", "L"),
    ("bmp", "RGB"),
    ("tiff", "1"),
    ("tiff", "L"),
    ("tiff", "P"),
    ("tiff", "I;16"),
    ("tiff", "I"),
    ("tiff", "F"),
    ("tiff", "CMYK"),
    ("tiff", "RGBA"),
    ("tiff", "LA"),
    ("jpg", "L"),
    ("jpg", "CMYK"),
    ("jpg", "RGB"),
    ("webp", "RGBA"),
    ("webp", "RGB"),
]


def _image_in_mode(mode: str, size) -> Image.Image:
    img = photo("astronaut").resize(size)
    if mode == "P+transparency":
        img = img.convert("P")
        img.info["transparency"] = 0
        return img
    if mode in ("I;16", "I", "F"):
        arr = np.asarray(img.convert("L"), np.uint16) * 257
        out = Image.fromarray(arr.astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
        assert out.mode == mode
        return out
    return img.convert(mode)


@pytest.mark.parametrize("size", [(120, 90), (700, 500)], ids=["small", "above-draft"])
@pytest.mark.parametrize("fmt,mode", MODES_BY_FORMAT, ids=[f"{f}-{m}" for f, m in MODES_BY_FORMAT])
def test_every_photo_mode_decodes_to_rgb_at_any_size(tmp_path, fmt, mode, size):
    path = tmp_path / f"img.{fmt}"
    img = _image_in_mode(mode, size)
    img.save(path, **({"transparency": 0} if mode == "P+transparency" else {}))
    out = load_image(path, draft_size=224)
    assert out.mode == "RGB"
    if size == (700, 500):
        assert 224 <= min(out.size) < 500  # reduced, never below the model's input
    else:
        assert out.size == size
    assert np.asarray(out).std() > 5  # the picture survived (not a blank frame)
