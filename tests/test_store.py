"""Tests for semdb.store: real LMDB environments in tmp dirs, real second processes."""

import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lmdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semdb import segments
from semdb import store as store_mod
from semdb.errors import InputError, StoreError, StoreLockedError
from semdb.store import SCHEMA_VERSION, Item, Store, default_store_path

CB = 8  # code bytes used throughout
ROOT = Path(__file__).resolve().parents[1]


def code_for(i: int, salt: int = 0) -> bytes:
    return np.random.default_rng(i * 1000 + salt).integers(0, 256, CB, dtype=np.uint8).tobytes()


def emb_for(i: int, dim: int = 16) -> np.ndarray:
    x = np.random.default_rng(i).standard_normal(dim).astype(np.float32)
    return x / np.linalg.norm(x)


def new_item(path: str, h: str | None = None) -> Item:
    h = h or "sha256:" + hashlib.sha256(os.fsencode(path)).hexdigest()
    return Item.new(path, size=len(path), mtime_ns=1_700_000_000_000_000_000, hash=h, width=640, height=480)


def code_map(s: Store) -> dict[int, bytes]:
    ids, codes = s.load_codes()
    assert len(set(ids.tolist())) == len(ids)
    return {int(i): c.tobytes() for i, c in zip(ids, codes)}


def raw_segments(s: Store) -> dict[int, bytes]:
    env, db = s._shared.env, s._shared.dbs["codes"]
    with env.begin() as txn:
        return {int.from_bytes(k, "big"): bytes(v) for k, v in txn.cursor(db=db)}


def snapshot(s: Store):
    return (
        [(it.id, it.path, it.hash) for it in s.iter_items()],
        code_map(s),
        s.meta(),
        raw_segments(s),
        s.staging_count(),
    )


@pytest.fixture
def path(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def store(path):
    s = Store(path, create=True)
    with s.write() as w:
        w.set_codec(b"codec-bytes", "codec-1", CB)
    yield s
    s.close()


def run_py(code: str, *args, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


# -- item records ---------------------------------------------------------------------------

fs_paths = st.binary(min_size=1, max_size=300).filter(lambda b: b"\0" not in b).map(os.fsdecode)
u64 = st.integers(0, 2**64 - 1)
items = st.builds(
    Item,
    id=u64,
    path=fs_paths,
    size=u64,
    mtime_ns=st.integers(-(2**63), 2**63 - 1),
    hash=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=100),
    width=st.integers(0, 2**32 - 1),
    height=st.integers(0, 2**32 - 1),
    added=st.floats(allow_nan=False),
    updated=st.floats(allow_nan=False),
)


@given(items)
@settings(max_examples=300)
def test_item_record_round_trips_exactly(item):
    raw = item.to_bytes()
    assert raw == item.to_bytes()  # deterministic
    back = Item.from_bytes(raw)
    assert back == item
    assert os.fsencode(back.path) == os.fsencode(item.path)


hex_hashes = st.binary(min_size=16, max_size=16).map(bytes.hex)


@given(
    st.lists(
        st.builds(
            dataclasses.replace,
            items,
            hash=st.one_of(hex_hashes, items.map(lambda it: it.hash)),
            taken=st.one_of(st.none(), st.floats(allow_nan=False)),
        ),
        min_size=1,
        max_size=20,
    )
)
@settings(max_examples=200)
def test_item_segment_round_trips_exactly(batch):
    """Any items (any path bytes, hashes hex or not, every field's range) survive a segment."""
    rows = [store_mod._row(dataclasses.replace(it, id=1 + n * (2**33 + 7))) for n, it in enumerate(batch)]  # big gaps
    raw = segments.encode(rows)
    assert raw == segments.encode(rows)  # deterministic
    assert store_mod._rows_of(segments.decode(raw)) == rows
    assert [segments.decode_row(raw, r.id) for r in rows] == rows  # get_item's one-row decode
    assert segments.decode_row(raw, rows[-1].id + 1) is None and segments.decode_row(raw, 0) is None


@given(st.text(min_size=1, max_size=50))
def test_any_text_path_round_trips_or_is_refused(text):
    item = dataclass_item(text)
    try:
        raw = item.to_bytes()
    except InputError:
        return  # lone surrogates that no file system name decodes to, or NUL
    assert Item.from_bytes(raw).path == text


def dataclass_item(path):
    return Item(1, path, 2, 3, "h", 4, 5, 6.0, 7.0)


@pytest.mark.parametrize(
    "field,value",
    [
        ("size", -1),
        ("width", 2**32),
        ("id", 2**64),
        ("mtime_ns", 2**63),
        ("hash", ""),
        ("path", ""),
        ("path", "a\0b"),
        ("hash", "x" * 500),
    ],
)
def test_item_record_rejects_out_of_range_fields(field, value):
    item = dataclass_item("/a.jpg")
    setattr(item, field, value)
    with pytest.raises(InputError):
        item.to_bytes()


def test_truncated_or_foreign_record_is_corrupt():
    raw = dataclass_item("/a.jpg").to_bytes()
    for bad in (raw[:10], b"\x09" + raw[1:], raw[: store_mod._ITEM_HEADS[store_mod._ITEM_VERSION].size + 1]):
        with pytest.raises(store_mod._Corrupt):
            Item.from_bytes(bad)


def test_records_of_schema_1_read_with_no_date_taken():
    import struct

    v1 = struct.pack("<BQQqIIddH", 1, 1, 2, 3, 4, 5, 6.0, 7.0, 1) + b"h" + b"/a.jpg"
    assert Item.from_bytes(v1) == Item(1, "/a.jpg", 2, 3, "h", 4, 5, 6.0, 7.0, None)
    dated = Item(1, "/a.jpg", 2, 3, "h", 4, 5, 6.0, 7.0, 1.6e9)
    assert Item.from_bytes(dated.to_bytes()) == dated


def test_odd_paths_are_stored_and_found(store):
    odd = [
        os.fsdecode(b"/photos/caf\xe9.jpg"),
        "/a/line\nbreak.png",
        "/ünï/ç😀.jpg",
        "/" + "long/" * 150 + "x.jpg",
    ]  # the last is longer than LMDB's 511-byte key limit
    with store.write() as w:
        ids = [w.add_item(new_item(p), code=code_for(i)) for i, p in enumerate(odd)]
    for i, p in zip(ids, odd):
        assert store.item_by_path(p).id == i
        assert store.get_item(i).path == p
    assert store.item_by_path("/" + "long/" * 150 + "y.jpg") is None
    assert store.verify() == []


# -- add / update / delete -------------------------------------------------------------------


def test_add_update_delete_keep_every_index_consistent(store):
    with store.write() as w:
        a = w.add_item(new_item("/a.jpg", "H1"), code=code_for(1))
        b = w.add_item(new_item("/b.jpg", "H1"), code=code_for(2))  # duplicate content
        c = w.add_item(new_item("/c.jpg", "H2"), embedding=emb_for(3))  # staged
        assert w.get_item(a).path == "/a.jpg"  # a batch reads its own writes
        assert [it.id for it in w.items_by_hash("H1")] == [a, b]
    assert store.verify() == []
    assert [it.id for it in store.items_by_hash("H1")] == [a, b]
    assert store.count() == 3 and store.staging_count() == 1
    assert set(code_map(store)) == {a, b}

    moved = store.get_item(a)
    moved.path = "/moved/a.jpg"
    with store.write() as w:
        w.update_item(moved)
    assert store.item_by_path("/a.jpg") is None
    assert store.item_by_path("/moved/a.jpg").id == a
    assert code_map(store)[a] == code_for(1)  # a move keeps the code

    changed = store.get_item(b)
    changed.hash = "H3"
    with store.write() as w:
        w.update_item(changed)
        w.set_code(b, code_for(2, salt=1))
        w.set_code(c, code_for(3))  # staged -> coded
    assert [it.id for it in store.items_by_hash("H1")] == [a]
    assert [it.id for it in store.items_by_hash("H3")] == [b]
    assert code_map(store) == {a: code_for(1), b: code_for(2, salt=1), c: code_for(3)}
    assert store.staging_count() == 0
    assert store.verify() == []

    with store.write() as w:
        w.set_embedding(a, emb_for(1))  # coded -> staged
        w.delete_item(b)
    assert store.get_item(b) is None and store.items_by_hash("H3") == []
    assert store.item_by_path("/b.jpg") is None
    assert set(code_map(store)) == {c} and store.staging_count() == 1
    assert store.items([a, b, c])[1] is None
    assert store.verify() == []


def test_bad_calls_raise_input_error_and_leave_the_batch_usable(store):
    with store.write() as w:
        a = w.add_item(new_item("/a.jpg"), code=code_for(1))
        with pytest.raises(InputError, match="already in the store"):
            w.add_item(new_item("/a.jpg"), code=code_for(2))
        with pytest.raises(InputError, match="exactly one"):
            w.add_item(new_item("/b.jpg"))
        with pytest.raises(InputError, match="without id"):
            w.add_item(dataclass_item("/b.jpg"), code=code_for(2))
        with pytest.raises(InputError, match="bytes"):
            w.add_item(new_item("/b.jpg"), code=b"short")
        with pytest.raises(InputError, match="uint8"):
            w.set_code(a, np.zeros(CB, np.int64))
        with pytest.raises(InputError, match="no item"):
            w.delete_item(999)
        with pytest.raises(InputError, match="managed by the store"):
            w.set_meta("next_id", 5)
        with pytest.raises(InputError, match="JSON"):
            w.set_meta("x", object())
        w.add_item(new_item("/s.jpg"), embedding=emb_for(1, dim=16))
        with pytest.raises(InputError, match="shape"):
            w.add_item(new_item("/t.jpg"), embedding=emb_for(1, dim=8))
        with pytest.raises(InputError, match="NaN"):
            w.add_item(new_item("/t.jpg"), embedding=np.full(16, np.nan))
        w.set_meta("model_id", {"name": "ViT-B-32", "dim": 512})
    assert store.count() == 2 and store.meta()["model_id"]["dim"] == 512
    assert store.verify() == []


def test_codes_need_a_codec(path):
    with Store(path, create=True) as s, s.write() as w:
        with pytest.raises(InputError, match="no codec"):
            w.add_item(new_item("/a.jpg"), code=code_for(1))


def test_exception_inside_write_leaves_store_unchanged(store):
    with store.write() as w:
        for i in range(20):
            w.add_item(new_item(f"/{i}.jpg"), code=code_for(i))
        w.add_item(new_item("/staged.jpg"), embedding=emb_for(0))
    before = snapshot(store)
    with pytest.raises(RuntimeError):
        with store.write() as w:
            w.delete_item(1)
            w.set_code(2, code_for(2, salt=9))
            w.add_item(new_item("/new.jpg"), code=code_for(99))
            w.set_meta("note", "x")
            w.set_codec(b"other", "codec-2", CB)
            raise RuntimeError("boom")
    assert snapshot(store) == before
    assert store.codec_bytes() == b"codec-bytes"
    assert store.verify() == []


def test_kill_9_mid_ingest_leaves_whole_batches_only(path):
    proc = run_py(
        """
        import sys, numpy as np
        from semdb.store import Store, Item
        with Store(sys.argv[1], create=True) as s:
            with s.write() as w:
                w.set_codec(b"c", "c", 8)
            for b in range(100000):
                with s.write() as w:
                    for i in range(50):
                        it = Item.new(f"/{b}/{i}.jpg", 1, 1, f"h{b}-{i}", 1, 1)
                        if i % 2:
                            w.add_item(it, code=bytes(8))
                        else:
                            w.add_item(it, embedding=np.ones(4, np.float32) / 2)
                print("committed", b, flush=True)
        """,
        path,
    )
    for _ in range(20):  # kill it while it writes batch 21 or a later one
        assert proc.stdout.readline().startswith("committed")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    with Store(path) as s:
        n = s.count()
        assert n > 0 and n % 50 == 0
        assert s.staging_count() == n // 2 and len(s.load_codes()[0]) == n // 2
        assert s.verify() == []


# -- codes, segments, cache ------------------------------------------------------------------


def test_load_codes_returns_exactly_the_coded_items_and_is_cached(store):
    expected = {}
    with store.write() as w:
        for i in range(30):
            expected[w.add_item(new_item(f"/{i}.jpg"), code=code_for(i))] = code_for(i)
        w.add_item(new_item("/staged.jpg"), embedding=emb_for(0))
    ids, codes = store.load_codes()
    assert ids.dtype == np.uint64 and codes.dtype == np.uint8 and codes.shape == (30, CB)
    assert code_map(store) == expected
    assert store.load_codes()[1] is codes  # unchanged store: served from memory
    with pytest.raises(ValueError):
        codes[0, 0] = 1  # the cached arrays are shared, so read-only
    with store.write() as w:
        w.delete_item(1)
    del expected[1]
    assert store.load_codes()[1] is not codes
    assert code_map(store) == expected


def test_empty_store_has_no_codes(store):
    ids, codes = store.load_codes()
    assert ids.shape == (0,) and codes.shape == (0, CB)


def test_delete_and_recode_rewrite_only_the_segment_holding_the_item(store):
    batches = []
    for b in range(3):
        with store.write() as w:
            batches.append([w.add_item(new_item(f"/{b}/{i}.jpg"), code=code_for(b * 10 + i)) for i in range(10)])
    before = raw_segments(store)
    assert len(before) == 3  # one segment per batch
    with store.write() as w:
        w.delete_item(batches[1][3])
        w.delete_item(batches[1][4])
    after = raw_segments(store)
    assert after.keys() == before.keys()
    assert [s for s in before if before[s] != after[s]] == [1]

    with store.write() as w:
        w.set_code(batches[2][0], code_for(7, salt=7))
    again = raw_segments(store)
    assert again[0] == after[0] and again[1] == after[1] and again[2] != after[2]
    assert len(again) == 4  # the new code went into the batch's new segment
    assert code_map(store)[batches[2][0]] == code_for(7, salt=7)

    with store.write() as w:
        for i in batches[0]:
            w.delete_item(i)
    assert 0 not in raw_segments(store)  # an emptied segment disappears
    assert store.verify() == []


def test_compaction_merges_small_segments_and_preserves_codes(store, monkeypatch):
    monkeypatch.setattr(store_mod, "COMPACT_AFTER", 4)
    monkeypatch.setattr(store_mod, "SEGMENT_MAX", 16)
    expected = {}
    for b in range(12):
        with store.write() as w:
            for i in range(3):
                expected[w.add_item(new_item(f"/{b}/{i}.jpg"), code=code_for(b * 3 + i))] = code_for(b * 3 + i)
        assert sum(len(v) < 16 * (8 + CB) for v in raw_segments(store).values()) <= 5
        assert code_map(store) == expected
    with store.write() as w:
        w.delete_item(5)
    del expected[5]
    store.compact()
    sizes = [int.from_bytes(v[:8], "little") for v in raw_segments(store).values()]
    # segments of at least half SEGMENT_MAX are left alone, the small rest merged into one
    assert sum(sizes) == 35 and max(sizes) <= 16 and sum(n < 8 for n in sizes) <= 1
    assert code_map(store) == expected
    assert store.verify() == []


def test_map_grows_when_full(tmp_path):
    with Store(tmp_path / "s", create=True, map_size=1 << 16) as s:
        with s.write() as w:
            w.set_codec(b"c" * 5000, "c", CB)
        start = s.info()["map_size"]
        n = 0
        for b in range(30):  # many batches
            with s.write() as w:
                for i in range(100):
                    w.add_item(new_item(f"/{b}/{i}.jpg"), code=code_for(n))
                    n += 1
        with s.write() as w:  # one batch far larger than the map
            for i in range(5000):
                w.add_item(new_item(f"/big/{i}.jpg"), embedding=emb_for(i, dim=64))
        assert s.info()["map_size"] > start
        assert s.count() == n + 5000 and len(s.load_codes()[0]) == n
        assert s.staging_count() == 5000
        assert s.verify() == []
        assert s.item_by_path("/big/4999.jpg") is not None


def test_codec_and_codes_of_all_staged_items_commit_in_one_batch(path):
    """The store stores what it is given: the codec and the codes of every staged item in one
    write batch (the codec itself runs in the caller: StoreContext.install_codec)."""
    with Store(path, create=True) as s:
        for b in range(3):
            with s.write() as w:
                for i in range(7):
                    w.add_item(new_item(f"/{b}/{i}.jpg"), embedding=emb_for(b * 7 + i))
        assert s.staging_count() == 21

        def encode(x):
            assert x.dtype == np.float32 and x.shape[1] == 16
            return (np.abs(x[:, :CB]) * 255).astype(np.uint8)

        staged = {int(i): e for ids, embs in s.iter_staging(batch=5) for i, e in zip(ids, embs)}
        assert len(staged) == 21
        ids = np.array(sorted(staged), np.uint64)
        X = np.stack([staged[int(i)] for i in ids]).astype(np.float32)
        with pytest.raises(InputError, match="code is"):
            with s.write() as w:
                w.set_codec(b"trained", "codec-1", CB)
                w.set_codes(ids, np.zeros((len(ids), CB + 1), np.uint8))
        assert s.staging_count() == 21 and s.codec_bytes() is None
        with s.write() as w:
            w.set_codec(b"trained", "codec-1", CB)
            w.set_codes(ids, encode(X))
        assert s.staging_count() == 0
        codes = code_map(s)
        assert set(codes) == set(staged)
        for i, e in staged.items():
            assert codes[i] == encode(e[None].astype(np.float32)).tobytes()
        assert s.verify() == []


# -- opening, errors, model binding ----------------------------------------------------------


def test_open_errors(tmp_path):
    with pytest.raises(StoreError, match="run `semdb ingest` first"):
        Store(tmp_path / "missing", readonly=True)
    with pytest.raises(StoreError, match="run `semdb ingest` first"):
        Store(tmp_path / "missing")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    for kw in ({"create": True}, {"readonly": True}):
        with pytest.raises(StoreError, match="is not a semdb store \\(no data.mdb\\); pass a new"):
            Store(other, **kw)
    assert sorted(p.name for p in other.iterdir()) == ["a.jpg"]  # nothing created there
    env = lmdb.open(str(tmp_path / "foreign"))
    with env.begin(write=True) as txn:
        txn.put(b"k", b"v")
    env.close()
    with pytest.raises(StoreError, match="not a semdb store"):
        Store(tmp_path / "foreign")
    (tmp_path / "empty").mkdir()
    with Store(tmp_path / "empty", create=True) as s:
        assert s.count() == 0 and s.meta()["schema"] == SCHEMA_VERSION
    with Store(tmp_path / "empty", readonly=True) as s:
        with pytest.raises(StoreError, match="read-only"):
            s.write()


def test_newer_schema_is_refused(path, store):
    with store.write() as w:
        w.add_item(new_item("/a.jpg"), code=code_for(1))
    env, db = store._shared.env, store._shared.dbs["meta"]
    with env.begin(write=True) as txn:
        txn.put(b"schema", json.dumps(SCHEMA_VERSION + 1).encode(), db=db)
    store.close()
    for kw in ({}, {"readonly": True}):
        with pytest.raises(
            StoreError,
            match=f"made by a newer semdb \\(schema {SCHEMA_VERSION + 1} > {SCHEMA_VERSION}\\); upgrade semdb",
        ):
            Store(path, **kw)


def _filled_store(path, batches=4, per=200):
    with Store(path, create=True) as s:
        with s.write() as w:
            w.set_codec(b"codec", "c", CB)
        for b in range(batches):
            with s.write() as w:
                for i in range(per):
                    w.add_item(new_item(f"/dir{b}/img{i:04d}.jpg"), code=code_for(b * per + i))
    return (path / "data.mdb").read_bytes()


def _corrupt_copy(src: Path, dst: Path, offset: int, patch: bytes) -> Path:
    shutil.copytree(src, dst)
    with open(dst / "data.mdb", "r+b") as f:
        f.seek(offset)
        f.write(patch)
    return dst


def test_corrupt_header_is_a_store_error(tmp_path):
    _filled_store(tmp_path / "good")
    for i, offset in enumerate((0, 4096)):  # both meta pages
        bad = _corrupt_copy(tmp_path / "good", tmp_path / f"bad{i}", offset, os.urandom(4096))
        for kw in ({}, {"readonly": True}):
            with pytest.raises(StoreError, match="corrupt") as e:
                Store(bad, **kw)
            assert "\n" not in str(e.value)


def test_corrupt_code_bytes_are_caught_by_the_segment_checksum(tmp_path):
    data = _filled_store(tmp_path / "good")
    # copy-on-write leaves stale copies of the segment's page in free pages: damage them all
    offsets = [m.start() for m in re.finditer(re.escape(code_for(123)), data)]
    assert offsets
    bad = _corrupt_copy(tmp_path / "good", tmp_path / "bad", offsets[0], bytes(CB))
    for offset in offsets[1:]:
        with open(bad / "data.mdb", "r+b") as f:
            f.seek(offset)
            f.write(bytes(CB))
    with Store(bad, readonly=True) as s:
        assert s.count() == 800  # metadata still reads
        with pytest.raises(StoreError, match="corrupt .*checksum"):
            s.load_codes()
    with Store(bad) as s:
        assert any("checksum" in p for p in s.verify())


PROBE = """
    import sys
    from semdb.store import Store
    from semdb.errors import StoreError
    try:
        with Store(sys.argv[1], readonly=sys.argv[2] == "ro") as s:
            if sys.argv[2] == "ro":
                s.load_codes(); list(s.iter_items()); [s.item_by_path(f"/dir1/img{i:04d}.jpg") for i in range(200)]
                print("read ok")
            else:
                print("problems", len(s.verify()))
    except StoreError as e:
        print("StoreError", e)
"""


@pytest.mark.parametrize("fill", [b"\xff", b"\x00", None])
def test_corrupt_pages_in_the_middle_are_reported_not_crashed_on(tmp_path, fill):
    data = _filled_store(tmp_path / "good")
    # the first page of the live item segment (compressed: found by its stored bytes; older
    # copies of it left in free pages hold fewer items, so another header)
    with Store(tmp_path / "good", readonly=True) as s, s._read() as v:
        live = bytes(next(iter(v.txn.cursor(db=v._db["itemsegs"])))[1])
    page = data.find(live[:64]) // 4096 * 4096
    assert page >= 2 * 4096
    patch = fill * 4096 if fill else random.Random(1).randbytes(4096)
    bad = _corrupt_copy(tmp_path / "good", tmp_path / "bad", page, patch)
    # A writable open verifies the pages first (LMDB may abort() on some damaged pages, so
    # the probe runs in its own process): damage is reported as problems.
    out = run_py(PROBE, bad, "rw").communicate(timeout=60)
    assert out[0].startswith(("problems", "StoreError")), out
    assert not out[0].startswith("problems 0"), out
    if fill != b"\x00":  # a page of zeros trips an assertion inside LMDB when read through it
        out = run_py(PROBE, bad, "ro").communicate(timeout=60)
        assert out[0].startswith("StoreError") and "corrupt" in out[0], out


def test_check_model(store):
    mid = {"name": "ViT-B-32", "pretrained": "laion2b", "digest": "abc123", "dim": 512}
    store.check_model(mid)  # unbound store accepts any model
    with store.write() as w:
        w.set_meta("model_id", mid)
    assert store.model_id() == mid
    store.check_model(dict(mid))
    for other in ({**mid, "digest": "fff"}, {**mid, "dim": 768}):
        with pytest.raises(
            StoreError, match="was built with CLIP model ViT-B-32/laion2b .*--model ViT-B-32 .*or use a new --store"
        ):
            store.check_model(other)
    store.check_model({**mid, "digest": None})  # unknown digest: same name/tag/dim is enough


def test_default_store_path(monkeypatch, tmp_path):
    monkeypatch.setenv("SEMDB_STORE", str(tmp_path / "x"))
    assert default_store_path() == tmp_path / "x"
    monkeypatch.delenv("SEMDB_STORE")
    p = default_store_path()
    assert p.name == "store" and "semdb" in str(p.parent)


def test_info(store):
    with store.write() as w:
        w.add_item(new_item("/a.jpg"), code=code_for(1))
    info = store.info()
    assert info["items"] == 1 and info["coded"] == 1 and info["staging"] == 0
    assert info["segments"] == 1 and info["code_bytes"] == CB and info["codec_id"] == "codec-1"
    assert info["bytes_on_disk"] > 0 and info["map_size"] >= store_mod.DEFAULT_MAP_SIZE


def test_info_reports_bytes_per_item(store):
    with store.write() as w:
        for i in range(50):
            w.add_item(new_item(f"/p/{i}.jpg"), code=code_for(i))
    info = store.info()
    assert info["schema"] == SCHEMA_VERSION and info["item_segments"] == 1
    assert info["bytes_per_item"] == round((store.path / "data.mdb").stat().st_size / 50, 1)


# -- the compact layout (schema 2): item segments and the in-memory lookups ----------------------


def _every_field_item(path: str, h: str, taken) -> Item:
    return Item(0, path, 2**64 - 1, -(2**63), h, 2**32 - 1, 0, 1.25, -3.5e9, taken)


def test_item_segments_round_trip_every_field(store):
    odd = [
        (os.fsdecode(b"/photos/caf\xe9-\xff\x80.jpg"), "0123456789abcdef0123456789abcdef", None),
        ("/" + "deep/" * 120 + "x.jpg", "sha256:" + "ab" * 32, 1.5e9 + 0.123456),  # > 500 bytes
        ("/u/ç😀.jpg", "0123456789ABCDEF0123456789ABCDEF", -1.0),  # upper-case hex: kept as text
        ("/n/x.jpg", "path:" + "é" * 150, float("inf")),
    ]
    with store.write() as w:
        ids = [w.add_item(_every_field_item(p, h, t), code=code_for(i)) for i, (p, h, t) in enumerate(odd)]
    again = Store(store.path, readonly=True)  # a fresh decode: a second Store shares the env, so clear the cache
    again._shared.seg_cache.clear()
    for id_, (p, h, t) in zip(ids, odd):
        assert again.get_item(id_) == Item(id_, p, 2**64 - 1, -(2**63), h, 2**32 - 1, 0, 1.25, -3.5e9, t)
        assert again.item_by_path(p).id == id_
        assert [it.id for it in again.items_by_hash(h)] == [id_]
    again.close()
    assert store.items_by_hash("0123456789abcdef0123456789abcdeF") == []
    assert store.verify() == []


def test_lookups_after_adds_updates_deletes_and_compaction(store, monkeypatch):
    monkeypatch.setattr(segments, "ITEMSEG_MAX", 4096)  # the segment boundaries below assume it
    with store.write() as w:
        ids = [w.add_item(new_item(f"/f/{i}.jpg", "%032x" % (i % 7)), code=code_for(i)) for i in range(9000)]
    # 9000 items in one batch: three segments of at most ITEMSEG_MAX, in id order
    assert store.info()["item_segments"] == 3
    with store.write() as w:
        moved = w.get_item(ids[10])
        moved.path, moved.hash = "/g/moved.jpg", "NEW"
        w.update_item(moved)
        assert w.item_by_path("/g/moved.jpg").id == ids[10] and w.item_by_path("/f/10.jpg") is None
        for i in range(4000, 8500):  # empties most of the second segment and part of the third
            w.delete_item(ids[i])
        late = w.add_item(new_item("/f/4000.jpg", "LATE"), code=code_for(1))  # a deleted path, reused
        w.delete_item(w.add_item(new_item("/tmp/gone.jpg"), code=code_for(2)))  # added and gone in one batch
    for s in (store, Store(store.path, readonly=True)):
        s._shared.item_index = None if s is not store else s._shared.item_index  # readonly: rebuilt
        assert s.item_by_path("/f/10.jpg") is None and s.item_by_path("/g/moved.jpg").id == ids[10]
        assert [it.id for it in s.items_by_hash("NEW")] == [ids[10]]
        assert s.item_by_path("/f/4000.jpg").id == late and s.item_by_path("/tmp/gone.jpg") is None
        assert s.get_item(ids[5000]) is None and s.get_item(ids[8600]).path == "/f/8600.jpg"
        assert [it.id for it in s.items_by_hash("%032x" % 3)] == [
            i for n, i in enumerate(ids) if n % 7 == 3 and not 4000 <= n < 8500 and n != 10
        ]
        if s is not store:
            s.close()
    assert store.count() == 9000 - 4500 + 1 and store.verify() == []
    before = [(it.id, it.path) for it in store.iter_items()]
    store.compact()
    assert [(it.id, it.path) for it in store.iter_items()] == before
    assert store.info()["item_segments"] == 2  # 4501 items: the small middle segments merged
    assert store.item_by_path("/f/8999.jpg").id == ids[8999] and store.verify() == []


def test_small_batches_fill_the_last_segment(store, monkeypatch):
    monkeypatch.setattr(segments, "ITEMSEG_MAX", 4096)
    for b in range(50):
        with store.write() as w:
            for i in range(100):
                w.add_item(new_item(f"/b{b}/{i}.jpg"), code=code_for(i))
    assert store.info()["item_segments"] == 2  # 5000 items: one full segment and the rest
    assert [it.path for it in store.iter_items(batch=10)][4095:4097] == ["/b40/95.jpg", "/b40/96.jpg"]


LOOKER = """
    import sys
    from semdb.store import Store
    s = Store(sys.argv[1], readonly=True)
    for line in sys.stdin:  # one path per line: print the id stored for it
        it = s.item_by_path(line[:-1])
        print(it.id if it else None, flush=True)
"""


def test_another_process_sees_a_writers_commits(store):
    with store.write() as w:
        a = w.add_item(new_item("/a.jpg"), code=code_for(1))
    reader = run_py(LOOKER, store.path)
    try:
        reader.stdin.write("/a.jpg\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == str(a)  # its lookups are built now
        moved = store.get_item(a)
        moved.path = "/moved.jpg"
        with store.write() as w:
            w.update_item(moved)
            b = w.add_item(new_item("/b.jpg"), code=code_for(2))
        for p, want in (("/a.jpg", None), ("/moved.jpg", a), ("/b.jpg", b)):
            reader.stdin.write(p + "\n")
            reader.stdin.flush()
            assert reader.stdout.readline().strip() == str(want)
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)


def test_a_damaged_item_segment_is_corruption(store):
    with store.write() as w:
        ids = [w.add_item(new_item(f"/d/{i}.jpg"), code=code_for(i)) for i in range(100)]
    env, db = store._shared.env, store._shared.dbs["itemsegs"]
    with env.begin(write=True) as txn:
        key, raw = next(iter(txn.cursor(db=db)))
        raw = bytearray(raw)
        raw[40] ^= 0x10
        txn.put(bytes(key), bytes(raw), db=db)
    store._shared.reset()
    with pytest.raises(StoreError, match="is corrupt \\(item segment .*checksum.*restore it from a backup"):
        store.get_item(ids[3])
    with pytest.raises(StoreError, match="is corrupt"):
        list(store.iter_items())
    assert any(p.startswith(f"item segment {ids[0]}: ") and "checksum" in p for p in store.verify())
    assert code_map(store)  # codes (what a query reads) are not in item segments


# -- concurrency -----------------------------------------------------------------------------

HOLDER = """
    import sys
    from semdb.store import Store
    s = Store(sys.argv[1], create=True)
    print("locked", flush=True)
    sys.stdin.read() if sys.argv[2] == "stdin" else __import__("time").sleep(float(sys.argv[2]))
    s.close()
"""


def test_second_writer_process_is_refused_while_readers_proceed(path, store):
    with store.write() as w:
        w.add_item(new_item("/a.jpg"), code=code_for(1))
    store.close()
    holder = run_py(HOLDER, path, "stdin")
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            StoreLockedError,
            match=f"being written by another semdb process \\(pid {holder.pid}\\); wait for it or stop it",
        ):
            Store(path)
        with Store(path, readonly=True) as r:  # readers take no writer lock
            assert r.count() == 1
    finally:
        holder.communicate("", timeout=30)
    with Store(path) as s:
        assert s.count() == 1


def test_wait_true_blocks_until_the_writer_leaves(path, store):
    import threading

    store.close()
    holder = run_py(HOLDER, path, "stdin")
    assert holder.stdout.readline().strip() == "locked"
    opened = []
    waiter = threading.Thread(target=lambda: opened.append(Store(path, wait=True)), daemon=True)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and not opened  # still waiting: the holder has the lock
    holder.communicate("", timeout=30)  # the holder closes its store and exits
    waiter.join(30)
    assert len(opened) == 1 and opened[0].count() == 0
    opened[0].close()


def test_same_process_second_writer_is_refused(path, store):
    with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
        Store(path)


READER = """
    import sys
    from semdb.store import Store
    s = Store(sys.argv[1], readonly=True)
    print("open", flush=True)
    for line in sys.stdin:
        print(s.count(), len(s.load_codes()[0]), flush=True)
"""


def test_readers_see_last_commit_while_a_write_is_open(path):
    store = Store(path, create=True, map_size=1 << 18)
    with store.write() as w:
        w.set_codec(b"codec", "c", CB)
        for i in range(10):
            w.add_item(new_item(f"/{i}.jpg"), code=code_for(i))
    reader = run_py(READER, path)
    local = Store(path, readonly=True)  # shares this process's environment
    try:
        assert reader.stdout.readline().strip() == "open"
        with store.write() as w:
            for i in range(10, 20):
                w.add_item(new_item(f"/{i}.jpg"), code=code_for(i))
            # write txn still open: both readers see the last committed state, without blocking
            reader.stdin.write("?\n")
            reader.stdin.flush()
            assert reader.stdout.readline().split() == ["10", "10"]
            assert local.count() == 10 and len(local.load_codes()[0]) == 10
        assert local.count() == 20 and len(local.load_codes()[0]) == 20
        reader.stdin.write("?\n")
        reader.stdin.flush()
        assert reader.stdout.readline().split() == ["20", "20"]
        # grow the file far beyond the reader's map: it adopts the new size and goes on
        start = store.info()["map_size"]
        with store.write() as w:
            for i in range(20, 20_000):
                w.add_item(new_item(f"/{i}.jpg"), code=code_for(i))
        assert store.info()["map_size"] > start
        reader.stdin.write("?\n")
        reader.stdin.flush()
        assert reader.stdout.readline().split() == ["20000", "20000"]
    finally:
        local.close()
        store.close()
        out = reader.communicate("", timeout=60)
        assert reader.returncode == 0, out


def test_readonly_store_opened_first_is_upgraded_for_a_writer(path, store):
    store.close()
    r = Store(path, readonly=True)
    with Store(path) as w_store:
        with w_store.write() as w:
            w.add_item(new_item("/a.jpg"), code=code_for(1))
        assert r.count() == 1
    assert r.count() == 1
    r.close()


def test_verify_reports_each_kind_of_inconsistency(store):
    with store.write() as w:
        a = w.add_item(new_item("/a.jpg"), code=code_for(1))
        b = w.add_item(new_item("/b.jpg"), code=code_for(2))
        c = w.add_item(new_item("/c.jpg"), embedding=emb_for(3))
    assert store.verify() == []
    with store.write() as w:
        d = w.add_item(new_item("/d.jpg"), code=code_for(4))  # its own code segment
    env, dbs = store._shared.env, store._shared.dbs
    k = store_mod._k
    seg_d = max(raw_segments(store))
    with env.begin(write=True) as txn:  # damage the store behind its back
        txn.delete(k(seg_d), db=dbs["codes"])  # d loses its code
        txn.put(k(a), np.zeros(16, np.float16).tobytes(), db=dbs["staging"])  # a: code and staging
        txn.put(k(77), np.zeros(16, np.float16).tobytes(), db=dbs["staging"])
        # a segment whose ids run past next_id and whose path repeats item b's
        row = segments.Row(90, b"/b.jpg", "sha256:zzz", 1, 2, 3, 4, 5.0, 6.0, None)
        txn.put(k(90), segments.encode([row]), db=dbs["itemsegs"])
    problems = "\n".join(store.verify())
    assert f"item {d}: neither a code nor a staging row" in problems
    assert f"item {a}: both a code and a staging row" in problems
    assert "staging row for missing item 77" in problems
    assert "item segment 90: ids [90]..[90] outside [90, 5)" in problems
    assert f"item 90: path '/b.jpg' is also item {b}" in problems
    assert c  # still sound: staged, no code


def test_many_items_at_once_match_one_by_one(tmp_path):
    """Store.items of many ids (one decode per item segment) gives what get_item gives for each,
    in the order asked, None for deleted and unknown ids."""
    from semdb.store import Item, Store

    with Store(tmp_path / "s", create=True) as s:
        for start in range(0, 3000, 700):  # several batches: several item segments
            with s.write() as w:
                for i in range(start, min(start + 700, 3000)):
                    w.add_item(Item.new(f"/p/{i}.jpg", i, i, f"{i:032x}", 1, 1), embedding=np.ones(4, np.float32))
        with s.write() as w:
            for i in range(1, 3001, 7):
                w.delete_item(i)
        ids = random.Random(0).sample(range(0, 3100), 1500) + [5, 5]
        got = s.items(ids)
        assert got == [s.get_item(i) for i in ids]
        assert sum(x is None for x in got) > 100 and got[-1] == got[-2] == s.get_item(5)
