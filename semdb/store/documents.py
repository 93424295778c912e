"""Documents kept beside items (db `docs`: item id -> document record): what a LangChain vector
store (semdb/langchain/) keeps of an item: the caller's string id, its text and its metadata.

A record is the id's length (u16) and UTF-8 bytes, then zlib-compressed JSON
{"page_content", "metadata"}: the id stays readable without decompressing, so the map from
string ids to items is one pass over the records' heads. An item without a document has no
record: a store without documents is the size it always was.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

from ..errors import InputError
from .format import CorruptValue, int_key, key_int

PATHLESS = "doc:"  # the path of a document without a file: PATHLESS + its id (semdb/ingest/documents.py)
ID_HEAD = struct.Struct("<H")
MAX_ID_BYTES = 1 << 15


@dataclass(frozen=True)
class Document:
    """A stored document: `id` (the caller's), `page_content` (its text) and `metadata` (JSON)."""

    id: str
    page_content: str = ""
    metadata: dict = field(default_factory=dict)


def pack(doc: Document) -> bytes:
    """A document's record; InputError (before anything is written) for what cannot be stored."""
    if not isinstance(doc.id, str) or not doc.id:
        raise InputError(f"document id {doc.id!r}: give a non-empty string")
    try:
        raw_id = doc.id.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"document id {doc.id!r} is not valid UTF-8 text") from None
    if len(raw_id) > MAX_ID_BYTES:
        raise InputError(f"document id of {len(raw_id)} bytes: at most {MAX_ID_BYTES}")
    if not isinstance(doc.page_content, str) or not isinstance(doc.metadata, dict):
        raise InputError(f"document {doc.id!r}: page_content must be a str and metadata a dict")
    try:
        body = json.dumps({"page_content": doc.page_content, "metadata": doc.metadata}, ensure_ascii=False)
        packed = zlib.compress(body.encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError) as e:
        raise InputError(f"document {doc.id!r}: metadata is not JSON ({e})") from None
    return ID_HEAD.pack(len(raw_id)) + raw_id + packed


def unpack_id(raw) -> str:
    try:
        (n,) = ID_HEAD.unpack_from(raw)
        if len(raw) < ID_HEAD.size + n:
            raise ValueError("truncated")
        return bytes(raw[ID_HEAD.size : ID_HEAD.size + n]).decode("utf-8")
    except (struct.error, ValueError) as e:
        raise CorruptValue(f"bad document record ({e})") from None


def unpack(raw) -> Document:
    doc_id = unpack_id(raw)
    start = ID_HEAD.size + len(doc_id.encode("utf-8"))
    try:
        body = json.loads(zlib.decompress(bytes(raw[start:])).decode("utf-8", "surrogatepass"))
        return Document(doc_id, body["page_content"], body["metadata"])
    except (zlib.error, ValueError, KeyError, TypeError) as e:
        raise CorruptValue(f"bad document record {doc_id!r} ({e})") from None


def to_json(doc: Document) -> str:
    """A document as the JSON text of an export's `document` column."""
    return json.dumps({"id": doc.id, "page_content": doc.page_content, "metadata": doc.metadata}, ensure_ascii=False)


def from_json(text: str) -> Document:
    """An export's `document` column value as a Document; InputError if it is not one."""
    try:
        d = json.loads(text)
        return Document(d["id"], d["page_content"], d["metadata"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"bad document column value {text[:80]!r} ({e})") from None


def read(view, ids) -> list[Document | None]:
    """The documents of items `ids` (None: the item has none)."""
    db = view.dbs.get("docs")
    if db is None:  # a read-only open of a store made before documents existed
        return [None for _ in ids]
    raws = [view.txn.get(int_key(i), db=db) for i in ids]
    return [None if raw is None else unpack(raw) for raw in raws]


def id_map(view) -> dict[str, int]:
    """{document id: item id} of every stored document."""
    db = view.dbs.get("docs")
    if db is None:
        return {}
    return {unpack_id(raw): key_int(k) for k, raw in view.txn.cursor(db=db)}


def verify_documents(view, items: set[int]) -> list[str]:
    """Every document record decodes, belongs to a stored item, and no id names two items."""
    db = view.dbs.get("docs")
    if db is None:
        return []
    problems, seen = [], {}
    for k, raw in view.txn.cursor(db=db):
        item = key_int(k)
        try:
            doc_id = unpack(raw).id
        except CorruptValue as e:
            problems.append(f"document of item {item}: {e}")
            continue
        if item not in items:
            problems.append(f"document {doc_id!r} for missing item {item}")
        if doc_id in seen:
            problems.append(f"document id {doc_id!r} names items {seen[doc_id]} and {item}")
        seen[doc_id] = item
    return problems
