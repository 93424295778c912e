"""One hit type and its one JSON form; one parse of a request's text."""

import numpy as np

from semdb.search import Hit, SearchRequest
from semdb.search.request import Where


def test_a_hit_has_one_json_form_read_back_as_it_was():
    plain = Hit("/p/a.jpg", 0.12345678, 7)
    frame = Hit("/p/v.mp4", 0.5, 8, frame_ms=83_400)
    sharded = Hit("/p/b.jpg", 0.25, 9, shard=1, store="/stores/b")
    assert plain.to_json() == {"path": "/p/a.jpg", "score": 0.123457, "id": 7}
    assert list(frame.to_json()) == ["path", "score", "id", "time"] and frame.to_json()["time"] == 83.4
    assert list(sharded.to_json()) == ["path", "score", "id", "shard", "store"]
    for hit in (frame, sharded, Hit("/p/a.jpg", 0.5, 7)):
        assert Hit.from_json(hit.to_json()) == hit


def test_the_text_is_parsed_once_when_the_request_is_built(tmp_path):
    image = tmp_path / "x.jpg"
    image.write_bytes(b"not read here")
    request = SearchRequest.of(f"2:cat + {image}")
    image.unlink()  # what the text meant was settled when the request was built
    assert [(t.kind, t.weight) for t in request.terms()] == [("text", 2.0), ("image", 1.0)]


def test_one_filter_for_listing_and_search():
    where = Where.of(under="/p/a", after="2020-01-01")
    taken = [Where.of(after="2021-05-01").after, float("nan"), Where.of(after="2019-01-01").after]
    paths = [b"/p/a/x.jpg", b"/p/a/y.jpg", b"/p/ab/z.jpg"]
    assert where.matches(paths, np.array(taken)).tolist() == [True, False, False]
    assert Where().matches(paths, np.array(taken)).all()
