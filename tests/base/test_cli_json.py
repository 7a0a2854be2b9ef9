"""Issue 16 CLI conventions over the whole `keycam` command tree: one `--json` rule (bare --json prints JSON on
stdout, --json PATH / --json-out PATH write the file) and an "Example:" line in every command's help."""
from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from base.cli import JSON_STDOUT, json_option
from keycam.cli import cli

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "tools" / "models" / "lenet_mnist.onnx"
PASS = "cli-json-test-pass"


def _leaves(group: click.Group, path: tuple[str, ...], ctx: click.Context):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        sub = click.Context(cmd, info_name=name, parent=ctx)
        if isinstance(cmd, click.Group):
            yield from _leaves(cmd, path + (name,), sub)
        else:
            yield path + (name,), (cmd, sub)


LEAVES = dict(_leaves(cli, ("keycam",), click.Context(cli, info_name="keycam")))
JSON_COMMANDS = sorted(" ".join(p) for p, (c, _) in LEAVES.items() if any("--json" in o.opts for o in c.params))


def _help(path: tuple[str, ...]) -> str:
    """The command's --help text (rendered directly: a group option such as `hw faceplate --port` is required)."""
    cmd, ctx = LEAVES[path]
    return cmd.get_help(ctx)


@pytest.mark.parametrize("path", sorted(LEAVES), ids=" ".join)
def test_every_command_help_has_an_example_of_itself(path):
    text = _help(path)
    assert "Example:" in text, f"{' '.join(path)} --help has no Example: line"
    examples = text.split("Example:", 1)[1].split("Options:", 1)[0].split("\n")
    assert any(_names(line.split(), path) for line in examples), examples


def _names(words: list[str], path: tuple[str, ...]) -> bool:
    """`words` run the command `path` (its names in order, group options such as --port between them)."""
    it = iter(words)
    return bool(words) and words[0] == "keycam" and all(name in it for name in path[1:])


def test_the_tree_walk_sees_every_command_group():
    assert {p[1] for p in LEAVES} >= {"run", "config", "demo", "train", "bench", "keys", "deploy", "hw", "san",
                                      "attack"}
    assert len(JSON_COMMANDS) >= 30   # keys, deploy, hw faceplate/camera, attack, bench, san eval


@pytest.mark.parametrize("name", JSON_COMMANDS)
def test_every_json_option_is_the_shared_one(name):
    """Same names, optional value meaning stdout, and the help naming both forms, for every command."""
    (option,) = [p for p in LEAVES[tuple(name.split())][0].params if "--json" in p.opts]
    assert option.opts == ["--json", "--json-out"] and not option.is_flag and option.flag_value == JSON_STDOUT
    text = " ".join(_help(tuple(name.split())).split())
    assert "--json alone prints JSON on stdout" in text and "--json PATH (= --json-out PATH) writes it to PATH" in text


@click.command()
@click.argument("word", required=False)
@click.option("--n", type=int, default=1)
@json_option()
def _probe(word, n, json_dest):
    from base.cli import emit_json
    click.echo(f"human {word} {n}")
    emit_json(json_dest, {"word": word, "n": n})


@pytest.mark.parametrize("args, stdout_json, path", [
    (["--json"], True, None),
    (["--json", "--n", "2"], True, None),          # an option after a bare --json is not taken as its PATH
    (["w", "--json"], True, None),
    (["--json", "-", "w"], True, None),
    (["--json", "out.json"], False, "out.json"),
    (["--json-out", "out.json", "w"], False, "out.json"),
])
def test_click_parses_the_optional_json_value(tmp_path, monkeypatch, args, stdout_json, path):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(_probe, args)
    assert res.exit_code == 0, res.output
    if stdout_json:
        assert "human" in res.stderr and json.loads(res.stdout)["word"] in (None, "w")
        assert not list(tmp_path.iterdir())
    else:
        assert res.stdout.startswith("human") and json.loads((tmp_path / path).read_text())["n"] == 1
        assert [p.name for p in tmp_path.iterdir()] == [path]


def _keycam(*args: str, vault: Path) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), env={"KEYCAM_VAULT": str(vault), "KEYCAM_VAULT_PASSPHRASE": PASS})


@pytest.mark.slow
def test_keys_and_deploy_results_as_json(tmp_path):
    vault = tmp_path / "vault.kcv"
    assert _keycam("keys", "init", vault=vault).exit_code == 0
    res = _keycam("keys", "provision", "cam-j", "--model", str(MODEL), "--profile", "stem", "--no-faceplate",
                  "--json", vault=vault)
    assert res.exit_code == 0, res.output
    made = json.loads(res.stdout)
    assert made["device_id"] == "cam-j" and len(made["key_fingerprint"]) == 64 and made["state"] == "active"
    listed = json.loads(_keycam("keys", "list", "--json", vault=vault).stdout)
    assert [d["active"] for d in listed] == [made["key_fingerprint"]]
    res = _keycam("deploy", "build", "cam-j", "--version", "1.0.0", "--out", str(tmp_path), "--json", vault=vault)
    assert res.exit_code == 0, res.output
    built = json.loads(res.stdout)
    assert built["key_fingerprint"] == made["key_fingerprint"] and Path(built["bundle"]).is_file()
    verified = json.loads(_keycam("deploy", "verify", built["bundle"], "--json", vault=vault).stdout)
    assert verified["device_id"] == "cam-j" and verified["version"] == "1.0.0"
    res = _keycam("keys", "rotate", "cam-j", "--json-out", str(tmp_path / "rotate.json"), vault=vault)
    assert res.exit_code == 0 and "is pending" in res.stdout, res.output
    rotated = json.loads((tmp_path / "rotate.json").read_text())
    assert rotated["active"] == made["key_fingerprint"] and rotated["pending"] != made["key_fingerprint"]
    confirmed = json.loads(_keycam("keys", "confirm", "cam-j", "--json", vault=vault).stdout)
    assert confirmed == {"device_id": "cam-j", "active": rotated["pending"], "changed": True}
    res = _keycam("keys", "revoke", "cam-j", "--reason", "test", "--json", str(tmp_path / "revoke.json"), vault=vault)
    assert res.exit_code == 0 and "revoked" in res.stdout, res.output
    assert json.loads((tmp_path / "revoke.json").read_text())["state"] == "revoked"
    assert json.loads(_keycam("keys", "list", "--json", vault=vault).stdout)[0]["state"] == "revoked"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bench_pipeline_json_on_stdout_and_in_a_file(sim_config, tmp_path):
    cfg = sim_config
    res = CliRunner().invoke(cli, ["bench", "pipeline", "--config", str(cfg), "--frames", "100", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["frames"] == 100 and res.stderr.strip()     # the table went to stderr
    out = tmp_path / "sub" / "bench.json"
    res = CliRunner().invoke(cli, ["bench", "pipeline", "--config", str(cfg), "--frames", "100",
                                   "--json-out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["frames"] == 100 and res.stdout.strip()  # the table stays on stdout


def test_json_path_never_overwrites_a_file_that_is_not_a_json_result(tmp_path):
    """`keycam deploy verify --json B.bundle`: the bare --json takes the bundle as its PATH; refused, unchanged."""
    bundle = tmp_path / "cam-01-1.0.0.bundle"
    bundle.write_bytes(b"\x00not json, a bundle")
    res = CliRunner().invoke(cli, ["deploy", "verify", "--json", str(bundle)])
    assert res.exit_code == 2 and "not a JSON result" in res.output
    assert bundle.read_bytes() == b"\x00not json, a bundle"
