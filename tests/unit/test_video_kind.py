"""``core.video.container_kind``: which uploads start like a video container (a file that does
and still cannot be opened is malformed or cut off: 400, not 415)."""

from __future__ import annotations

import pytest

from core.video import container_kind


def box(brand: bytes) -> bytes:
    return (24).to_bytes(4, "big") + b"ftyp" + brand + bytes(12)


@pytest.mark.parametrize("data, kind", [
    (box(b"isom"), "mp4/mov"),
    (box(b"qt  "), "mp4/mov"),
    ((8).to_bytes(4, "big") + b"moov", "mp4/mov"),
    (b"\x1a\x45\xdf\xa3" + bytes(20), "mkv/webm"),
    (b"RIFF" + bytes(4) + b"AVI LIST", "avi"),
    (b"FLV\x01\x05" + bytes(8), "flv"),
    (box(b"heic"), None),  # an iPhone photo: the MP4 box layout, not a video
    (box(b"avif"), None),
    (box(b"mif1"), None),
    (b"RIFF" + bytes(4) + b"WAVEfmt ", None),  # audio
    (b"\xff\xd8\xff\xe0", None),
    (b"definitely not a video", None),
    (b"", None),
])
def test_container_kind(data: bytes, kind: str | None) -> None:
    assert container_kind(data) == kind
