"""Fixtures of the store's test files:
`path` (a store directory not created yet) and `store` (a writable store with a codec of CB-byte
codes)."""

import pytest
from storekit import CB

from semdb.store import Store


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
