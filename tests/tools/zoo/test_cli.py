"""`keycam bench keyed --model`: zoo names dispatch, anything else is a one-line error."""
from __future__ import annotations

from click.testing import CliRunner

from keycam.cli import cli


def test_unknown_model_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "keyed", "--model", str(tmp_path / "nope.onnx"), "--limit", "5"])
    assert result.exit_code != 0
    assert "neither an ONNX file nor a zoo model (allconv32, face112, resnet20, mobilenetv2)" in result.output


def test_unknown_profile_for_a_zoo_model_is_one_clear_line():
    result = CliRunner().invoke(cli, ["bench", "keyed", "--model", "allconv32", "--profile", "nonsense", "--limit", "5"])
    assert result.exit_code != 0 and "unknown key profile 'nonsense'" in result.output
