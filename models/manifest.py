"""Read models/manifest.toml: model sources, digests and the Similarity calibration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomllib

from facelink.errors import ModelError

MANIFEST_PATH = Path(__file__).with_name("manifest.toml")


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
class Calibration:
    """Similarity = 100 / (1 + exp(-(a * cosine + b)))."""

    a: float
    b: float
    fitted_on: str


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
    calibration = {v: Calibration(float(c["a"]), float(c["b"]), c.get("fitted_on", ""))
                   for v, c in raw.get("calibration", {}).items()}
    return Manifest(sources, dict(raw.get("built", {})), calibration)


OVERRIDE_NAME = "calibration.toml"


def calibration_for(model_version: str, models_dir: Path | None = None) -> Calibration:
    """The operator's re-fit (<models_dir>/calibration.toml, written by `facelink calibrate
    --write`) when present, else the manifest's."""
    if models_dir is not None and (Path(models_dir) / OVERRIDE_NAME).is_file():
        try:
            raw = tomllib.loads((Path(models_dir) / OVERRIDE_NAME).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ModelError(f"cannot read {Path(models_dir) / OVERRIDE_NAME}: {exc}") from exc
        c = raw.get("calibration", {}).get(model_version)
        if c is not None:
            return Calibration(float(c["a"]), float(c["b"]), c.get("fitted_on", ""))
    return load_manifest().calibration_for(model_version)
