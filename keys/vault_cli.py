"""Click options shared by the commands that use the vault (`keycam keys`, `keycam deploy`).

The vault path comes from --vault, else $KEYCAM_VAULT, else ~/.keycam/vault.kcv. The passphrase
comes from --passphrase-file, else $KEYCAM_VAULT_PASSPHRASE, else an interactive prompt.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from keys import audit
from keys.fields import VaultError
from keys.generations import CanaryMaker, migrate_clear_models
from keys.vault import Vault

DEFAULT_VAULT = Path("~/.keycam/vault.kcv")
PASSPHRASE_ENV = "KEYCAM_VAULT_PASSPHRASE"


def passphrase(ctx_params: dict, confirm: bool = False) -> str:
    """The vault passphrase: --passphrase-file (- for one line on stdin), $KEYCAM_VAULT_PASSPHRASE, a prompt."""
    path = ctx_params.get("passphrase_file")
    if path == "-":                      # one line from stdin, e.g. from a secret manager's pipe
        if "_stdin_passphrase" not in ctx_params:       # read once: a command may open the vault twice
            ctx_params["_stdin_passphrase"] = sys.stdin.readline().rstrip("\r\n")
        text = ctx_params["_stdin_passphrase"]
        if not text:
            raise VaultError("--passphrase-file -: no passphrase on stdin")
        return text
    if path:
        try:
            text = Path(path).read_text().rstrip("\r\n")
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise VaultError(f"cannot read passphrase file {path}: {exc}") from exc
        if not text:
            raise VaultError(f"passphrase file {path} is empty")
        if mode & 0o077:
            click.echo(f"warning: passphrase file {path} is readable by group or others (mode "
                       f"{mode & 0o777:03o}); run: chmod 600 {path}", err=True)
        return text
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    if not sys.stdin.isatty():
        raise VaultError(f"no vault passphrase: use --passphrase-file FILE (or - for stdin), "
                         f"${PASSPHRASE_ENV}, or a terminal")
    return click.prompt("Vault passphrase", hide_input=True, confirmation_prompt=confirm)


def vault_options(func):
    """Add --vault and --passphrase-file; the command receives `vault_path` and `passphrase_file`."""
    @click.option("--vault", "vault_path", type=click.Path(dir_okay=False, path_type=Path),
                  envvar="KEYCAM_VAULT", default=DEFAULT_VAULT, show_default=True,
                  help="vault file (else $KEYCAM_VAULT)")
    @click.option("--passphrase-file", type=click.Path(dir_okay=False, exists=True, allow_dash=True),
                  help=f"file holding the passphrase, - for one line on stdin (else ${PASSPHRASE_ENV} "
                       "or a prompt)")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        kwargs["vault_path"] = kwargs["vault_path"].expanduser()
        return func(*args, **kwargs)
    return wrapper


def open_vault(params: dict) -> Vault:
    """The vault named by the command's vault options, opened for reading."""
    return Vault.open(params["vault_path"], passphrase(params))


@contextlib.contextmanager
def edit_vault(params: dict, make_canary: CanaryMaker) -> Iterator[Vault]:
    """Open the vault for a change; clear keyed models of an older vault are sealed on this write
    (`make_canary` makes the canary frames such a generation lacks)."""
    with Vault.edit(params["vault_path"], passphrase(params)) as vault:
        for device in migrate_clear_models(vault, make_canary):
            click.echo(f"sealed {device}'s keyed models in the vault to its device key (older vault format)",
                       err=True)
            audit.record(vault, "seal-models", device, reason="the vault held clear keyed models")
        yield vault
