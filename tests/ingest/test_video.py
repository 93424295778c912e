"""Videos: frame sampling on generated videos (PyAV encodes them here), their frames as items
of a real store, re-ingest, change, move, prune, bad files and a kill -9 in a video's commit."""

import os
import shutil
import time

import pytest
from kit import semdb_app, semdb_cli

from semdb.errors import ImageError
from semdb.video.frames import Sampling, sample
from semdb.video.synthetic import Scene, write_audio_only, write_video
from semdb.video.timecode import format_time

CUTS = [Scene(3, (255, 0, 0)), Scene(1.5, (0, 0, 255), "disc"), Scene(5, (0, 255, 0), "bars", pan=2)]


@pytest.fixture()
def media(tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    write_video(folder / "cuts.mp4", CUTS)
    write_video(folder / "portrait.mov", [Scene(3, (255, 255, 0), "disc")], rotation=90)
    return folder


def test_frames_land_on_the_cuts_and_at_least_every_few_seconds(tmp_path):
    starts = write_video(tmp_path / "v.mp4", CUTS)
    info, frames = sample(str(tmp_path / "v.mp4"), 224)
    frames = list(frames)
    times = [f.ms for f in frames]
    assert info.duration_ms == 9500 and (info.width, info.height) == (160, 96)
    assert [f.ms for f in frames if f.cut] == [round(s * 1000) for s in starts[1:]]
    assert times[0] == 0 and max(b - a for a, b in zip(times, times[1:])) <= 2000
    assert all(min(f.image.size) == 96 for f in frames)  # never scaled up
    red, blue = frames[0].image.getpixel((2, 2)), frames[times.index(3000)].image.getpixel((2, 2))
    assert red[0] > 200 > red[2] and blue[2] > 200 > blue[0]


def test_rotation_variable_rate_and_reduced_size(tmp_path):
    write_video(tmp_path / "r.mp4", [Scene(1, (255, 255, 255), "square")], rotation=90, size=(320, 160))
    info, frames = sample(str(tmp_path / "r.mp4"), 64)
    frame = next(frames)
    assert (info.width, info.height, info.rotation) == (160, 320, 90)
    assert frame.image.size == (64, 128)  # upright and scaled by FFmpeg to short side 64

    starts = write_video(tmp_path / "vfr.mp4", [Scene(2, (255, 0, 0)), Scene(2, (0, 0, 255))], vfr=True)
    info, frames = sample(str(tmp_path / "vfr.mp4"), 64)
    assert [f.ms for f in frames if f.cut] == [round(starts[1] * 1000)]


def test_bad_videos_are_one_line_failures(tmp_path):
    write_audio_only(tmp_path / "audio.mp4")
    with pytest.raises(ImageError, match="no video stream"):
        sample(str(tmp_path / "audio.mp4"), 64)
    (tmp_path / "junk.mkv").write_bytes(b"\x1a\x45\xdf\xa3 not really matroska" * 10)
    with pytest.raises(ImageError, match="cannot"):
        sample(str(tmp_path / "junk.mkv"), 64)
    write_video(tmp_path / "big.mp4", [Scene(1, (9, 9, 9))], size=(640, 480))
    with pytest.raises(ImageError, match="over the 0.1 MP limit"):
        sample(str(tmp_path / "big.mp4"), 64, Sampling(max_megapixels=0.1))


def test_a_truncated_video_keeps_what_plays(tmp_path):
    write_video(tmp_path / "v.mkv", CUTS, codec="mpeg4")  # Matroska: playable up to where it stops
    raw = (tmp_path / "v.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(raw[: len(raw) * 6 // 10])
    info, frames = sample(str(tmp_path / "cut.mkv"), 64)
    times = [f.ms for f in frames]
    assert times[0] == 0 and 3000 in times and times[-1] < 9500


def test_format_time():
    assert [format_time(ms) for ms in (0, 83_400, 3_723_000)] == ["00:00", "01:23", "1:02:03"]


def _frames(db):
    return sorted((os.path.basename(it.path), it.frame_ms) for it in db.store.iter_items())


def test_videos_become_frame_items_skipped_moved_changed_pruned(media, tmp_path, tiny_model):
    import semdb

    store = tmp_path / "store"
    with semdb.open(store, model=tiny_model) as db:
        s = db.ingest([media])
        assert (s["new"], s["failed"], s["video_frames"]) == (2, 0, db.store.count())
        frames = _frames(db)
        assert {("cuts.mp4", 0), ("cuts.mp4", 3000), ("cuts.mp4", 4500), ("portrait.mov", 0)} <= set(frames)
        portrait = db.store.items_by_path(str(media / "portrait.mov"))[0]
        assert (portrait.width, portrait.height, portrait.duration_ms) == (96, 160, 3000)
        assert db.store.verify() == []

        again = db.ingest([media])  # unchanged: nothing decoded
        assert (again["unchanged"], again["embedded"], _frames(db)) == (2, 0, frames)

        os.utime(media / "cuts.mp4", ns=(1, 1))  # touched: same content, metadata refreshed only
        shutil.move(media / "portrait.mov", media / "upright.mov")
        s = db.ingest([media])
        assert (s["unchanged"], s["moved"], s["embedded"]) == (1, 1, 0)
        assert {f for f in _frames(db) if f[0] == "upright.mov"} == {("upright.mov", 0)}
        assert db.store.items_by_path(str(media / "cuts.mp4"))[0].mtime_ns == 1

        write_video(media / "cuts.mp4", [Scene(2, (0, 0, 0)), Scene(2, (255, 255, 255))])  # changed: whole again
        s = db.ingest([media])
        assert s["changed"] == 1
        assert [ms for name, ms in _frames(db) if name == "cuts.mp4"] == [0, 2000]

        os.remove(media / "cuts.mp4")
        s = db.ingest([media], prune=True)
        assert s["pruned"] == 2 and _frames(db) == [("upright.mov", 0)]
        assert db.store.verify() == []


def test_discovery_by_extension_and_by_first_bytes(tmp_path, tiny_model):
    import semdb

    folder = tmp_path / "m"
    folder.mkdir()
    write_video(folder / "CLIP.MP4", [Scene(1, (200, 0, 0))])
    write_video(tmp_path / "x.mp4", [Scene(1, (0, 200, 0))])
    shutil.move(tmp_path / "x.mp4", folder / "recovered")  # no extension: found by its first bytes
    (folder / "notes").write_text("not a video")
    write_audio_only(folder / "song.m4v")
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        s = db.ingest([folder])
        assert s["new"] == 2 and [f["reason"] for f in s["failures"]] == ["no video stream"]
        again = db.ingest([folder])  # the failed file is remembered, not opened again
        assert (again["failed_before"], again["failed"], again["unchanged"]) == (1, 0, 2)


def test_kill_9_in_a_videos_commit_resumes_without_storing_frames_twice(media, tmp_path, tiny_model):
    import semdb

    store = tmp_path / "store"
    killed = semdb_cli(
        "ingest", media, "--store", store, "--model", tiny_model, check=None, env={"SEMDB_FAULT_POINT": "video_txn:2"}
    )
    assert killed.returncode == -9
    with semdb.open(store, readonly=True) as db:
        assert {name for name, _ in _frames(db)} == {"cuts.mp4"}  # the first video committed, not the second
    semdb_app("ingest", media, "--store", store, "--model", tiny_model)
    with semdb.open(store, readonly=True) as db:
        frames = _frames(db)
        assert len(frames) == len(set(frames)) and {name for name, _ in frames} == {"cuts.mp4", "portrait.mov"}
        assert db.store.verify() == []


def test_item_segments_carry_frame_times_and_stay_format_1_without_videos():
    from semdb.store import segments
    from semdb.store.format import Item, item_of, item_segment_row

    photo = Item(1, "/p/a.jpg", 10, 1, "ab" * 16, 4, 3, 1.0, 1.0, 5.0)
    frame = Item(2, "/p/v.mp4", 10, 1, "cd" * 16, 4, 3, 1.0, 1.0, 5.0, frame_ms=83_400, duration_ms=90_000)
    only_photos = segments.encode([item_segment_row(photo)])
    assert segments.header(only_photos).version == 1  # readable by a semdb from before videos
    mixed = segments.encode([item_segment_row(photo), item_segment_row(frame)])
    assert segments.header(mixed).version == 2
    assert [item_of(r) for r in map(segments.Row._make, _rows(segments.decode(mixed)))] == [photo, frame]
    assert item_of(segments.decode_row(mixed, 2)) == frame and item_of(segments.decode_row(mixed, 1)) == photo


def _rows(cols):
    from semdb.store.format import item_segment_rows

    return item_segment_rows(cols)


def _still(scene: Scene, path, size=(160, 96)):
    """A photo of a scene's first frame, as the video draws it."""
    from PIL import Image

    from semdb.video.synthetic import draw

    Image.fromarray(draw(scene, 0, *size)).save(path)
    return path


@pytest.fixture()
def video_store(media, tmp_path, tiny_model):
    import semdb

    shutil.copy(media / "cuts.mp4", media / "copy-of-cuts.mp4")
    _still(Scene(1, (255, 255, 255), "bars"), media / "photo.png")
    store = tmp_path / "store"
    with semdb.open(store, model=tiny_model) as db:
        assert db.ingest([media], train_now=True)["failed"] == 0
    return store


def test_search_groups_frames_by_video_with_their_time(video_store, media, tmp_path, tiny_model):
    import semdb

    blue = _still(CUTS[1], tmp_path / "blue.png")
    with semdb.open(video_store, model=tiny_model, readonly=True) as db:
        hits = db.search(image=blue, k=10)
        assert hits[0].frame_ms == 3000 and hits[0].path.endswith("cuts.mp4")
        assert len({h.path for h in hits}) == len(hits) == 4  # two copies, the portrait, the photo
        every = db.search(image=blue, k=10, frames=True)
        assert len(every) > len({h.path for h in every}) and every[0][:2] == hits[0][:2]
        similar = db.search(like=hits[0].id, k=10, frames=True)
        assert hits[0].id not in [h.id for h in similar] and similar[0].frame_ms == 3000  # the copy's frame

        groups = db.duplicates()["groups"]
        assert [sorted(os.path.basename(p) for p in g["paths"]) for g in groups] == [["copy-of-cuts.mp4", "cuts.mp4"]]
        tags = db.classify(["red", "blue"])
        assert sorted(os.path.basename(t["path"]) for t in tags) == [
            "copy-of-cuts.mp4",
            "cuts.mp4",
            "photo.png",
            "portrait.mov",
        ]
        assert all(("time" in t) == t["path"].endswith(("mp4", "mov")) for t in tags)


def test_cli_search_prints_path_at_time(video_store, tmp_path):
    import json

    blue = _still(CUTS[1], tmp_path / "blue.png")
    args = ("query", "--image", blue, "--store", video_store, "-k", "2", "--no-server")
    table = semdb_app(*args).stdout
    assert "cuts.mp4 @ 00:03" in table
    rows = json.loads(semdb_app(*args, "--json").stdout)
    assert rows[0]["time"] == 3.0 and rows[0]["path"].endswith("cuts.mp4")
    paths = semdb_app(*args, "--paths-only").stdout.splitlines()
    assert len(paths) == 2 and paths[0].endswith("cuts.mp4") and os.path.exists(paths[0])
    frames = json.loads(semdb_app(*args, "--json", "--frames", "-k", "20").stdout)
    assert sum(r["path"].endswith("/cuts.mp4") for r in frames) > 1


def test_served_frames_thumbnails_and_the_video_with_byte_ranges(video_store, media):
    import io
    import json

    from PIL import Image
    from serve_helpers import Server

    import semdb

    with semdb.open(video_store, readonly=True) as db:
        blue = next(it for it in db.store.items_by_path(str(media / "cuts.mp4")) if it.frame_ms == 3000)
        photo = db.store.item_by_path(str(media / "photo.png"))
    server = Server(video_store)
    try:
        hits = server.get_json("/api/search?q=anything&k=10&frames=1")["hits"]
        assert {h["time"] for h in hits if h["path"].endswith("cuts.mp4")} >= {0.0, 3.0}
        assert all(("time" in h) == (not h["path"].endswith(".png")) for h in hits)
        item = server.get_json(f"/api/item/{blue.id}")
        assert (item["time"], item["duration"], item["video"]) == (3.0, 9.5, f"/video/{blue.id}")

        status, headers, body = server.get(f"/thumb/{blue.id}?size=64")
        r, g, b = Image.open(io.BytesIO(body)).convert("RGB").getpixel((2, 2))
        assert status == 200 and headers["content-type"] == "image/jpeg" and b > 200 > r

        raw = (media / "cuts.mp4").read_bytes()
        status, headers, body = server.get(f"/video/{blue.id}", headers={"Range": "bytes=100-199"})
        assert status == 206 and body == raw[100:200] and headers["content-type"] == "video/mp4"
        assert headers["content-range"] == f"bytes 100-199/{len(raw)}" and headers["accept-ranges"] == "bytes"
        status, _, body = server.get(f"/video/{blue.id}")
        assert status == 200 and body == raw
        status, _, body = server.get(f"/video/{photo.id}")
        assert status == 404 and "not a video frame" in json.loads(body)["error"]
    finally:
        assert server.stop() == 0, server.output()


def test_export_import_and_rm_carry_every_frame(video_store, media, tmp_path):
    import semdb

    out = tmp_path / "items.parquet"
    with semdb.open(video_store, readonly=True) as db:
        db.export(out)
        before = sorted((it.path, it.frame_ms, it.duration_ms) for it in db.store.iter_items())
    with semdb.open(tmp_path / "copy") as copy:
        assert copy.import_parquet([out])["added"] == len(before)
        assert copy.import_parquet([out])["unchanged"] == len(before)  # (path, time) is what matches
        assert sorted((it.path, it.frame_ms, it.duration_ms) for it in copy.store.iter_items()) == before
        removed = copy.rm([str(media / "cuts.mp4")])
        assert len(removed) == sum(p.endswith("/cuts.mp4") for p, _, _ in before) > 1
        assert copy.store.items_by_path(str(media / "cuts.mp4")) == [] and copy.store.verify() == []


def test_retrain_reads_frames_again_at_their_times(video_store, tiny_model):
    import semdb

    with semdb.open(video_store, model=tiny_model) as db:
        n = db.store.count()
        s = db.retrain(sample=n)
        assert (s["reembedded"], s["transcoded"]) == (n, 0)  # every frame decoded again, none from its old code
        assert db.store.verify() == []


def test_the_page_plays_a_frame_from_its_time(tmp_path, tiny_model, browser):  # noqa: F811 - the fixture
    """Headless Chromium: a click on a frame's card opens the video at that frame's time."""
    from serve_helpers import Server

    import semdb

    folder = tmp_path / "clips"
    folder.mkdir()
    write_video(folder / "walk.webm", CUTS, codec="libvpx")  # WebM: every Chromium build plays it
    with semdb.open(tmp_path / "store", model=tiny_model) as db:
        assert db.ingest([folder], train_now=True)["failed"] == 0
    server = Server(tmp_path / "store")
    try:
        page = browser.new_page()
        page.goto(server.base + "/")
        card = page.locator(".hit", has_text="walk.webm @ 00:03")
        card.locator("img").click()
        video = page.locator("#full-video")
        video.wait_for(state="visible")
        deadline = time.monotonic() + 60
        while video.evaluate("v => v.readyState") < 1 and time.monotonic() < deadline:  # metadata loaded
            time.sleep(0.1)
        t = video.evaluate("v => v.currentTime")
        assert 3.0 <= t < 4.5, t
        assert page.locator("#full").is_hidden()
        page.keyboard.press("Escape")
        assert video.evaluate("v => v.getAttribute('src')") is None
        page.close()
    finally:
        assert server.stop() == 0, server.output()
