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
from facelink.errors import FaceLinkError, InvalidParameterException
from facelink.models.image import ImageInput

from .context import Context
from .store import Store


def emit(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def split_ids(values: tuple[str, ...]) -> list[str]:
    return [v for item in values for v in item.replace(",", " ").split() if v]


class AppState:
    """Settings from --config; the store and engine are opened on first use."""

    def __init__(self, config: Path | None, extras: bool = False) -> None:
        self.config = config
        self.extras = extras
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings

    def context(self) -> Context:
        from facelink.models.engine import FaceEngine

        s = self.settings
        return Context(Store(s.store.database, group_access=s.store.group_access), lambda: FaceEngine.from_settings(s.models),
                       keep_thumbnails=s.store.keep_thumbnails, models_dir=s.models.models_dir,
                       similarity_threshold=s.matching.similarity_threshold,
                       max_stranger_rate=s.matching.max_stranger_rate,
                       extras=self.extras)

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


def image_options(name: str = "image"):
    """``--image`` (a JPEG/PNG path, or the aws CLI's JSON ``{"Bytes": "<base64>"}`` /
    ``{"S3Object": ...}``) and ``--image-bytes fileb://photo.jpg`` (or a path)."""
    flag = name.replace("_", "-")

    def deco(fn):
        fn = click.option(f"--{flag}-bytes", f"{name}_bytes", default=None,
                          help="fileb://photo.jpg (as the aws CLI) or a path: the image's bytes.")(fn)
        return click.option(f"--{flag}", name, default=None,
                            help='Image file (JPEG/PNG), or JSON {"Bytes": "<base64>"} / {"S3Object": {...}}.')(fn)

    return deco


image_opt = image_options()


def image_value(name: str, image: str | None, image_bytes: str | None) -> ImageInput:
    """One image from the ``--image`` / ``--image-bytes`` pair (exactly one must be given)."""
    from .images import image_from_json

    flag = name.replace("_", "-")
    if (image is None) == (image_bytes is None):
        raise InvalidParameterException(f"give exactly one of --{flag} or --{flag}-bytes")
    if image_bytes is not None:
        return Path(image_bytes.removeprefix("fileb://"))
    if image.lstrip().startswith("{"):
        try:
            parsed = json.loads(image)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply for the parser
            raise InvalidParameterException(f"--{flag} is neither a file nor valid JSON") from None
        return image_from_json(parsed, base64_bytes=True)
    return Path(image)


def paginate(call: Callable[[int | None, str | None], dict[str, Any]], keys: tuple[str, ...],
             max_results: int | None, next_token: str | None, starting_token: str | None,
             max_items: int | None, page_size: int | None) -> dict[str, Any]:
    """The aws CLI's paging: one page when the service's own --max-results/--next-token are given;
    otherwise every page (--page-size items per call) from --starting-token, at most --max-items,
    with NextToken in the output when items are left."""
    if max_results is not None or next_token is not None:
        return call(max_results, next_token)
    for flag, value in (("--max-items", max_items), ("--page-size", page_size)):
        if value is not None and value < 1:
            raise InvalidParameterException(f"{flag} must be at least 1")
    out: dict[str, Any] = {}
    token, count = starting_token, 0
    while True:
        want = page_size if max_items is None else min(page_size or max_items - count, max_items - count)
        page = call(want, token)
        for k, v in page.items():
            if k in keys:
                out.setdefault(k, []).extend(v)
            elif k != "NextToken":
                out.setdefault(k, v)
        count = len(out.get(keys[0], []))
        token = page.get("NextToken")
        if token is None or (max_items is not None and count >= max_items):
            break
    if token is not None:
        out["NextToken"] = token
    return out


def paging_options(default_page: int):
    def deco(fn):
        for opt in reversed([
            click.option("--max-results", type=int, default=None,
                         help=f"One page of at most this many (service paging; default {default_page})."),
            click.option("--next-token", default=None, help="Token from a previous page (service paging)."),
            click.option("--starting-token", default=None, help="aws CLI paging: NextToken of the previous output."),
            click.option("--max-items", type=int, default=None, help="aws CLI paging: at most this many in all."),
            click.option("--page-size", type=int, default=None, help="aws CLI paging: items per service call."),
        ]):
            fn = opt(fn)
        return fn

    return deco


token_opt = click.option("--client-request-token", default=None,
                         help="Idempotency token: a repeat with the same token returns the first response.")
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


def quality_option(default: str):
    return click.option("--quality-filter", default=default, show_default=True,
                        help="NONE, AUTO, LOW, MEDIUM or HIGH.")


quality_opt = quality_option("AUTO")


def attributes_option(flag: str):
    return click.option(flag, cls=ListOption, help="DEFAULT, ALL or the model's attribute names (list).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(path_type=Path), default=None,
              help="Settings file (TOML) overriding config/default.toml; FACELINK_* env vars override both.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.option("--facelink-extras", is_flag=True,
              help="Add FaceLink-only members (README) to Rekognition-shaped output.")
@click.pass_context
def cli(click_ctx: click.Context, config: Path | None, verbose: bool, facelink_extras: bool) -> None:
    """FaceLink: Rekognition-style face collections, offline, on your own hardware."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click_ctx.obj = AppState(config, facelink_extras)


def main(args: list[str] | None = None) -> None:
    """Run the CLI; bad flags and values are a JSON InvalidParameterException (exit 2), not usage text."""
    try:
        code = cli.main(args=args, prog_name="facelink", standalone_mode=False)
    except click.exceptions.ClickException as exc:
        err = InvalidParameterException(exc.format_message())
        click.echo(json.dumps(err.to_json()), err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
