"""The conventions every keycam command shares: errors as one line (KeycamGroup), subcommands
imported on first use (LazyGroup), logging options, and the one `--json` option.

`--json` alone (or `--json -`) prints the command's machine-readable result on stdout; the command's
human text then goes to stderr or is left out. `--json PATH` (same as `--json-out PATH`) writes the
result to PATH (atomically) and keeps the human text on stdout. A bare `--json` consumes the next word
if it is not an option, so put it after the arguments or before another option:
`keycam deploy verify B.bundle --json`.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from base.atomic import atomic_write, write_error
from base.errors import KeycamError

JSON_STDOUT = "-"
_STDOUT_KEY = "keycam.json_stdout"
JSON_HELP = ("machine-readable result: --json alone prints JSON on stdout (human text goes to stderr or is "
             "left out); --json PATH (= --json-out PATH) writes it to PATH")



class KeycamGroup(click.Group):
    """A click group that turns a KeycamError (and a full disk) into one clear line and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeycamError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:           # a write outside base.atomic that hit a full disk: still one line
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise click.ClickException(str(write_error(exc.filename or "a file", exc))) from exc


class LazyGroup(KeycamGroup):
    """A click group that imports a subcommand's module on first use."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module_name, attr = self.lazy[name][0].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                raise click.ClickException(
                    f"'keycam {name}' is not available: module {exc.name!r} is missing "
                    "(install the matching extra, see README)") from exc
            return getattr(module, attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List subcommands from the static table, without importing them."""
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def level_from(name: str, verbose: int, quiet: int) -> int:
    """The logging level from --log-level, moved down one step per -v and up one per -q."""
    index = LOG_LEVELS.index(name) - verbose + quiet
    return getattr(logging, LOG_LEVELS[max(0, min(index, len(LOG_LEVELS) - 1))].upper())


def configure_logging(level: int) -> None:
    """Send every command's log records to stderr at `level` (replacing an earlier setup)."""
    logging.basicConfig(stream=sys.stderr, format=LOG_FORMAT, level=level, force=True)

def json_option(dest: str = "json_dest", required: bool = False, default: str | None = None,
                help: str = JSON_HELP) -> Callable[[Callable], Callable]:
    """Decorator adding `--json [PATH]` / `--json-out PATH` (passed to the command as `dest`: None, "-" or a
    path). With stdout chosen, everything the command echoes to stdout goes to stderr instead, so that
    stdout carries only the JSON written by `emit_json`."""
    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            if kwargs.get(dest) != JSON_STDOUT:
                return func(*args, **kwargs)
            ctx = click.get_current_context()
            ctx.meta[_STDOUT_KEY] = sys.stdout
            with contextlib.redirect_stdout(sys.stderr):
                return func(*args, **kwargs)
        return click.option("--json", "--json-out", dest, is_flag=False, flag_value=JSON_STDOUT, default=default,
                            required=required, metavar="[PATH]", show_default=default is not None,
                            callback=_check_destination, help=help)(wrapper)
    return decorate


def _check_destination(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a PATH that is an existing file other than a JSON result: a bare --json before an argument
    takes that argument as its PATH, and must not overwrite it (e.g. `deploy verify --json B.bundle`)."""
    if value in (None, JSON_STDOUT) or not Path(value).is_file():
        return value
    try:
        json.loads(Path(value).read_bytes())
    except (OSError, ValueError):
        raise click.BadParameter(f"{value} exists and is not a JSON result; not overwriting it (a bare --json "
                                 "takes the next word as its PATH: put --json after the arguments)") from None
    return value


def emit_result(dest: str | None, data: Any, text: str) -> None:
    """A result that `text` only renders for people: the text, unless --json prints `data` on stdout."""
    if dest != JSON_STDOUT:
        click.echo(text)
    emit_json(dest, data)


def strict_json(value: Any) -> Any:
    """`value` with every NaN or infinity (an undefined metric) replaced by null, so it is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def emit_json(dest: str | None, data: Any) -> None:
    """Deliver `data` as the command's JSON result to `dest` (see `json_option`); None does nothing."""
    if dest is None:
        return
    text = json.dumps(strict_json(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
    if dest == JSON_STDOUT:
        ctx = click.get_current_context(silent=True)
        out = ctx.meta.get(_STDOUT_KEY, sys.stdout) if ctx is not None else sys.stdout
        out.write(text)
        out.flush()
        return
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, text.encode(), mode=0o644)
    click.echo(f"wrote {dest}", err=True)
