"""The `facelink` click group and what its commands share: settings, JSON output, typed
errors as exit codes, and the option definitions used by several commands."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from facelink.config import Settings, load_settings
from facelink.errors import FaceLinkError

from .context import Context
from .store import Store


def emit(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def split_ids(values: tuple[str, ...]) -> list[str]:
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
                       keep_thumbnails=s.store.keep_thumbnails, models_dir=s.models.models_dir,
                       similarity_threshold=s.matching.similarity_threshold,
                       max_stranger_rate=s.matching.max_stranger_rate)

    def engine(self):
        from facelink.models.engine import FaceEngine

        return FaceEngine.from_settings(self.settings.models)


def run(fn: Callable[[], Any]) -> None:
    try:
        emit(fn())
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

            run(call)

        command.params = list(getattr(fn, "__click_params__", []))[::-1]
        return command

    return wrap


collection_opt = click.option("--collection-id", required=True, help="Collection id.")
image_opt = click.option("--image", required=True, type=click.Path(path_type=Path),
                         help="Image file (JPEG/PNG).")
class ListOption(click.Option):
    """An option taking every value up to the next option, as the aws CLI does:
    ``--face-ids F1 F2 F3`` (repeating the flag and commas work too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, multiple=True, **kwargs)

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            opt = parser._long_opt.get(name) or parser._short_opt.get(name)
            if opt is None:
                continue

            def process(value: str, state: Any, _orig: Callable = opt.process) -> None:
                _orig(value, state)
                while state.rargs and not state.rargs[0].startswith("-"):
                    _orig(state.rargs.pop(0), state)

            opt.process = process


face_ids_opt = click.option("--face-ids", cls=ListOption, required=True,
                            help="Face ids: --face-ids F1 F2 (or repeat the flag, or separate with commas).")
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
