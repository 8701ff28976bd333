"""Read models/manifest.toml: model sources, digests and the Similarity calibration."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib  # novermin - the fallback below is for 3.10
except ImportError:  # Python 3.10 (JetPack 6): the same parser, as the `tomli` package
    import tomli as tomllib

from facelink.errors import ModelError

MANIFEST_PATH = Path(__file__).with_name("manifest.toml")
LOCK_NAME = "models.lock.json"  # <models_dir>: the digests of the built models (`facelink models`)


@dataclass(frozen=True)
class SourceFile:
    name: str  # path under the models directory
    member: str  # path inside the wheel
    sha256: str


@dataclass(frozen=True)
class Source:
    key: str
    package: str
    wheel: str
    wheel_sha256: str
    license: str
    files: tuple[SourceFile, ...]
    optional: bool = False


@dataclass(frozen=True)
class ImpostorTail:
    """Measured impostor pairs at or above each cosine of a grid (the fit's data): the door's
    per-attempt stranger rate is computed from it (models/risk.py)."""

    pairs: int
    cosine: tuple[float, ...]
    at_or_above: tuple[int, ...]


@dataclass(frozen=True)
class Calibration:
    """Similarity = 100 / (1 + exp(-(a * cosine + b))). ``source``: the operator's
    calibration.toml it was read from, None for the shipped manifest (for messages only)."""

    a: float
    b: float
    fitted_on: str
    impostor_tail: ImpostorTail | None = None
    source: Path | None = field(default=None, compare=False)


def toml_loads(text: str) -> dict:
    return tomllib.loads(text)


MAX_TAIL_PAIRS = 10**12  # far more than any calibration set (299 people: 5.2 million); the arithmetic stays finite


def _impostor_tail(t: dict) -> ImpostorTail:
    """A tail the door's risk arithmetic can trust, or ValueError: at least one point, cosines
    finite and strictly rising within [-1, 1], counts whole, within 0..pairs and never rising
    (pairs at or above a cosine can only fall as it rises)."""
    pairs = t["pairs"]
    cosine, counts = t["cosine"], t["at_or_above"]
    if not (isinstance(pairs, int) and not isinstance(pairs, bool) and 0 < pairs <= MAX_TAIL_PAIRS):
        raise ValueError(f"impostor_tail: pairs must be a whole number from 1 to {MAX_TAIL_PAIRS:.0e}, not {pairs!r}")
    if not (isinstance(cosine, list) and isinstance(counts, list) and cosine and len(cosine) == len(counts)):
        raise ValueError("impostor_tail: cosine and at_or_above must be lists of the same, non-zero length")
    if not all(isinstance(c, (int, float)) and not isinstance(c, bool) and -1.0 <= c <= 1.0 for c in cosine):
        raise ValueError("impostor_tail: every cosine must be a number within [-1, 1]")
    if any(b <= a for a, b in zip(cosine, cosine[1:])):
        raise ValueError("impostor_tail: the cosines must rise strictly")
    if not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= pairs for k in counts):
        raise ValueError(f"impostor_tail: every at_or_above count must be a whole number within 0..{pairs}")
    if any(b > a for a, b in zip(counts, counts[1:])):
        raise ValueError("impostor_tail: at_or_above must not rise as the cosine rises")
    return ImpostorTail(pairs, tuple(float(x) for x in cosine), tuple(counts))


def _calibration(c: dict, source: Path | None = None) -> Calibration:
    """One [calibration."<version>"] table; ValueError (or TypeError, KeyError, OverflowError: a
    number too large for a float) for one the door cannot use."""
    tail = c.get("impostor_tail")
    return Calibration(float(c["a"]), float(c["b"]), str(c.get("fitted_on", "")),
                       None if tail is None else _impostor_tail(tail), source)


@dataclass(frozen=True)
class Manifest:
    sources: tuple[Source, ...]
    built: dict[str, str]
    calibration: dict[str, Calibration]

    def calibration_for(self, model_version: str) -> Calibration:
        try:
            return self.calibration[model_version]
        except KeyError as exc:
            raise ModelError(f"no Similarity calibration for FaceModelVersion {model_version!r}") from exc


def load_manifest(path: Path = MANIFEST_PATH) -> Manifest:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"cannot read model manifest {path}: {exc}") from exc
    sources = tuple(
        Source(key, s["package"], s["wheel"], s["wheel_sha256"], s.get("license", ""),
               tuple(SourceFile(n, f["member"], f["sha256"]) for n, f in s["files"].items()),
               bool(s.get("optional", False)))
        for key, s in raw["sources"].items())
    try:
        calibration = {v: _calibration(c) for v, c in raw.get("calibration", {}).items()}
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ModelError(f"model manifest {path}: bad calibration entry: {exc}") from exc
    return Manifest(sources, dict(raw.get("built", {})), calibration)


OVERRIDE_NAME = "calibration.toml"


def read_overrides(path: Path) -> dict[str, Calibration]:
    """An operator's calibration.toml; a damaged one is a ModelError, never silently ignored."""
    try:
        raw = tomllib.loads(Path(path).read_text())
        return {v: _calibration(c, Path(path)) for v, c in raw.get("calibration", {}).items()}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError,
            AttributeError, OverflowError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def calibration_for(model_version: str, models_dir: Path | None = None) -> Calibration:
    """The operator's re-fit (<models_dir>/calibration.toml, written by `facelink calibrate
    --write`) when present, else the manifest's."""
    if models_dir is not None and (Path(models_dir) / OVERRIDE_NAME).is_file():
        c = read_overrides(Path(models_dir) / OVERRIDE_NAME).get(model_version)
        if c is not None:
            return c
    return load_manifest().calibration_for(model_version)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def expected_digest(models_dir: Path, name: str, manifest: Manifest | None = None) -> tuple[str, str]:
    """The SHA-256 ``name`` must have, and where that comes from: the manifest for a file taken
    from a wheel, models.lock.json for one `facelink models` built."""
    manifest = manifest or load_manifest()
    for source in manifest.sources:
        for f in source.files:
            if f.name == name:
                return f.sha256, "the manifest"
    if name not in manifest.built:
        raise ModelError(f"{name} is not a model of the manifest")
    lock = Path(models_dir) / LOCK_NAME
    try:
        digests = json.loads(lock.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the built models' digests {lock}: {exc} (run `facelink models`)") from None
    digest = digests.get(name) if isinstance(digests, dict) else None
    if not isinstance(digest, str):
        raise ModelError(f"{lock} has no digest for {name} (run `facelink models`)")
    return digest, str(lock)


def verify_model(models_dir: Path, name: str) -> Path:
    """``<models_dir>/name`` if its SHA-256 is the one it was fetched or built with, else
    ModelError: a swapped or damaged model would put wrong identities on faces."""
    path = Path(models_dir) / name
    if not path.is_file():
        raise ModelError(f"model {path} is missing: run `facelink models`")
    expected, where = expected_digest(models_dir, name)
    digest = sha256_file(path)
    if digest != expected:
        raise ModelError(f"model {path}: SHA-256 {digest} does not match {where} ({expected}); "
                         "refusing it (run `facelink models` to fetch and build it again)")
    return path
