"""The store's on-disk format (semdb/store/format.py): item records, item segment rows, paths."""

import dataclasses
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storekit import code_for, dataclass_item, new_item

from semdb.errors import InputError
from semdb.store import Item, Store, segments
from semdb.store.format import ITEM_HEADS, ITEM_VERSION, CorruptValue, item_segment_row, item_segment_rows

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


def _record(item: Item) -> bytes:
    """A schema-2 item record, as stores before item segments kept them (what migration reads)."""
    taken = float("nan") if item.taken is None else item.taken
    h = item.hash.encode("utf-8")
    fields = (item.id, item.size, item.mtime_ns, item.width, item.height, item.added, item.updated, taken, len(h))
    return ITEM_HEADS[ITEM_VERSION].pack(ITEM_VERSION, *fields) + h + os.fsencode(item.path)


@given(items)
@settings(max_examples=300)
def test_old_item_records_read_exactly(item):
    back = Item.from_bytes(_record(item))
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
    rows = [item_segment_row(dataclasses.replace(it, id=1 + n * (2**33 + 7))) for n, it in enumerate(batch)]  # big gaps
    raw = segments.encode(rows)
    assert raw == segments.encode(rows)  # deterministic
    assert item_segment_rows(segments.decode(raw)) == rows
    assert [segments.decode_row(raw, r.id) for r in rows] == rows  # get_item's one-row decode
    assert segments.decode_row(raw, rows[-1].id + 1) is None and segments.decode_row(raw, 0) is None


@given(st.text(min_size=1, max_size=50))
def test_any_text_path_round_trips_or_is_refused(text):
    item = dataclass_item(text)
    try:
        row = item_segment_row(item)
    except InputError:
        return  # lone surrogates that no file system name decodes to, or NUL
    assert os.fsdecode(item_segment_rows(segments.decode(segments.encode([row])))[0].path) == text


@pytest.mark.parametrize(
    "field,value",
    [
        ("size", -1),
        ("width", 2**32),
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
        item_segment_row(item)


def test_truncated_or_foreign_record_is_corrupt():
    raw = _record(dataclass_item("/a.jpg"))
    for bad in (raw[:10], b"\x09" + raw[1:], raw[: ITEM_HEADS[ITEM_VERSION].size + 1]):
        with pytest.raises(CorruptValue):
            Item.from_bytes(bad)


def test_records_of_schema_1_read_with_no_date_taken():
    import struct

    v1 = struct.pack("<BQQqIIddH", 1, 1, 2, 3, 4, 5, 6.0, 7.0, 1) + b"h" + b"/a.jpg"
    assert Item.from_bytes(v1) == Item(1, "/a.jpg", 2, 3, "h", 4, 5, 6.0, 7.0, None)
    dated = Item(1, "/a.jpg", 2, 3, "h", 4, 5, 6.0, 7.0, 1.6e9)
    assert Item.from_bytes(_record(dated)) == dated


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
    again.drop_caches()
    for id_, (p, h, t) in zip(ids, odd):
        assert again.get_item(id_) == Item(id_, p, 2**64 - 1, -(2**63), h, 2**32 - 1, 0, 1.25, -3.5e9, t)
        assert again.item_by_path(p).id == id_
        assert [it.id for it in again.items_by_hash(h)] == [id_]
    again.close()
    assert store.items_by_hash("0123456789abcdef0123456789abcdeF") == []
    assert store.verify() == []
