"""The HTTP parameters of a search: a query string to a SearchRequest (semdb/search/request.py), and
back (what `semdb query` sends to a running server).

Strings are parsed here (an integer, a finite number, an item id, an absolute folder); what
the values mean and their limits are the request's, checked when it is built, so a search asked
over HTTP is refused for the same reasons, in the same words, as one asked in Python or on the
command line. HTTP holds k and the text to request.HTTP_MAX_K and HTTP_MAX_TEXT. A parameter an
endpoint does not take is a 400, never ignored. Used by serve/app.py, by the cluster's HTTP
ingress (semdb/cluster.py) and by serve/client.py; no web framework is imported.
"""

from __future__ import annotations

import datetime
import math
import os
import re

from ..search.request import DEFAULT_K, HTTP_MAX_K, HTTP_MAX_TEXT, SearchRequest, check_k, parse_terms

ITEM_ID = re.compile(r"[0-9]{1,18}")
FILTER_PARAMS = ("under", "after", "before", "within", "min_score", "like", "nprobe", "frames")
SEARCH_PARAMS = ("q", "k") + FILTER_PARAMS  # /api/search, GET and POST
SIMILAR_PARAMS = ("k",) + tuple(name for name in FILTER_PARAMS if name != "like")  # /api/similar/{id}
LIST_PARAMS = ("offset", "limit", "under", "after", "before")  # /api/items
DEFAULT_LIMIT = 24  # the page's first page of the collection
HTTP_MAX_TERMS = 16  # terms of a query's arithmetic asked over HTTP ("2:cat + dog - car" is 3)


class ApiError(Exception):
    """An error answered as {"error": message} with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, " ".join(str(message).split())


def parse_item_id(raw: str) -> int:
    if not ITEM_ID.fullmatch(raw or ""):
        raise ApiError(400, f"{raw[:40]!r} is not an item id (ids are integers)")
    return int(raw)


def int_param(params, name: str, default: int | None = None, lo: int | None = None, hi: int | None = None):
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name}={raw[:40]!r}: expected an integer") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ApiError(400, f"{name}={value}: must be between {lo} and {hi}")
    return value


def float_param(params, name: str) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{name}={raw[:40]!r}: expected a number") from None
    if not math.isfinite(value):
        raise ApiError(400, f"{name}={raw[:40]!r}: expected a finite number")
    return value


def only(params, allowed) -> None:
    """400 for a query parameter the endpoint does not take: a misspelt filter would otherwise
    be ignored, and the answer would be to another question than the one asked."""
    unknown = sorted(set(params.keys()) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown parameter {unknown[0][:40]!r}: this endpoint takes {', '.join(allowed)}")


def search_options(params, allowed=SEARCH_PARAMS) -> dict:
    """SearchRequest.of's keywords from a query string that holds only `allowed` parameters.
    Every term of q is text (`files=False`): a URL never makes the server open a file by its
    name; `under` must be absolute (the server's working directory is no client's)."""
    only(params, allowed)
    options: dict = {"files": False, "k": check_k(int_param(params, "k", DEFAULT_K), HTTP_MAX_K)}
    text = params.get("q")
    if text:
        if len(text) > HTTP_MAX_TEXT:
            raise ApiError(400, f"query of {len(text)} characters: at most {HTTP_MAX_TEXT}")
        if text.count("+") + text.count("-") >= HTTP_MAX_TERMS and len(parse_terms(text, False)) > HTTP_MAX_TERMS:
            raise ApiError(400, f"query of more than {HTTP_MAX_TERMS} terms: each is a pass through CLIP")
        options["text"] = text
    options.update(where_options(params))
    for name in ("within", "min_score"):
        options[name] = float_param(params, name)
    if params.get("like"):
        options["like"] = parse_item_id(params["like"])
    options["nprobe"] = int_param(params, "nprobe")
    options["frames"] = bool(int_param(params, "frames", 0, 0, 1))  # 1: every matching video frame
    return options


def where_options(params) -> dict:
    """The filters `under`, `after`, `before` given (as text: the request or the listing parses
    the dates); `under` must be absolute (the server's working directory is no client's)."""
    options = {}
    for name in ("under", "after", "before"):
        raw = params.get(name)
        if raw:
            if len(raw) > 4096 or "\0" in raw:
                raise ApiError(400, f"{name}: not a valid value")
            options[name] = raw
    if "under" in options and not os.path.isabs(options["under"]):
        raise ApiError(400, f"under={options['under'][:80]!r}: give an absolute folder")
    return options


def listing_options(params) -> dict:
    """Database.ls's keywords from the query string of GET /api/items: `offset` (items to skip,
    newest first) and `limit` (at most HTTP_MAX_K per answer), and the filters; bad dates are
    refused here, in the words of a search's (Where.of)."""
    only(params, LIST_PARAMS)
    options = {
        "offset": int_param(params, "offset", 0, 0, 10**12),
        "limit": int_param(params, "limit", DEFAULT_LIMIT, 1, HTTP_MAX_K),
        **where_options(params),
    }
    return options


def search_request(params, allowed=SEARCH_PARAMS, **more) -> SearchRequest:
    """The SearchRequest a query string asks for (`more`: what the path or body adds, e.g. like=)."""
    return SearchRequest.of(**search_options(params, allowed), **more)


def query_params(request: SearchRequest) -> dict | None:
    """The query string of GET /api/search that asks what `request` asks (its image, if any,
    goes in the body), or None when no query string can: query vectors, a `like` given by
    path, a term of the text naming a file (a server reads every term as text)."""
    if request.vector is not None or isinstance(request.like, str):
        return None
    if any(term.kind != "text" for term in request.text_terms):
        return None
    params = {"k": str(request.k)}
    if request.text is not None:
        params["q"] = request.text
    if request.like is not None:
        params["like"] = str(request.like)
    where = request.where
    if where.under is not None:
        params["under"] = where.under
    for name, seconds in (("after", where.after), ("before", where.before)):
        if seconds is not None:  # an instant with its offset: read back exactly, in any time zone
            params[name] = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()
    for name in ("within", "min_score", "nprobe"):
        value = getattr(request, name)
        if value is not None:
            params[name] = repr(value)
    if request.frames:
        params["frames"] = "1"
    return params
