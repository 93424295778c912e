"""The `semdb serve` application: a JSON API, thumbnails and the web page over one store.

One read-only `Database` with its model loaded is shared by every request, behind one lock
(a Store is not thread-safe); its search index is rebuilt only when the store's generation
changes, so commits of a concurrent ingest are seen by the next query. Items are addressed
by integer id only: no URL carries a path, and only files that are items of the store are
read (through semdb.images.load_image: megapixel guard, EXIF orientation, RGB). Every error
is a 4xx/5xx response with a one-line JSON body {"error": "..."}.

    GET  /                      the web page (static/, read into memory at start)
    GET  /api/search?q=TEXT     text search; k, under, after, before, within, min_score, like, nprobe
    POST /api/search            image search: multipart field "image", or the raw image body
    GET  /api/similar/{id}      more like a stored item (from its stored code), with the filters

A search's query string becomes a SearchRequest in params.py (semdb/search/request.py checks it) and
the record goes unchanged to Database.search.
    GET  /api/items             the collection, newest first: offset, limit, under, after, before
                                -> {"items": [...], "total": N, "photos", "frames", "videos"}
                                (Database.ls, .count and .tally)
    GET  /api/item/{id}         one item's metadata
    GET  /api/info              the store: items, model, codec, generation
    GET  /thumb/{id}?size=256   a JPEG thumbnail made from the item's file (&square=1: its centre square)
    GET  /image/{id}            the item's file re-encoded as JPEG (long side <= 4096)
    GET  /video/{id}            a video frame's video file as stored, with HTTP byte ranges (206)
                                so a player can seek; /thumb and /image of a frame are that frame

With an access key (auth.py: a server on the network) every route above asks for it; auth.py
answers the key's own requests (?key=, POST /auth/login) and the refusals.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..catalog import item_record
from ..errors import ImageError, InputError, ModelError, SemdbError, StoreError, display_path
from ..images import load_image
from ..search.request import SearchRequest
from ..video.extract import frame_at
from ..video.files import VIDEO_TYPES
from .auth import Access, protect
from .client import INSTANCE_HEADER
from .params import (
    SEARCH_PARAMS,
    SIMILAR_PARAMS,
    ApiError,
    int_param,
    listing_options,
    only,
    parse_item_id,
    search_options,
    search_request,
)

log = logging.getLogger("semdb.serve")

MAX_UPLOAD_BYTES = 32 << 20
THUMB_SIZES = (32, 1024)  # allowed ?size= range
DEFAULT_THUMB = 256
VIEW_MAX_SIDE = 4096
THUMB_CACHE_BYTES = 64 << 20
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}


def _static_files() -> dict[str, bytes]:
    """The page's files, read once at start: a server keeps serving its page while the package
    is reinstalled (or removed) under it."""
    folder = resources.files("semdb.serve") / "static"
    return {f.name: f.read_bytes() for f in folder.iterdir() if os.path.splitext(f.name)[1] in STATIC_TYPES}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def _status_of(exc: SemdbError) -> int:
    if isinstance(exc, ImageError):
        return 415
    if isinstance(exc, InputError):
        return 400
    if isinstance(exc, (StoreError, ModelError)):
        return 503
    return 500


def _hits_json(hits) -> dict:
    return {"hits": [hit_json(h) for h in hits]}


def hit_json(h) -> dict:
    """A hit as JSON: a video frame's also has its `time` in the video (seconds)."""
    out = {"id": int(h.id), "path": display_path(h.path), "score": round(float(h.score), 6)}
    if h.frame_ms is not None:
        out["time"] = h.frame_ms / 1000
    return out


def _item_json(it) -> dict:
    """catalog.item_record, its path fit for display, and a frame's link to its video."""
    return {
        **item_record(it),
        "path": display_path(it.path),
        **({} if it.frame_ms is None else {"video": f"/video/{it.id}"}),
    }


# --- the warm state -----------------------------------------------------------------------------


class Service:
    """The shared Database (model loaded, index warm), its lock and a thumbnail cache."""

    def __init__(self, db):
        self.db = db
        self.lock = threading.Lock()
        self._thumbs: OrderedDict = OrderedDict()
        self._thumb_bytes = 0
        self._thumb_lock = threading.Lock()
        self._decode = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))
        self._info = None  # (generation, facts)
        # Every model call runs on this one thread: torch's OpenMP pool belongs to the thread
        # that calls it, and a new request thread each time would build (and keep) a new pool.
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="semdb-model")

    def on_model_thread(self, fn, *args, **kwargs):
        def locked():
            with self.lock:
                return fn(*args, **kwargs)

        return self._model_thread.submit(locked).result()

    def warm(self) -> None:
        """Load the model, build the index and run one text through the model."""

        self.on_model_thread(self.db.warm)

    def close(self) -> None:
        self._model_thread.shutdown(wait=True)

    # --- search ---
    def search(self, request: SearchRequest) -> list:
        """The request's hits (Database.search), answered on the model thread; a `like` item
        that is not in the store is a 404."""

        def run():
            if isinstance(request.like, int) and self.db.item(request.like) is None:
                raise ApiError(404, f"no item {request.like} in this store")
            return self.db.search(request)

        return self.on_model_thread(run)

    def item(self, item_id: int):
        with self.lock:
            item = self.db.item(item_id)
        if item is None:
            raise ApiError(404, f"no item {item_id} in this store")
        return item

    def listing(self, offset: int, limit: int, **where) -> tuple[list, int, dict]:
        """One page of the collection (newest first), how many items the filters keep, and how
        many of those are photos, video frames and videos (Database.tally)."""
        with self.lock:
            return self.db.ls(**where, offset=offset, limit=limit), self.db.count(**where), self.db.tally(**where)

    def info(self) -> dict:
        with self.lock:
            generation = self.db.store.meta().get("generation")
            if self._info is None or self._info[0] != generation:
                facts = self.db.info()
                facts["generation"] = generation
                self._info = (generation, facts)
            return self._info[1]

    # --- pictures ---
    def picture(self, item_id: int, max_side: int, quality: int, cache: bool, square: bool = False) -> bytes:
        """The item's picture as JPEG, its long side at most `max_side`; `square`: its centre
        square, `max_side` wide (a tile of the page's grid, sharp at the screen's pixel density)."""
        item = self.item(item_id)
        try:
            st = os.stat(item.path)
        except OSError:
            raise ApiError(404, f"item {item_id}: its file {display_path(item.path)} is gone") from None
        key = (item_id, max_side, square, st.st_size, st.st_mtime_ns)
        if cache:
            with self._thumb_lock:
                if key in self._thumbs:
                    self._thumbs.move_to_end(key)
                    return self._thumbs[key]
        with self._decode:
            try:
                if item.frame_ms is None:
                    img = load_image(item.path, draft_size=max_side)
                else:  # a video frame: read at its time (cached like any thumbnail)
                    img = frame_at(item.path, item.frame_ms, max_side)
            except ImageError as e:
                if not os.path.exists(item.path):
                    raise ApiError(404, f"item {item_id}: its file {display_path(item.path)} is gone") from None
                raise ApiError(422, f"item {item_id}: {e}") from None
            if square:
                side = min(img.size)
                left, top = (img.width - side) // 2, (img.height - side) // 2
                img = img.crop((left, top, left + side, top + side))
            if max(img.size) > max_side:
                img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=quality)
        data = buf.getvalue()
        if cache:
            with self._thumb_lock:
                self._thumbs[key] = data
                self._thumb_bytes += len(data)
                while self._thumb_bytes > THUMB_CACHE_BYTES and self._thumbs:
                    _, old = self._thumbs.popitem(last=False)
                    self._thumb_bytes -= len(old)
        return data


# --- the app ------------------------------------------------------------------------------------


def create_app(db, *, instance: str = "", allowed_hosts=None, lifespan=None, access: Access | None = None):
    """The ASGI app over an open (read-only) Database. `allowed_hosts`: Host header names
    accepted (DNS-rebinding guard for a loopback server); None accepts any. `lifespan`: an
    async context manager factory run around serving (server.py writes serve.json in it).
    `access`: the key every request must carry (auth.py); None serves without one."""
    service = Service(db)

    def guarded(fn):
        """Run a sync handler in the thread pool; semdb and API errors become JSON."""

        async def endpoint(request: Request):
            try:
                return await run_in_threadpool(fn, request)
            except ApiError as e:
                return _error(e.status, e.message)
            except SemdbError as e:
                return _error(_status_of(e), str(e))
            except Exception as e:  # a bug: logged with its traceback, answered in one line
                log.exception("unexpected error on %s", request.url.path)
                return _error(500, f"internal error ({type(e).__name__}); see the server's log")

        return endpoint

    def answer(search: SearchRequest) -> JSONResponse:
        t0 = time.perf_counter()
        hits = service.search(search)
        return JSONResponse({**_hits_json(hits), "ms": round(1000 * (time.perf_counter() - t0), 2)})

    def search_get(request: Request):
        return answer(search_request(request.query_params, SEARCH_PARAMS))

    async def search_post(request: Request):
        try:  # the parameters are checked before the upload is read
            options = search_options(request.query_params, SEARCH_PARAMS)
            data = await _upload(request)
        except ApiError as e:
            return _error(e.status, e.message)
        except SemdbError as e:
            return _error(_status_of(e), str(e))

        def run(_request):
            with tempfile.NamedTemporaryFile(prefix="semdb-upload-", suffix=".img") as tmp:
                tmp.write(data)
                tmp.flush()
                try:
                    img = load_image(tmp.name, draft_size=db.embedder.image_size)
                except ImageError as e:
                    raise ApiError(415, f"upload: {e.reason}") from None
            return answer(SearchRequest.of(**options, image=img))

        return await guarded(run)(request)

    def similar(request: Request):
        like = parse_item_id(request.path_params["id"])
        return answer(search_request(request.query_params, SIMILAR_PARAMS, like=like))

    def item(request: Request):
        return JSONResponse(_item_json(service.item(parse_item_id(request.path_params["id"]))))

    def items(request: Request):
        options = listing_options(request.query_params)
        page, total, kinds = service.listing(**options)
        return JSONResponse(
            {"items": [_item_json(it) for it in page], "total": total, **kinds, "offset": options["offset"]}
        )

    def info(request: Request):
        return JSONResponse(service.info())

    def thumb(request: Request):
        only(request.query_params, ("size", "square"))
        size = int_param(request.query_params, "size", DEFAULT_THUMB, *THUMB_SIZES)
        square = bool(int_param(request.query_params, "square", 0, 0, 1))
        data = service.picture(parse_item_id(request.path_params["id"]), size, 82, cache=True, square=square)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    def image(request: Request):
        data = service.picture(parse_item_id(request.path_params["id"]), VIEW_MAX_SIDE, 90, cache=False)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    def video(request: Request):
        item_id = parse_item_id(request.path_params["id"])
        it = service.item(item_id)
        if it.frame_ms is None:
            raise ApiError(404, f"item {item_id} is not a video frame")
        if not os.path.isfile(it.path):
            raise ApiError(404, f"item {item_id}: its file {display_path(it.path)} is gone")
        media_type = VIDEO_TYPES.get(os.path.splitext(it.path)[1][1:].lower(), "application/octet-stream")
        return FileResponse(it.path, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})

    static = _static_files()

    def page(request: Request):
        return Response(static["index.html"], media_type="text/html; charset=utf-8")

    def static_file(request: Request):
        name = request.path_params["name"]
        if name not in static:
            return _error(404, f"no such page: {request.url.path[:80]}")
        kind = STATIC_TYPES[os.path.splitext(name)[1]]
        return Response(static[name], media_type=kind, headers={"Cache-Control": "no-cache"})

    async def not_found(request: Request, exc: HTTPException):
        return _error(
            exc.status_code, exc.detail if exc.status_code != 404 else f"no such page: {request.url.path[:80]}"
        )

    async def server_error(request: Request, exc: Exception):  # uvicorn logs the traceback
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log")

    routes = [
        Route("/", page),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/api/search", guarded(search_get), methods=["GET"]),
        Route("/api/search", search_post, methods=["POST"]),
        Route("/api/similar/{id}", guarded(similar)),
        Route("/api/items", guarded(items)),
        Route("/api/item/{id}", guarded(item)),
        Route("/api/info", guarded(info)),
        Route("/thumb/{id}", guarded(thumb)),
        Route("/image/{id}", guarded(image)),
        Route("/video/{id}", guarded(video)),
        Route("/static/{name}", static_file),
    ]
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: not_found, Exception: server_error}, lifespan=lifespan
    )
    app.state.service = service
    hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
    return _Guard(protect(app, access), instance, hosts)


_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]


class _Guard:
    """ASGI wrapper: refuse unexpected Host headers (DNS rebinding onto a loopback server) and
    add the instance token and the security headers to every response (the key guard's too)."""

    def __init__(self, app, instance: str, hosts):
        self.app, self.hosts = app, hosts
        self.state = app.state
        self.extra = [(INSTANCE_HEADER.lower().encode(), instance.encode()), *_HEADERS]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.extra]}
            await send(message)

        if self.hosts is not None:
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if _host_name(host) not in self.hosts:
                response = _error(
                    421, "unexpected Host header: this server answers only to " + ", ".join(sorted(self.hosts))
                )
                return await response(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)


def _host_name(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8765
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


async def _upload(request: Request) -> bytes:
    """The uploaded image's bytes: multipart field "image" (or the first file), or the raw body."""
    length = request.headers.get("content-length")
    if length is None:
        raise ApiError(411, "send the image with a Content-Length (no chunked uploads)")
    try:
        n = int(length)
    except ValueError:
        raise ApiError(400, "bad Content-Length") from None
    if n > MAX_UPLOAD_BYTES:
        raise ApiError(413, f"upload of {n} bytes: at most {MAX_UPLOAD_BYTES} bytes")
    if n == 0:
        raise ApiError(400, "empty upload: send an image file (multipart field 'image', or the raw body)")
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=20)
        except Exception as e:  # malformed multipart: python-multipart's own errors
            raise ApiError(400, f"malformed multipart upload ({type(e).__name__})") from None
        try:
            part = form.get("image")
            if part is None or isinstance(part, str):
                part = next((v for v in form.values() if not isinstance(v, str)), None)
            if part is None:
                raise ApiError(400, "no file in the upload: send it as multipart field 'image'")
            data = await part.read()
        finally:
            await form.close()
    else:
        data = await request.body()
    if not data:
        raise ApiError(400, "empty upload: the image file has no bytes")
    return data
