"""Issue 16 defect 7 (parts): a second rollback does not move forward to the newer slot; a refused push
does not show a version transition; errors name the target instead of '?'."""
from __future__ import annotations

import json

from click.testing import CliRunner

from keycam.deploy_cli import _result_line
from keycam.deploy_cli import deploy as deploy_group
from tests.kits.deploy import deploy, local


def test_a_second_rollback_refuses_to_move_forward(device_root, bundles):
    assert deploy(local(device_root), bundles["2.0.0"])["ok"]
    first = local(device_root).agent("rollback")
    assert first["ok"] and first["version"] == "1.0.0"
    second = local(device_root).agent("rollback")
    assert not second["ok"] and "just rolled back" in second["error"] and "push a bundle" in second["error"]
    assert json.loads((device_root / "state.json").read_text())["version"] == "1.0.0"


def test_refused_push_shows_no_version_transition():
    line = _result_line({"device": "cam-01", "status": "refused", "ok": False, "version": "1.0.0",
                         "from_version": None, "reason": "downgrade refused"})
    assert "- ->" not in line and "bundle 1.0.0" in line
    assert "1.0.0 -> 2.0.0" in _result_line({"device": "cam-01", "status": "installed", "ok": True,
                                              "version": "2.0.0", "from_version": "1.0.0", "slot": "b"})


def test_status_error_names_the_target_not_a_question_mark(tmp_path):
    res = CliRunner().invoke(deploy_group, ["status", "--target", f"dir:{tmp_path / 'nothing-here'}"])
    assert res.exit_code == 1
    assert "nothing-here" in res.output.splitlines()[0] and not res.output.startswith("?"), res.output
