"""Analysis jobs for uploaded videos (``/api/jobs``): a bounded queue, one job at a time in its
own thread, results in memory only, deleted on request or after a timeout.

``POST /api/jobs`` takes a video (raw body or multipart field ``file``, at most
``ServerConfig.max_upload_bytes``), checks that it is one, and queues it (503 when
``max_jobs`` are queued or running, 413 when too large, 415 when not a video, 400 when it starts
like a video file but cannot be read: a broken or cut-off header or index). The job runs
``core.analyze.analyze_video`` (the live path, offline) in a single worker thread, so at most
one upload competes with the live sessions for the CPU. The upload and every result file stay
in memory: nothing is written to disk. A finished job is kept for ``job_ttl_s`` seconds, or
until ``DELETE /api/jobs/{id}``; then it is gone.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from core.analyze import OUTPUT_FILES, Outputs, analyze_video
from core.video import VideoError, container_kind, inspect
from server.config import ServerConfig
from server.errors import INTERNAL, json_error
from server.state import JOBS

log = logging.getLogger(__name__)

CONTENT_TYPES = {".mp4": "video/mp4", ".csv": "text/csv", ".jsonl": "application/x-ndjson",
                 ".png": "image/png", ".json": "application/json"}
#: Upload read size per chunk.
CHUNK = 256 * 1024


class Cancelled(Exception):
    """Raised inside a job's thread when the job was deleted or the server is stopping."""


@dataclass
class Job:
    id: str
    name: str
    data: bytes
    status: str = "queued"  # queued | running | done | failed
    progress: float = 0.0
    summary: dict | None = None
    error: str | None = None
    outputs: Outputs = field(default_factory=Outputs)
    finished_at: float | None = None
    cancelled: bool = False

    def public(self) -> dict:
        out: dict[str, Any] = {"job": self.id, "name": self.name, "status": self.status,
                               "progress": round(self.progress, 3)}
        if self.summary is not None:
            out["summary"] = self.summary
            out["files"] = self.summary.get("files", [])
        if self.error is not None:
            out["error"] = self.error
        return out


class JobQueue:
    """The jobs of one app and their worker thread."""

    def __init__(self, cfg: ServerConfig, classifier: Any) -> None:
        self.cfg = cfg
        self.classifier = classifier
        self.jobs: dict[str, Job] = {}
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="jobs")
        self.tasks: set[asyncio.Task] = set()
        self.expiry: asyncio.Task | None = None  # :meth:`start`

    def start(self) -> None:
        """Begin expiring finished jobs on a timer (call from the running loop)."""
        self.expiry = asyncio.create_task(self.expire_forever(), name="jobs-expiry")

    def active(self) -> int:
        return sum(1 for j in self.jobs.values() if j.status in ("queued", "running"))

    def submit(self, name: str, data: bytes) -> Job:
        job = Job(uuid.uuid4().hex[:16], name, data)
        self.jobs[job.id] = job
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"job-{job.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return job

    def _analyze(self, job: Job) -> dict:
        def progress(frac: float) -> None:
            if job.cancelled:
                raise Cancelled()
            job.progress = frac

        job.status = "running"
        return analyze_video(io.BytesIO(job.data), self.classifier, job.outputs,
                             progress=progress, name=job.name)

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        try:
            job.summary = await loop.run_in_executor(self.pool, self._analyze, job)
            job.status = "done"
            if "error" in job.summary:
                job.error = ("the video ends before the frames its header counts (cut off?); "
                             "what was analysed is kept" if job.summary.get("ends_early")
                             else "the video breaks off; what was analysed before is kept")
        except Cancelled:
            job.status, job.error = "failed", "cancelled"
        except VideoError as exc:
            log.info("job %s: %s (%s)", job.id, exc, exc.detail or "no detail")
            job.status, job.error = "failed", exc.reason
        except Exception:  # the top of a job: log it whole, tell the client a fixed message
            log.exception("job %s failed", job.id)
            job.status, job.error = "failed", INTERNAL.replace("frame", "video")
        finally:
            job.data = b""  # the upload is not kept once analysed
            job.finished_at = time.monotonic()
        log.info("job %s: %s", job.id, job.status)

    def expire(self, now: float | None = None) -> None:
        """Forget finished jobs older than ``job_ttl_s``."""
        now = time.monotonic() if now is None else now
        for jid, j in list(self.jobs.items()):
            if j.finished_at is not None and now - j.finished_at > self.cfg.job_ttl_s:
                del self.jobs[jid]

    async def expire_forever(self) -> None:
        """Expire finished jobs every tenth of ``job_ttl_s`` (at most every minute), so their
        results leave memory on time even when nobody calls ``/api/jobs`` again."""
        while True:
            await asyncio.sleep(min(60.0, self.cfg.job_ttl_s / 10))
            try:
                self.expire()
            except Exception:  # keep expiring later; the cause goes to the log
                log.exception("expiring jobs failed")

    def delete(self, jid: str) -> bool:
        job = self.jobs.pop(jid, None)
        if job is None:
            return False
        job.cancelled = True
        return True

    async def close(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            await asyncio.wait([self.expiry])
        for j in self.jobs.values():
            j.cancelled = True
        if self.tasks:
            await asyncio.wait(list(self.tasks))
        await asyncio.to_thread(self.pool.shutdown, wait=True, cancel_futures=True)
        self.jobs.clear()


def _size(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n / 2**10:.0f} kB"


def _download_stem(job: Job) -> str:
    """The start of a downloaded file's name: the video's name without its extension, in safe
    characters ("interview.mp4" -> "interview"), else the job id."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", job.name.rsplit(".", 1)[0]).strip("._")[:60]
    return stem if stem and job.name != "upload" else job.id


class UploadError(ValueError):
    """A request body that carries no usable upload (the message is for the client)."""


async def _read_upload(request: web.Request, limit: int) -> tuple[str, bytes]:
    """The uploaded file, read in chunks up to ``limit`` bytes (HTTPRequestEntityTooLarge);
    UploadError for a multipart body without a ``file`` field or one that cannot be parsed
    (the parser's own text stays here: it can quote the client's bytes)."""
    name = "upload"
    if request.content_type.startswith("multipart/"):
        try:
            reader = await request.multipart()
            async for part in reader:
                if getattr(part, "name", None) == "file":
                    name = getattr(part, "filename", None) or name
                    buf = bytearray()
                    while chunk := await part.read_chunk(CHUNK):  # type: ignore[union-attr]
                        buf += chunk
                        if len(buf) > limit:
                            raise web.HTTPRequestEntityTooLarge(max_size=limit,
                                                                actual_size=len(buf))
                    return name, bytes(buf)
        except (ValueError, KeyError) as exc:  # no boundary, a broken part, ...
            raise UploadError("malformed body: send the video as the raw body or the "
                              "multipart field 'file'") from exc
        raise UploadError("multipart body needs a field named 'file'")
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit,
                                            actual_size=request.content_length)
    buf = bytearray()
    async for chunk in request.content.iter_chunked(CHUNK):
        buf += chunk
        if len(buf) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(buf))
    return request.query.get("name", name), bytes(buf)


def _clean_name(name: str) -> str:
    """The upload's name as shown and logged: printable characters only, at most 200."""
    return "".join(ch for ch in name if ch.isprintable()).strip()[:200] or "upload"


def _busy(max_jobs: int) -> web.Response:
    return json_error(503, f"server busy: {max_jobs} videos are being analysed; try later")


async def create_job(request: web.Request) -> web.Response:
    """``POST /api/jobs``: a video -> 202 ``{"job", "status": "queued", ...}``."""
    q = request.app[JOBS]
    cfg = q.cfg
    q.expire()
    if q.active() >= cfg.max_jobs:
        return _busy(cfg.max_jobs)
    try:
        name, data = await _read_upload(request, cfg.max_upload_bytes)
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, f"video too large (at most {_size(cfg.max_upload_bytes)})")
    except UploadError as exc:
        return json_error(400, str(exc))
    if not data:
        return json_error(400, "empty upload")
    found = await asyncio.to_thread(inspect, data)
    if found != "video":
        kind = container_kind(data)
        if found == "unreadable" and kind is not None:  # its header or index is broken/missing
            return json_error(400, f"malformed or cut-off {kind} file: it cannot be read as video")
        return json_error(415, "not a video this server can read (mp4, mov, webm, mkv, avi, flv)")
    if q.active() >= cfg.max_jobs:  # others were queued while this one uploaded
        return _busy(cfg.max_jobs)
    job = q.submit(_clean_name(name), data)
    log.info("job %s: queued %s (%d bytes)", job.id, job.name, len(data))
    return web.json_response(job.public(), status=202)


def _job(request: web.Request) -> Job:
    q = request.app[JOBS]
    q.expire()
    job = q.jobs.get(request.match_info["job"])
    if job is None:
        raise web.HTTPNotFound(text='{"error": "no such job (finished jobs are kept for a while, '
                                    'then deleted)"}', content_type="application/json")
    return job


async def job_status(request: web.Request) -> web.Response:
    """``GET /api/jobs/{job}``: status, progress, and when done the summary and file names."""
    return web.json_response(_job(request).public())


async def job_file(request: web.Request) -> web.Response:
    """``GET /api/jobs/{job}/{file}``: one result file of a finished job."""
    job = _job(request)
    name = request.match_info["file"]
    if job.status != "done" or name not in (job.summary or {}).get("files", []):
        later = " (yet)" if job.status in ("queued", "running") else ""
        return json_error(404, f"no file {name!r} for this job{later}")
    suffix = name[name.rfind("."):]
    body = job.outputs.get(name)
    headers = {"Accept-Ranges": "bytes"}
    if request.query.get("download", "").lower() not in ("", "0", "false", "no"):
        headers["Content-Disposition"] = f'attachment; filename="{_download_stem(job)}-{name}"'
    ctype = CONTENT_TYPES.get(suffix, "application/octet-stream")
    try:
        rng = request.http_range  # browsers seek in a <video> with Range requests
    except ValueError:
        rng = slice(None, None)
    if rng.start is None and rng.stop is None:
        return web.Response(body=body, headers=headers, content_type=ctype)
    start, stop, _ = rng.indices(len(body))
    if start >= len(body) or start >= stop:
        answer = json_error(416, f"the range is outside the file ({len(body)} bytes)")
        answer.headers["Content-Range"] = f"bytes */{len(body)}"
        return answer
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(body)}"
    return web.Response(status=206, body=body[start:stop], headers=headers, content_type=ctype)


async def delete_job(request: web.Request) -> web.Response:
    """``DELETE /api/jobs/{job}``: forget the job and its results now (cancels a running one)."""
    if not request.app[JOBS].delete(request.match_info["job"]):
        return json_error(404, "no such job")
    return web.json_response({"deleted": True})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/jobs", create_job)
    r.add_get("/api/jobs/{job}", job_status)
    r.add_get("/api/jobs/{job}/{file}", job_file)
    r.add_delete("/api/jobs/{job}", delete_job)


__all__ = ["JobQueue", "add_routes", "OUTPUT_FILES"]
