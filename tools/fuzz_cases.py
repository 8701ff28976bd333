"""The cases of tools/fuzz_images.py: real photos mutated the ways a hostile or broken file is.

``make_case(seed, index, photos)`` is a pure function of its arguments: the same seed and photo
set give the same bytes, so any case can be re-made alone (``fuzz_images.py --case N``).
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HUGE_BYTES = 15 * 1024 * 1024  # Rekognition's (and FaceLink's) limit for image bytes


@dataclass(frozen=True)
class Case:
    index: int
    kind: str  # the mutator
    detail: str  # what exactly it did, for the report
    photo: str  # the photo it started from, relative to the faces folder
    data: bytes
    suffix: str

    @property
    def name(self) -> str:
        return f"case-{self.index:05d}-{self.kind}{self.suffix}"


def photos(faces_dir: Path) -> list[Path]:
    """Every photo of the faces folder, in a stable order."""
    return sorted(p for p in faces_dir.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())


# -- format helpers --------------------------------------------------------------------------
def _encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _small(rng: random.Random, im: Image.Image) -> Image.Image:
    """Most re-encoded cases are shrunk so that 200 cases stay quick; some keep full size."""
    side = rng.choice([160, 320, 480, max(im.size)])
    im = im.copy()
    im.thumbnail((side, side))
    return im


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset, length) of a JPEG's header segments, up to and including the first SOS."""
    out, i = [], 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        out.append((marker, i, length))
        if marker == 0xDA:
            break
        i += 2 + length
    return out


def _as_jpeg(rng: random.Random, data: bytes, im: Image.Image) -> bytes:
    if data[:2] == b"\xff\xd8" and jpeg_segments(data) and rng.random() < 0.5:
        return data
    return _encode(_small(rng, im).convert("RGB"), "JPEG", progressive=rng.random() < 0.3)


def png_chunk(kind: bytes, body: bytes, crc: bool = True) -> bytes:
    tail = zlib.crc32(kind + body) if crc else 0xDEADBEEF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", tail)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, i = [], 8
    while i + 12 <= len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        out.append((data[i + 4:i + 8], data[i + 8:i + 8 + n]))
        i += 12 + n
    return out


def _sof_dims(rng: random.Random) -> tuple[int, int]:
    return rng.choice([(60000, 60000), (65535, 65535), (0, 0), (1, 65535), (65535, 1), (7000, 7000),
                       (8000, 6000), (6000, 6000), (31, 31), (rng.randrange(65536), rng.randrange(65536))])


# -- mutators: (rng, photo bytes, photo) -> (detail, bytes, suffix) -------------------------
def original(rng, data, im):
    return "unchanged", data, ".png" if data.startswith(PNG_MAGIC) else ".jpg"


def truncate(rng, data, im):
    cut = rng.choice([rng.randrange(len(data)), rng.randrange(min(len(data), 4096)), len(data) - 1])
    return f"first {cut} of {len(data)} bytes", data[:cut], ".png" if data.startswith(PNG_MAGIC) else ".jpg"


def byte_flips(rng, data, im):
    buf = bytearray(data)
    n = rng.choice([1, 2, 8, 64])
    span = rng.choice([len(buf), min(len(buf), 2048)])  # anywhere, or in the headers
    for _ in range(n):
        buf[rng.randrange(span)] ^= rng.randrange(1, 256)
    return f"{n} bytes flipped in the first {span}", bytes(buf), ".png" if data.startswith(PNG_MAGIC) else ".jpg"


def jpeg_header_lie(rng, data, im):
    jpeg = bytearray(_as_jpeg(rng, data, im))
    segs = jpeg_segments(bytes(jpeg))
    sof = next((s for s in segs if s[0] in (0xC0, 0xC1, 0xC2)), None)
    if sof is None:
        return "no SOF found; unchanged", bytes(jpeg), ".jpg"
    off = sof[1]
    what = rng.choice(["dims", "dims", "dims", "precision", "components", "sampling", "marker", "length"])
    if what == "dims":
        w, h = _sof_dims(rng)
        jpeg[off + 5:off + 9] = struct.pack(">HH", h, w)
        return f"SOF claims {w}x{h}", bytes(jpeg), ".jpg"
    if what == "precision":
        jpeg[off + 4] = rng.choice([0, 1, 12, 16, 255])
    elif what == "components":
        jpeg[off + 9] = rng.choice([0, 2, 4, 255])
    elif what == "sampling":
        jpeg[off + 11] = rng.choice([0x00, 0x44, 0xFF, 0x41])
    elif what == "marker":
        jpeg[off + 1] = rng.choice([0xC3, 0xC5, 0xC9, 0xCB, 0xCF, 0xF7])  # lossless, hierarchical, arithmetic, JPEG-LS
    else:
        seg = rng.choice(segs)
        jpeg[seg[1] + 2:seg[1] + 4] = struct.pack(">H", rng.choice([0, 1, 2, 65535, seg[2] + 7]))
        what = f"length of segment 0x{seg[0]:02X}"
    return f"SOF {what}", bytes(jpeg), ".jpg"


def png_header_lie(rng, data, im):
    png = data if data.startswith(PNG_MAGIC) else _encode(_small(rng, im), "PNG")
    chunks = png_chunks(png)
    ihdr = bytearray(chunks[0][1])
    what = rng.choice(["dims", "dims", "depth", "crc", "chunk length", "no IEND", "two IHDR"])
    if what == "dims":
        w, h = _sof_dims(rng)
        ihdr[0:8] = struct.pack(">II", w, h)
        what = f"IHDR claims {w}x{h}"
    elif what == "depth":
        ihdr[8:10] = bytes([rng.choice([0, 3, 7, 16, 255]), rng.choice([0, 1, 5, 7, 255])])
    body = [(k, bytes(ihdr) if k == b"IHDR" else v) for k, v in chunks]
    if what == "no IEND":
        body = body[:-1]
    if what == "two IHDR":
        body.insert(1, (b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)))
    out = PNG_MAGIC + b"".join(png_chunk(k, v, crc=what != "crc") for k, v in body)
    if what == "chunk length":
        out = out[:8] + struct.pack(">I", rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF])) + out[12:]
    return what, out, ".png"


def png_bomb(rng, data, im):
    """A tiny PNG that decodes to millions of pixels: rows of zeros compress ~1000:1."""
    depth = rng.choice([1, 8])
    w, h = rng.choice([(8000, 6000), (20000, 20000), (60000, 60000), (6000, 6600)])  # the last: 39.6 MP, allowed
    if w * h > 60_000_000 or (w * h > 40_000_000 and rng.random() < 0.5):
        # a lying header is enough: the check must come before decoding
        body = zlib.compress(b"\0" * 4096)
    else:
        row = b"\0" * (1 + (w * depth + 7) // 8)
        z = zlib.compressobj(9)
        body = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, 0)
    out = PNG_MAGIC + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")
    return f"{w}x{h} grey {depth}-bit in {len(out)} bytes", out, ".png"


def jpeg_bomb(rng, data, im):
    w, h = rng.choice([(8000, 6000), (6000, 6600)])
    out = _encode(Image.new("L", (w, h), rng.randrange(256)), "JPEG", quality=5)
    return f"{w}x{h} flat grey in {len(out)} bytes", out, ".jpg"


def scan_bomb(rng, data, im):
    """A progressive JPEG followed by many empty DC scans: each one is a pass over the image."""
    jpeg = _encode(_small(rng, im).convert("L"), "JPEG", progressive=True)
    segs = jpeg_segments(jpeg)
    sos = next(s for s in segs if s[0] == 0xDA)
    sof = next(s for s in segs if s[0] == 0xC2)
    component = jpeg[sof[1] + 10]
    scan = b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([component, 0, 0, 0, 0]) + b"\0" * 8
    n = rng.choice([20, 101, 5000, 50000])
    return f"{n} extra scans", jpeg[:sos[1]] + scan * n + b"\xff\xd9", ".jpg"


_ODD = {
    "CMYK JPEG": ("CMYK", "JPEG", {}, ".jpg"),
    "grey JPEG": ("L", "JPEG", {}, ".jpg"),
    "progressive JPEG": ("RGB", "JPEG", {"progressive": True}, ".jpg"),
    "4:4:4 JPEG quality 1": ("RGB", "JPEG", {"subsampling": 0, "quality": 1}, ".jpg"),
    "grey PNG": ("L", "PNG", {}, ".png"),
    "grey+alpha PNG": ("LA", "PNG", {}, ".png"),
    "RGBA PNG": ("RGBA", "PNG", {}, ".png"),
    "palette PNG": ("P", "PNG", {}, ".png"),
    "1-bit PNG": ("1", "PNG", {}, ".png"),
    "16-bit grey PNG": ("I;16", "PNG", {}, ".png"),
    "BMP": ("RGB", "BMP", {}, ".bmp"),
    "WebP": ("RGB", "WEBP", {}, ".webp"),
    "GIF": ("P", "GIF", {}, ".gif"),
    "TIFF": ("RGB", "TIFF", {}, ".tif"),
    "PPM": ("RGB", "PPM", {}, ".ppm"),
    "ICO": ("RGBA", "ICO", {}, ".ico"),
}


def odd_format(rng, data, im):
    name = rng.choice(sorted(_ODD))
    mode, fmt, params, suffix = _ODD[name]
    small = _small(rng, im)
    out = _encode(small.convert("L").convert(mode) if mode == "I;16" else small.convert(mode), fmt, **params)
    if rng.random() < 0.3:
        suffix = ".jpg"  # a file named for another format
    return name, out, suffix


def _exif(rng: random.Random) -> bytes:
    """An EXIF block with a broken Orientation tag or a broken IFD structure."""
    endian = rng.choice(["<", ">"])
    head = b"II*\0" if endian == "<" else b"MM\0*"
    kind = rng.choice(["value", "ascii", "rational", "count", "ifd offset", "loop", "entries", "cut"])
    value = struct.pack(endian + "HH", rng.choice([0, 9, 65535, 6]), 0)
    typ, count, first = 3, 1, 8
    if kind == "ascii":
        typ, count, value = 2, 3, b"ab\0\0"
    elif kind == "rational":
        typ, count, value = 5, 1, struct.pack(endian + "I", 0xFFFFFF00)
    elif kind == "count":
        count, value = 0x7FFFFFFF, struct.pack(endian + "I", 0xFFFFFF00)
    elif kind == "ifd offset":
        first = rng.choice([0, 0xFFFFFFF0, 7])
    entries = 1 if kind != "entries" else 65535
    ifd = struct.pack(endian + "H", entries) + struct.pack(endian + "HHI", 0x0112, typ, count) + value
    ifd += struct.pack(endian + "I", 8 if kind == "loop" else 0)  # next IFD: itself
    tiff = head + struct.pack(endian + "I", first) + ifd
    if kind == "cut":
        tiff = tiff[:rng.randrange(4, len(tiff))]
    return b"Exif\0\0" + tiff


def exif_garbage(rng, data, im):
    block = _exif(rng)
    jpeg = _encode(_small(rng, im).convert("RGB"), "JPEG")
    return f"EXIF {block[6:].hex()[:40]}", jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block + jpeg[2:], ".jpg"


def odd_bytes(rng, data, im):
    what = rng.choice(["empty", "text", "random", "jpeg magic", "png magic", "huge", "limit", "tiny", "splice"])
    if what == "empty":
        return what, b"", ".jpg"
    if what == "text":
        return what, b"this is a text file renamed to .jpg\n" * rng.randrange(1, 100), ".jpg"
    if what in ("random", "jpeg magic", "png magic"):
        noise = rng.randbytes(rng.choice([1, 100, 10_000, 1_000_000]))
        prefix = {"random": b"", "jpeg magic": b"\xff\xd8\xff\xe0", "png magic": PNG_MAGIC}[what]
        return what, prefix + noise, ".png" if what == "png magic" else ".jpg"
    if what in ("huge", "limit"):  # one byte over the limit, or a valid photo padded to exactly it
        size = HUGE_BYTES + 1 if what == "huge" else HUGE_BYTES
        return f"{size} bytes", data + b"\0" * (size - len(data)), ".jpg"
    if what == "tiny":
        side = rng.choice([1, 2, 31, 32])
        return f"{side}x{side}", _encode(im.convert("RGB").resize((side, side)), rng.choice(["PNG", "JPEG"])), ".png"
    cut = rng.randrange(len(data))  # the start of this photo and the end of a re-encoded one
    other = _encode(_small(rng, im).convert("RGB"), rng.choice(["JPEG", "PNG"]))
    return f"splice at {cut}", data[:cut] + other[rng.randrange(len(other)):], ".jpg"


Mutator = Callable[[random.Random, bytes, Image.Image], tuple[str, bytes, str]]
MUTATORS: list[tuple[Mutator, int]] = [  # (mutator, weight)
    (original, 2), (truncate, 6), (byte_flips, 8), (jpeg_header_lie, 8), (png_header_lie, 5),
    (png_bomb, 2), (jpeg_bomb, 1), (scan_bomb, 2), (odd_format, 8), (exif_garbage, 4), (odd_bytes, 6),
]


def make_case(seed: int, index: int, photo_list: list[Path], faces_dir: Path) -> Case:
    rng = random.Random(f"{seed}/{index}")
    photo = rng.choice(photo_list)
    mutator = rng.choices([m for m, _ in MUTATORS], weights=[w for _, w in MUTATORS])[0]
    data = photo.read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        detail, out, suffix = mutator(rng, data, im)
    return Case(index, mutator.__name__, detail, str(photo.relative_to(faces_dir)), out, suffix)
