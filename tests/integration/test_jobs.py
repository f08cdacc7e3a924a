"""``/api/jobs``: upload a video, poll, fetch the results, delete; limits, token, cleanup."""

from __future__ import annotations

import json
import threading

import aiohttp
import av
import cv2
import numpy as np
import pytest

from server.app import create_app
from server.config import ServerConfig
from server.state import JOBS
from tests.helpers import (
    FakeClassifier,
    assert_malformed_multipart_refused,
    face_frame,
    wait_for,
    write_video,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def video(tmp_path) -> bytes:
    return write_video(tmp_path / "v.mp4", "libx264", seconds=1.0).read_bytes()


async def client_for(aiohttp_client, **kw):
    return await aiohttp_client(create_app(ServerConfig(**kw), classifier=FakeClassifier()))


async def finished(client, job: str) -> dict:
    await wait_for(lambda: client.app[JOBS].jobs[job].status in ("done", "failed"), 60,
                   what=f"job {job} finished")
    return await (await client.get(f"/api/jobs/{job}")).json()


async def test_a_video_job_runs_and_serves_every_file(aiohttp_client, video):
    client = await client_for(aiohttp_client)
    form = aiohttp.FormData()
    form.add_field("file", video, filename="clip.mp4", content_type="video/mp4")
    r = await client.post("/api/jobs", data=form)
    assert r.status == 202
    job = (await r.json())["job"]
    state = await finished(client, job)
    assert state["status"] == "done" and state["progress"] == 1.0
    assert state["name"] == "clip.mp4"
    assert state["summary"]["frames_analysed"] == 15
    assert state["summary"]["faces"][0]["dominant"] == "happy"  # the fake says happy
    assert set(state["files"]) == {"frames.csv", "frames.jsonl", "annotated.mp4", "chart.png",
                                   "summary.json"}
    for name, ctype in (("annotated.mp4", "video/mp4"), ("frames.csv", "text/csv"),
                        ("chart.png", "image/png"), ("summary.json", "application/json")):
        f = await client.get(f"/api/jobs/{job}/{name}")
        assert f.status == 200 and f.content_type == ctype and len(await f.read()) > 100
    whole = await (await client.get(f"/api/jobs/{job}/annotated.mp4")).read()
    part = await client.get(f"/api/jobs/{job}/annotated.mp4", headers={"Range": "bytes=100-199"})
    assert part.status == 206 and await part.read() == whole[100:200]  # a <video> can seek
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
    tail = await client.get(f"/api/jobs/{job}/annotated.mp4", headers={"Range": "bytes=-10"})
    assert tail.status == 206 and await tail.read() == whole[-10:]
    d = await client.get(f"/api/jobs/{job}/frames.csv?download=1")
    assert "attachment" in d.headers["Content-Disposition"]
    assert json.loads(await (await client.get(f"/api/jobs/{job}/summary.json")).text())
    assert client.app[JOBS].jobs[job].data == b""  # the upload itself is not kept
    r = await client.delete(f"/api/jobs/{job}")
    assert r.status == 200
    assert (await client.get(f"/api/jobs/{job}")).status == 404
    assert (await client.get(f"/api/jobs/{job}/frames.csv")).status == 404


async def test_raw_body_uploads_work_too(aiohttp_client, video):
    client = await client_for(aiohttp_client)
    r = await client.post("/api/jobs?name=raw.mp4", data=video)
    assert r.status == 202 and (await r.json())["name"] == "raw.mp4"


@pytest.mark.parametrize("body, status, text", [
    (b"", 400, "empty"),
    (b"definitely not a video", 415, "not a video"),
])
async def test_bad_uploads_are_refused_clearly(aiohttp_client, body, status, text):
    client = await client_for(aiohttp_client)
    r = await client.post("/api/jobs", data=body)
    assert r.status == status and text in (await r.json())["error"]
    img = cv2.imencode(".png", face_frame(0)[0])[1].tobytes()
    r = await client.post("/api/jobs", data=img)
    assert r.status == 415  # a photo goes to /api/predict, not here


async def test_cut_off_and_corrupt_videos_say_so(aiohttp_client, video, tmp_path):
    client = await client_for(aiohttp_client)
    # an MP4 whose index was at its end, cut off: the right type, unreadable -> 400, not 415
    r = await client.post("/api/jobs", data=video[:3000])
    assert r.status == 400
    assert (await r.json())["error"] == ("malformed or cut-off mp4/mov file: it cannot be read "
                                         "as video")
    # index first, cut off: analysed as far as it goes, and the job says the video ends early
    data = write_video(tmp_path / "f.mp4", seconds=4.0,  # 60 frames, the index (moov) first
                       options={"movflags": "faststart"}).read_bytes()
    r = await client.post("/api/jobs", data=data[: len(data) * 6 // 10])
    state = await finished(client, (await r.json())["job"])
    assert state["status"] == "done" and 0 < state["summary"]["frames_analysed"] < 60
    assert state["error"] == ("the video ends before the frames its header counts (cut off?); "
                              "what was analysed is kept")
    assert state["summary"]["ends_early"] is True
    assert state["summary"]["error"].startswith("the video ends after ")
    assert state["summary"]["error"].endswith(" of the 60 frames its header counts (cut off?)")
    # the header intact, every byte of the frames scrambled: failed, in our words only
    at = video.index(b"mdat") - 4
    size = int.from_bytes(video[at:at + 4], "big")
    noise = np.random.default_rng(0).integers(0, 256, size - 8, dtype=np.uint8).tobytes()
    scrambled = video[:at + 8] + noise + video[at + size:]
    r = await client.post("/api/jobs?name=a%0Ab.mp4", data=scrambled)
    assert r.status == 202 and (await r.json())["name"] == "ab.mp4"  # no control characters
    state = await finished(client, (await r.json())["job"])
    assert state["status"] == "failed"
    assert state["error"] == "no decodable video frames (the video data is corrupt)"


def silent_m4a(path) -> bytes:
    """An audio-only MP4 (a voice memo): the MP4 box layout, no video stream."""
    with av.open(str(path), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=44100)
        s.layout = "mono"
        for i in range(20):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
            f.sample_rate, f.pts = 44100, i * 1024
            for pkt in s.encode(f):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path.read_bytes()


async def test_audio_only_and_malformed_multipart_are_refused_in_our_words(aiohttp_client,
                                                                           tmp_path):
    client = await client_for(aiohttp_client)
    r = await client.post("/api/jobs", data=silent_m4a(tmp_path / "memo.m4a"))
    assert r.status == 415 and "not a video" in (await r.json())["error"]
    await assert_malformed_multipart_refused(
        client, "/api/jobs",
        "malformed body: send the video as the raw body or the multipart field 'file'")


async def test_too_large_is_413_and_a_full_queue_is_503(aiohttp_client, video):
    client = await client_for(aiohttp_client, max_upload_bytes=len(video) - 1)
    r = await client.post("/api/jobs", data=video)
    assert r.status == 413 and "too large" in (await r.json())["error"]
    client = await client_for(aiohttp_client, max_jobs=1)
    q = client.app[JOBS]
    gate = threading.Event()
    q.pool.submit(gate.wait, 30)  # the worker thread is busy: the next job stays queued
    first = await client.post("/api/jobs", data=video)
    assert first.status == 202
    r = await client.post("/api/jobs", data=video)
    assert r.status == 503 and "busy" in (await r.json())["error"]
    gate.set()
    assert (await finished(client, (await first.json())["job"]))["status"] == "done"


async def test_the_token_applies_to_every_job_route(aiohttp_client, video):
    client = await client_for(aiohttp_client, access_token="T0K")
    assert (await client.post("/api/jobs", data=video)).status == 401
    r = await client.post("/api/jobs?token=T0K", data=video)
    job = (await r.json())["job"]
    for method, path in (("GET", f"/api/jobs/{job}"), ("GET", f"/api/jobs/{job}/frames.csv"),
                         ("DELETE", f"/api/jobs/{job}")):
        assert (await client.request(method, path)).status == 401


async def test_finished_jobs_expire(aiohttp_client, video):
    client = await client_for(aiohttp_client, job_ttl_s=30)
    job = (await (await client.post("/api/jobs", data=video)).json())["job"]
    await finished(client, job)
    q = client.app[JOBS]
    q.expire(now=q.jobs[job].finished_at + 31)
    assert job not in q.jobs and (await client.get(f"/api/jobs/{job}")).status == 404


async def test_job_files_answer_ranges_and_downloads_as_a_developer_expects(aiohttp_client,
                                                                           video):
    client = await client_for(aiohttp_client)
    r = await client.post("/api/jobs?name=%20%20", data=video)  # a blank name is no name
    job = (await r.json())["job"]
    assert (await r.json())["name"] == "upload"
    r = await client.post("/api/jobs?name=interview.mp4", data=video)
    named = (await r.json())["job"]
    assert (await finished(client, named))["summary"]["source"] == "interview.mp4"
    await finished(client, job)
    r = await client.get(f"/api/jobs/{job}/frames.csv?download=0")
    assert r.status == 200 and "Content-Disposition" not in r.headers
    r = await client.get(f"/api/jobs/{job}/frames.csv?download=1")  # no name: the job id
    assert r.headers["Content-Disposition"] == f'attachment; filename="{job}-frames.csv"'
    r = await client.get(f"/api/jobs/{named}/frames.csv?download=1")  # the video's name
    assert r.headers["Content-Disposition"] == 'attachment; filename="interview-frames.csv"'
    r = await client.get(f"/api/jobs/{job}/frames.csv", headers={"Range": "bytes=99999999-"})
    assert r.status == 416 and r.headers["Content-Range"].startswith("bytes */")
    assert "outside the file" in (await r.json())["error"]


async def test_finished_jobs_expire_without_further_requests(aiohttp_client, video):
    from server.state import JOBS

    client = await client_for(aiohttp_client, job_ttl_s=0.5)
    job = (await (await client.post("/api/jobs", data=video)).json())["job"]
    await finished(client, job)
    jobs = client.app[JOBS]
    await wait_for(lambda: job not in jobs.jobs, 10, what="the job to expire by itself")
