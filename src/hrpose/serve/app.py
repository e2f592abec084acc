"""The ASGI app of `hrpose serve` (FastAPI): the pose API, its OpenAPI schema and the web page.

Endpoints (all JSON answers carry `"version": 1`, the schema version):

- `POST /v1/pose`: the image as the raw request body (Content-Type image/jpeg, image/png or image/webp)
  or as multipart/form-data with a file field `image`; optional fields (form fields or query parameters):
  `boxes` (JSON: [[x, y, w, h] or [x, y, w, h, score], ...] in image pixels; default: the detector's),
  `det_thr` (0..1: people whose box score is below are left out; the detector's own threshold applies
  first), `kpt_thr` (0..1: joints scored below are answered as [0, 0, 0], COCO's "not found"; default 0),
  `filename` (names the image in the answer). Answer:
  `{"version": 1, "model": NAME, "image": {"file", "width", "height"}, "people": [...],
  "timings_ms": {"read", "queue", "decode", "inference", "total"}, "batch": N}`; `people` is exactly
  `hrpose predict`'s per-image JSON (`hrpose.inference.results.people_json`).
- `GET /v1/models`: the model served (name, joint names, skeleton, detector); `GET /healthz`: liveness and
  queue depth; `GET /openapi.json`: the OpenAPI schema. FastAPI's `/docs` page loads Swagger UI from a CDN,
  so it is switched off (the server works offline); read `/openapi.json` with any OpenAPI viewer.
- `GET /`: the web page (`static/`: plain HTML/JS/CSS, nothing fetched from elsewhere).

Errors are `{"version": 1, "detail": MESSAGE[, "field": NAME]}`: 400 no image / bad form, 413 a body over
`max_body_bytes` (refused by its Content-Length before reading, or when the stream passes the limit) or a
header declaring more pixels than the limit, 415 not JPEG/PNG/WebP, 422 undecodable image or a bad field
(named), 408 when the body does not arrive within `timeout_s`, 503 + Retry-After when the queue is full (or
more requests than `admitted_requests()` are in work: refused before their body is read), 504 when the answer
takes longer than `timeout_s` (a job not yet started is then dropped; one running finishes unseen).
The uploaded bytes stay in memory: nothing is written to disk, nothing is unpickled.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from hrpose.serve.worker import BatchWorker, Job, QueueFull

SCHEMA_VERSION = 1
#: formats the API decodes (the header is read before anything is decoded)
ACCEPTED_FORMATS = ("JPEG", "PNG", "WebP")
MAX_BOXES = 256
_STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
           "style.css": "text/css; charset=utf-8"}  # fmt: skip
# the page may talk to this server only, and load nothing from elsewhere
_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
        "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'")  # fmt: skip


@dataclass
class ServeSettings:
    model_name: str = "model"
    detector: str = "auto"
    max_body_bytes: int = 20 * 2**20
    max_pixels: int | None = None  # None: hrpose.image_limits.max_image_pixels()
    queue_size: int = 16
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    timeout_s: float = 30.0
    delay_s: float = 0.0  # tests: make each batch this much slower


class ApiError(Exception):
    def __init__(self, status: int, detail: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.field, self.headers = status, detail, field, headers or {}


def _number(raw: str | None, field: str) -> float | None:
    if raw is None or str(raw).strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0.0 <= value <= 1.0):
        raise ApiError(422, f"{field}: expected a number from 0 to 1, got {str(raw)[:40]!r}", field)
    return value


def parse_boxes(raw: str | None) -> list[list[float]] | None:
    """The `boxes` field: JSON [[x, y, w, h(, score)], ...] -> list, or ApiError 422 naming the field."""
    if raw is None or str(raw).strip() == "":
        return None
    want = "expected a JSON list of boxes [[x, y, w, h] or [x, y, w, h, score], ...] in image pixels"
    try:
        value = json.loads(raw, parse_constant=lambda c: math.nan)
    except (ValueError, RecursionError):
        raise ApiError(422, f"boxes: not valid JSON ({str(raw)[:60]!r}): {want}", "boxes") from None
    if not isinstance(value, list):
        raise ApiError(422, f"boxes: {want}, got a JSON {type(value).__name__}", "boxes")
    if len(value) > MAX_BOXES:
        raise ApiError(422, f"boxes: {len(value)} boxes, more than the {MAX_BOXES} one image may have", "boxes")
    from hrpose.inference.boxes import BoxError, check_box

    out = []
    for i, box in enumerate(value):
        try:  # the same strict rule as detection files: numbers finite in float32, a score in [0, 1]
            out.append(check_box(box, f"boxes[{i}]", allow_score=True))
        except BoxError as e:
            raise ApiError(422, f"boxes[{i}]: {str(box)[:60]} is not [x, y, w, h] or [x, y, w, h, score] of finite "
                                f"numbers with a score from 0 to 1: {e}", "boxes") from None  # fmt: skip
    return out


def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """multipart/form-data held in memory -> {field name: (file name or None, bytes)} (first of each name)."""
    boundary = None
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise ApiError(400, "multipart/form-data without a boundary: send the form as a browser or curl -F does")
    fields: dict[str, tuple[str | None, bytes]] = {}
    delimiter = b"--" + boundary.encode("latin-1")
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        if data.endswith(b"\r\n"):
            data = data[:-2]
        name = filename = None
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() != "content-disposition":
                continue
            for item in value.split(";"):
                k, _, v = item.strip().partition("=")
                if k.lower() == "name":
                    name = v.strip('"')
                elif k.lower() == "filename":
                    filename = v.strip('"')
        if name is not None and name not in fields:
            fields[name] = (filename, data)
    return fields


def _clean_name(name: str | None) -> str:
    """The image's name in answers and messages: a file name only, printable, at most 100 characters."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable())[:100]
    return base or "upload"


def create_app(estimator: Any, settings: ServeSettings | None = None) -> Any:
    """The FastAPI app serving `estimator` (a `PoseEstimator`) with `settings`; starts its worker thread on
    startup and stops it on shutdown."""
    from contextlib import asynccontextmanager

    from hrpose.errors import UserError
    from hrpose.image_limits import HEADER_BYTES, ImageTooLargeError, check_image_bytes, image_format
    from hrpose.inference.results import people_json

    s = settings or ServeSettings()
    worker = BatchWorker(estimator, queue_size=s.queue_size, max_batch=s.max_batch, batch_wait_ms=s.batch_wait_ms,
                         max_pixels=s.max_pixels, delay_s=s.delay_s)  # fmt: skip
    names = list(estimator.joint_names)
    admit = admitted_requests(s)
    active = [0]
    static = {n: resources.files("hrpose.serve").joinpath("static", n).read_bytes() for n in _STATIC}

    @asynccontextmanager
    async def lifespan(app: Any):  # type: ignore[no-untyped-def]
        worker.start()
        yield
        worker.stop()

    app = FastAPI(title="hrpose", version=str(SCHEMA_VERSION), docs_url=None, redoc_url=None, lifespan=lifespan,
                  description=__doc__)  # fmt: skip
    app.state.worker = worker

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        body: dict[str, Any] = {"version": SCHEMA_VERSION, "detail": e.detail}
        if e.field:
            body["field"] = e.field
        return JSONResponse(body, status_code=e.status, headers=e.headers)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise ApiError(400, f"Content-Length {declared[:20]!r} is not a number") from None
            if size > s.max_body_bytes:
                raise ApiError(413, f"the request body is {size / 2**20:.1f} MiB, over the server's limit of "
                                    f"{s.max_body_bytes / 2**20:g} MiB: send a smaller image (downscale or "
                                    "JPEG-compress it)")  # fmt: skip
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > s.max_body_bytes:
                raise ApiError(413, f"the request body passed the server's limit of {s.max_body_bytes / 2**20:g} "
                                    "MiB: send a smaller image (downscale or JPEG-compress it)")  # fmt: skip
            chunks.append(chunk)
        return b"".join(chunks)

    pose_doc = {
        "requestBody": {"content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/webp": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "format": "binary"},
                "boxes": {"type": "string", "description": "JSON [[x, y, w, h(, score)], ...]"},
                "det_thr": {"type": "number", "minimum": 0, "maximum": 1},
                "kpt_thr": {"type": "number", "minimum": 0, "maximum": 1}}}}}},
        "parameters": [{"name": n, "in": "query", "required": False, "schema": {"type": t}}
                       for n, t in (("boxes", "string"), ("det_thr", "number"), ("kpt_thr", "number"),
                                    ("filename", "string"))],
    }  # fmt: skip

    @app.post("/v1/pose", openapi_extra=pose_doc, summary="poses of the people in one image")
    async def pose(request: Request) -> Response:
        # admitted requests (reading, queued, running) are counted: past the limit a request is refused before
        # its body is read, so at most `admit` bodies of at most max_body_bytes are held at once
        if active[0] >= admit:
            raise ApiError(503, f"the server is busy ({active[0]} requests in work): try again in a second",
                           headers={"Retry-After": "1"})  # fmt: skip
        active[0] += 1
        try:
            return await _pose(request)
        finally:
            active[0] -= 1

    async def _pose(request: Request) -> Response:
        t_start = time.perf_counter()
        try:
            body = await asyncio.wait_for(read_body(request), timeout=s.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {s.timeout_s:g} s") from None
        t_read = time.perf_counter()
        ctype = request.headers.get("content-type", "")
        q = request.query_params
        form: dict[str, tuple[str | None, bytes]] = {}
        if ctype.lower().startswith("multipart/form-data"):
            form = parse_multipart(body, ctype)
            image_field = form.get("image") or next((v for v in form.values() if v[0] is not None), None)
            if image_field is None:
                raise ApiError(400, "the form has no image: send the file in a field named 'image' "
                                    "(curl -F image=@photo.jpg)", "image")  # fmt: skip
            filename, data = image_field
        else:
            filename, data = q.get("filename"), body
        del body

        def field(name: str) -> str | None:
            if name in form:
                return form[name][1].decode("utf-8", "replace")
            return q.get(name)

        boxes = parse_boxes(field("boxes"))
        det_thr = _number(field("det_thr"), "det_thr")
        kpt_thr = _number(field("kpt_thr"), "kpt_thr")
        name = _clean_name(filename or field("filename"))
        if not data:
            raise ApiError(400, "no image: send a JPEG, PNG or WebP file as the request body "
                                "(curl --data-binary @photo.jpg) or as the form field 'image'", "image")  # fmt: skip
        kind = image_format(data[:64])
        if kind not in ACCEPTED_FORMATS:
            what = f"a {kind} file" if kind else "not an image this server reads"
            raise ApiError(415, f"{name}: {what}; send a JPEG, PNG or WebP image", "image")
        try:
            check_image_bytes(data[:HEADER_BYTES], limit=s.max_pixels, file_size=len(data))
        except ImageTooLargeError as e:
            raise ApiError(413, f"{name}: {e}", "image") from None
        job = Job(data, name, boxes)
        del data
        try:
            future = worker.submit(job)
        except QueueFull:
            raise ApiError(503, f"the server is busy ({s.queue_size} requests waiting): try again in a second",
                           headers={"Retry-After": "1"}) from None  # fmt: skip
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), timeout=s.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, f"no answer within the server's {s.timeout_s:g} s timeout: the server is overloaded "
                                "or the image holds very many people; try again later") from None  # fmt: skip
        except UserError as e:
            status = 413 if isinstance(e, ImageTooLargeError) or "million pixels" in str(e) else 422
            raise ApiError(status, str(e), "image") from None
        except ValueError as e:  # e.g. boxes the estimator refuses
            raise ApiError(422, f"{name}: {e}", "boxes" if boxes is not None else None) from None
        people = people_json(result.poses, name, names)
        if det_thr is not None:
            people = [p for p in people if p["box_score"] >= det_thr]
        if kpt_thr:
            for p in people:
                k = p["keypoints"]
                for j in range(0, len(k), 3):
                    if k[j + 2] < kpt_thr:
                        k[j : j + 3] = [0.0, 0.0, 0.0]
        timings = {"read": round((t_read - t_start) * 1000.0, 2), **result.timings_ms}
        timings["total"] = round((time.perf_counter() - t_start) * 1000.0, 2)
        answer = {"version": SCHEMA_VERSION, "model": s.model_name,
                  "image": {"file": name, "width": result.width, "height": result.height},
                  "people": people, "timings_ms": timings, "batch": result.batch}  # fmt: skip
        try:
            text = json.dumps(answer, allow_nan=False)
        except ValueError:
            raise ApiError(500, f"{name}: the model gave non-finite values") from None
        return Response(text, media_type="application/json")

    @app.get("/v1/models", summary="the model this server runs")
    async def models() -> dict[str, Any]:
        return {"version": SCHEMA_VERSION, "models": [{
            "name": s.model_name, "joint_names": names,
            "skeleton": [list(map(int, pair)) for pair in estimator.skeleton], "detector": s.detector,
            "limits": {"max_body_bytes": s.max_body_bytes, "max_image_pixels": _pixels(s.max_pixels),
                       "queue_size": s.queue_size, "timeout_s": s.timeout_s}}]}  # fmt: skip

    @app.get("/healthz", summary="liveness and queue depth")
    async def healthz() -> dict[str, Any]:
        return {"version": SCHEMA_VERSION, "status": "ok", "queued": worker.queue.qsize(),
                "queue_size": s.queue_size, "batches": worker.batches, "done": worker.jobs_done}  # fmt: skip

    def _page(file: str) -> Response:
        return Response(static[file], media_type=_STATIC[file],
                        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"})  # fmt: skip

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return _page("index.html")

    @app.get("/static/{file}", include_in_schema=False)
    async def static_file(file: str) -> Response:
        if file not in static:
            raise ApiError(404, f"no such file: /static/{file[:60]}")
        return _page(file)

    return app


def admitted_requests(s: ServeSettings) -> int:
    """Requests in work at once (body being read, queued, running); more get 503 before their body is read."""
    return s.queue_size + s.max_batch + 2


def _pixels(limit: int | None) -> int:
    from hrpose.image_limits import max_image_pixels

    return max_image_pixels(limit)
