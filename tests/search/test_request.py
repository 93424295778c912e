"""SearchRequest (semdb/search/request.py): a search's terms, limits, filters and refinements,
parsed and checked once when the request is built; bad input is an InputError naming it."""

import datetime
import os

import numpy as np
import pytest

from semdb.errors import InputError
from semdb.search.request import (
    HTTP_MAX_K,
    MAX_K,
    MAX_NPROBE,
    SearchRequest,
    Term,
    Where,
    check_k,
    parse_date,
    parse_terms,
)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(b"a file: parse_terms only asks whether it exists")
    return path


# --------------------------------------------------------------------------- query arithmetic


def test_terms_are_weighted_added_and_subtracted_and_an_existing_file_is_an_image(photo):
    terms = parse_terms(f"2:a cat + {photo} - 0.5:dog")
    assert terms == [Term("text", "a cat", 2.0), Term("image", str(photo), 1.0), Term("text", "dog", -0.5)]
    assert parse_terms("  a red bicycle  ") == [Term("text", "a red bicycle", 1.0)]
    assert parse_terms("a-b + c+d") == [Term("text", "a-b"), Term("text", "c+d")]  # signs need spaces


def test_without_files_every_term_is_text(photo):
    assert parse_terms(f"{photo} + ./nope.jpg", files=False) == [Term("text", str(photo)), Term("text", "./nope.jpg")]


def test_a_weight_is_a_number_before_a_colon_else_part_of_the_words():
    assert parse_terms("note: a cat") == [Term("text", "note: a cat")]
    assert parse_terms("-1.5:a cat") == [Term("text", "a cat", -1.5)]
    assert parse_terms("2:") == [Term("text", "2:")]  # no term after it: the words "2:"


@pytest.mark.parametrize(
    "text,says",
    [
        ("", "empty query text"),
        ("   ", "empty query text"),
        ("a cat + ", "has no term beside it"),
        ("+ a cat", "has no term beside it"),
        ("a cat - ", "has no term beside it"),
        ("inf:a cat", "not a finite number"),
        ("nan:a cat", "not a finite number"),
        ("./nope.jpg", "./nope.jpg: query image not found"),
        ("a cat - nope.JPG", "nope.JPG: query image not found"),
        ("my photos/nope.webp", "query image not found"),
    ],
)
def test_bad_arithmetic_is_refused(text, says):
    with pytest.raises(InputError, match="^.*" + says.replace(".", r"\.").replace("+", r"\+")):
        parse_terms(text)


def test_words_that_only_look_like_paths_are_words():
    for words in ("AC/DC on stage", "black and/or white", "a cat.jpg drawn in words"):
        assert parse_terms(words) == [Term("text", words)]


def test_a_home_relative_image_is_expanded(tmp_path, monkeypatch, photo):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_terms("~/x.jpg") == [Term("image", str(photo))]


# --------------------------------------------------------------------------- where


def test_where_takes_a_folder_relative_to_the_working_directory_and_dates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = Where.of("photos/2019/", after="2019-01-01", before=datetime.date(2019, 2, 1))
    assert w.under == str(tmp_path / "photos" / "2019")
    assert (
        w.after == datetime.datetime(2019, 1, 1).timestamp() and w.before == datetime.datetime(2019, 2, 1).timestamp()
    )
    assert w and not Where.of() and Where.of("/") == Where("/")
    assert Where.of(after="") == Where()


def test_dates_are_iso_text_dates_or_datetimes():
    moment = datetime.datetime(2020, 5, 17, 10, 30, tzinfo=datetime.timezone.utc)
    assert parse_date(moment, "after") == moment.timestamp()
    assert parse_date("2020-05-17T10:30+00:00", "after") == moment.timestamp()
    assert parse_date(None, "after") is None
    with pytest.raises(InputError, match="--before 'yesterday': not a date"):
        parse_date("yesterday", "before")


def test_an_empty_date_range_is_refused():
    with pytest.raises(InputError, match="is not earlier than before"):
        Where.of(after="2020-01-02", before="2020-01-01")
    with pytest.raises(InputError, match="is not earlier than before"):
        Where.of(after="2020-01-01", before="2020-01-01")


# --------------------------------------------------------------------------- k and the request


def test_k_is_a_positive_whole_number_up_to_a_limit():
    assert check_k(1) == 1 and check_k(np.int64(MAX_K)) == MAX_K and type(check_k(np.int32(3))) is int
    for bad in (0, -1, True, 1.5, "3", None):
        with pytest.raises(InputError, match="at least one result"):
            check_k(bad)
    with pytest.raises(InputError, match=f"at most {MAX_K}"):
        check_k(MAX_K + 1)
    with pytest.raises(InputError, match=f"at most {HTTP_MAX_K}"):
        check_k(HTTP_MAX_K + 1, HTTP_MAX_K)


def test_a_request_is_checked_when_built_and_frozen(photo):
    r = SearchRequest.of(f"a cat + {photo}", k=3, under="/photos", within=0.1, min_score=-1, nprobe=4, frames=1)
    assert (r.k, r.where.under, r.within, r.min_score, r.nprobe, r.frames) == (3, "/photos", 0.1, -1.0, 4, True)
    assert r.terms() == [Term("text", "a cat"), Term("image", str(photo))]
    with pytest.raises(AttributeError):
        r.k = 5
    assert SearchRequest.of("a cat") == SearchRequest.of("a cat") != SearchRequest.of("a dog")


def test_the_terms_are_the_texts_then_the_image_then_the_stored_item():
    image = object()  # a PIL image, say: handed on as it is
    r = SearchRequest.of("a cat", image=image, like=7)
    assert r.terms() == [Term("text", "a cat"), Term("image", image), Term("item", 7)]


def test_like_is_an_id_or_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert SearchRequest.of(like=np.uint64(4)).like == 4
    assert SearchRequest.of(like="a/b.jpg").like == str(tmp_path / "a" / "b.jpg")
    assert SearchRequest.of(like=tmp_path / "c.jpg").like == str(tmp_path / "c.jpg")
    for bad in (-1, True, "", 2.5):
        with pytest.raises(InputError, match="give a stored item's id or path"):
            SearchRequest.of(like=bad)


def test_query_vectors_are_rows_of_finite_numbers_read_only():
    r = SearchRequest.of(vector=[1.0, 0.0, 0.0], k=2)
    assert r.vector.shape == (1, 3) and r.vector.dtype == np.float32 and not r.vector.flags.writeable
    assert r.terms() == [] and r == SearchRequest.of(vector=np.array([[1, 0, 0]]), k=2)
    assert r != SearchRequest.of(vector=[0.0, 1.0, 0.0], k=2)
    assert SearchRequest.of(vector=np.ones((4, 8))).vector.shape == (4, 8)
    for bad, says in (
        ([], "shape"),
        (np.ones((2, 2, 2)), "shape"),
        ([1.0, np.nan], "NaN or infinite"),
        ([1.0, np.inf], "NaN or infinite"),
        (["a", "b"], "not an array of numbers"),
    ):
        with pytest.raises(InputError, match=says):
            SearchRequest.of(vector=bad)
    with pytest.raises(InputError, match="not both"):
        SearchRequest.of("a cat", vector=[1.0, 0.0])


@pytest.mark.parametrize(
    "kwargs,says",
    [
        ({}, "empty query"),
        ({"text": ""}, "empty query text"),
        ({"text": "a cat", "k": 0}, "at least one result"),
        ({"text": "a cat", "within": -0.1}, "within=-0.1: expected a finite number >= 0"),
        ({"text": "a cat", "within": "0.1"}, "within='0.1': expected a number"),
        ({"text": "a cat", "min_score": float("nan")}, "min_score=nan: expected a finite number"),
        ({"text": "a cat", "min_score": True}, "expected a number"),
        ({"text": "a cat", "nprobe": 0}, "nprobe=0"),
        ({"text": "a cat", "nprobe": MAX_NPROBE + 1}, "at most"),
        ({"text": "a cat", "nprobe": 2.0}, "nprobe=2.0"),
        ({"text": "a cat", "after": "2021-01-01", "before": "2020-01-01"}, "not earlier"),
    ],
)
def test_bad_requests_are_refused_when_built(kwargs, says):
    with pytest.raises(InputError, match=says.replace("(", r"\(").replace(".", r"\.")):
        SearchRequest.of(**kwargs)


def test_where_must_be_a_where():
    with pytest.raises(InputError, match="where: a semdb.search.request.Where"):
        SearchRequest("a cat", where={"under": "/photos"})
    assert SearchRequest("a cat", where=Where("/photos")).where.under == "/photos"


def test_a_path_term_is_checked_against_the_files_when_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="query image not found"):
        SearchRequest.of("a cat + ./later.jpg")
    assert SearchRequest.of("a cat + ./later.jpg", files=False).terms()[1] == Term("text", "./later.jpg")
    (tmp_path / "later.jpg").write_bytes(b"x")
    assert SearchRequest.of("a cat + ./later.jpg").terms()[1] == Term("image", os.path.join(".", "later.jpg"))
