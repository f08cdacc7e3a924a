"""Detector modes through the server: POST /api/predict uses the photo mode (accurate: a
30-face composite), the config chooses the modes, /healthz reports them."""

from __future__ import annotations

import cv2
import pytest

from server.app import create_app
from server.config import ServerConfig
from server.state import ENGINE
from tests.detection_scenes import face_grid, found
from tests.helpers import FakeClassifier

pytestmark = pytest.mark.timeout(120)

THIRTY = [64, 80, 96, 128, 160] * 6  # 1920x1080, 6 columns: accurate finds 27, live 18


def _png(img) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


async def _predict(aiohttp_client, cfg: ServerConfig, img) -> dict:
    client = await aiohttp_client(create_app(cfg, classifier=FakeClassifier()))
    r = await client.post("/api/predict", data=_png(img))
    assert r.status == 200, await r.text()
    return await r.json()


async def test_predict_uses_the_accurate_mode_and_returns_thirty_faces(aiohttp_client):
    img, boxes = face_grid(THIRTY, 1920, 1080, cols=6)
    body = await _predict(aiohttp_client, ServerConfig(), img)
    assert (body["width"], body["height"]) == (1920, 1080)
    faces = body["faces"]
    assert len(faces) >= 26
    assert found([_Det(f["box"]) for f in faces], boxes) == len(faces)  # none off a face
    for f in faces:
        assert set(f) == {"box", "label", "score", "scores"}  # untracked: no id
        assert f["label"] == "happy" and len(f["scores"]) == 7


async def test_the_photo_mode_is_a_setting(aiohttp_client):
    img, _ = face_grid(THIRTY, 1920, 1080, cols=6)
    body = await _predict(aiohttp_client, ServerConfig(detect_photo_mode="fast"), img)
    assert body["faces"] == []  # short-range on the whole frame: these faces are too small


async def test_healthz_reports_the_detector_modes(aiohttp_client):
    client = await aiohttp_client(create_app(ServerConfig(detect_live_mode="fast"),
                                             classifier=FakeClassifier()))
    body = await (await client.get("/healthz")).json()
    assert body["detector"] == {"live": "fast", "photo": "accurate", "live_now": "fast"}
    assert client.app[ENGINE].overload_pipeline is None  # already fast: nothing to shed to


def test_unknown_modes_are_refused():
    with pytest.raises(ValueError, match="unknown detector mode"):
        ServerConfig(detect_live_mode="turbo")
    with pytest.raises(ValueError, match="unknown detector mode"):
        ServerConfig(detect_photo_mode="")


class _Det:
    """The shape ``found`` reads: a ``box``."""

    def __init__(self, box) -> None:
        self.box = box
