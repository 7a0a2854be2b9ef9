"""Issue 16 CLI conventions for the vault options: --passphrase-file - (stdin), a warning for a
group/world-readable passphrase file, and --vault help naming $KEYCAM_VAULT."""
from __future__ import annotations

from click.testing import CliRunner

from keycam.keys_cli import keys

PASS = "stdin-passphrase-test"


def test_passphrase_from_stdin(tmp_path):
    vault = str(tmp_path / "v.kcv")
    res = CliRunner().invoke(keys, ["init", "--vault", vault, "--passphrase-file", "-"], input=PASS + "\n", env={})
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(keys, ["list", "--vault", vault, "--passphrase-file", "-"], input=PASS + "\n", env={})
    assert res.exit_code == 0 and "no devices provisioned" in res.output, res.output
    res = CliRunner().invoke(keys, ["list", "--vault", vault, "--passphrase-file", "-"], input="", env={})
    assert res.exit_code == 1 and "no passphrase on stdin" in res.output


def test_group_readable_passphrase_file_warns(tmp_path):
    vault, passfile = str(tmp_path / "v.kcv"), tmp_path / "pass"
    passfile.write_text(PASS + "\n")
    passfile.chmod(0o600)
    res = CliRunner().invoke(keys, ["init", "--vault", vault, "--passphrase-file", str(passfile)], env={})
    assert res.exit_code == 0 and "warning" not in res.output, res.output
    passfile.chmod(0o644)
    res = CliRunner().invoke(keys, ["list", "--vault", vault, "--passphrase-file", str(passfile)], env={})
    assert res.exit_code == 0
    assert "warning: passphrase file" in res.stderr and "chmod 600" in res.stderr
    assert "warning" not in res.stdout                                   # stdout stays machine-readable


def test_vault_help_names_the_environment_variable():
    res = CliRunner().invoke(keys, ["list", "--help"])
    text = " ".join(res.output.split())                                  # help wraps at the terminal width
    assert "$KEYCAM_VAULT" in text and "- for one line on stdin" in text
