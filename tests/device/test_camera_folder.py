"""A folder camera source reads images through models.image and skips what it can't use, with a
log line, without starting the folder again (found by tools/fuzz_images.py)."""

from __future__ import annotations

import struct
import time

import numpy as np

from facelink.device.camera import CameraReader, open_frames


def _sof_claims(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0) claiming another size: a tiny file that decodes to
    width x height pixels."""
    i = 2
    while jpeg[i + 1] not in (0xC0, 0xC2):
        i += 2 + struct.unpack(">H", jpeg[i + 2:i + 4])[0]
    return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]


def _bad_folder(tmp_path, faces_dir):
    good = (faces_dir / "people/obama/1.jpg").read_bytes()
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "1-good.jpg").write_bytes(good)
    (folder / "2-truncated.jpg").write_bytes(good[:150])
    (folder / "3-bomb.jpg").write_bytes(_sof_claims(good, 9000, 9000))  # 81 megapixels
    (folder / "4-text.jpg").write_text("not an image\n")
    (folder / "5-broken-video.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + b"\xff" * 100)
    (folder / "6-good.png").write_bytes((faces_dir / "hard/32bit.png").read_bytes())
    return folder


def test_bad_files_are_skipped_and_logged(tmp_path, faces_dir, caplog):
    frames = list(open_frames(str(_bad_folder(tmp_path, faces_dir))))
    assert len(frames) == 2  # was 3: the 81-megapixel frame was decoded and handed to the door
    assert all(f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3 for f in frames)
    skipped = [r for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 4


def test_reader_finishes_the_folder_once(tmp_path, faces_dir):
    reader = CameraReader(str(_bad_folder(tmp_path, faces_dir)), max_fps=100).start()
    got, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline and not (reader.end_of_stream.is_set() and reader._queue.empty()):
        frame = reader.get(timeout=0.2)
        if frame is not None:
            got.append(frame.index)
    reader.stop()
    # was: the broken video raised, the reader reopened the folder from its first file, forever
    assert reader.end_of_stream.is_set() and reader.reopens == 0
    assert got == [0, 1]
