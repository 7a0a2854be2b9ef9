"""Issue 16 defect 5: every section of a device config is validated strictly (unknown keys, types,
ranges) when it enters - load_config (run), render_config (export/build), provision - by one path."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from base.errors import ConfigError
from edge.config import load_config
from keycam.cli import cli
from tests.kits.edge import ROOT, SIM_YAML, write_config


@pytest.mark.parametrize("sections, message", [
    ({"camera": {"fps": "fast"}}, r"camera.fps: expected a number, got 'fast'"),   # was a TypeError
    ({"camera": {"fps": 0}}, r"camera.fps: must be > 0"),
    ({"camera": {"loop": "yes"}}, r"camera.loop: expected true or false"),
    ({"camera": {"limit": 1.5}}, r"camera.limit: expected an integer"),
    ({"camera": {"sauce": "samples"}}, r"camera: unknown key sauce"),
    ({"camera": {"faults": {"stall_after": "3"}}}, r"camera.faults.stall_after: expected an integer"),
    ({"camera": {"faults": {"explode": 1}}}, r"camera.faults: unknown key explode"),
    ({"camera": {"type": "picamera2", "source": None, "fps": None, "loop": None}},
     r"camera: unknown keys fps, loop, source"),
    ({"camera": {"type": "webcam"}}, r"camera.type: unknown camera type 'webcam'"),
    ({"key_stage": {"sensor": {"bits": "8"}}}, r"key_stage.sensor.bits: expected an integer, got '8'"),
    ({"key_stage": {"sensor": {"bits": 20}}}, r"key_stage.sensor.bits: must be an integer in 1..16, got 20"),
    ({"key_stage": {"sensor": {"read_noise": "low"}}}, r"key_stage.sensor.read_noise: expected a number"),
    ({"key_stage": {"sensor": {"gain": 2}}}, r"key_stage.sensor: unknown key gain"),
    ({"key_stage": {"sensor": {"optics": {"supersample": "4"}}}}, r"key_stage.sensor.optics.supersample: expected an integer"),
    ({"key_stage": {"sensor": {"optics": {"cores": 3}}}}, r"key_stage.sensor.optics: unknown key cores"),
    ({"key_stage": {"sensor": {"optics": {"crosstalk": 0.5}}}}, r"key_stage.sensor.optics.crosstalk: must be in \[0, 1/6\)"),
    ({"key_stage": {"sensor": {"dark_offset": 1.0}}}, r"key_stage.sensor.dark_offset: must be in \[0, 1\)"),
    ({"key_stage": {"sensor": [8]}}, r"key_stage.sensor: expected a mapping"),
    ({"camera": {"limit": 0}}, r"camera.limit: must be >= 1, got 0"),
    ({"camera": {"source": ""}}, r"camera.source: expected a path"),
    ({"camera": {"faults": {"bad_frame_at": -1}}}, r"camera.faults.bad_frame_at: must be >= 0, got -1"),
])
def test_hardware_sections_are_strictly_validated_on_load(tmp_path, device_dir, sections, message):
    path = write_config(tmp_path, device_dir, **sections)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_keycam_run_with_a_bad_camera_value_is_one_line_not_a_traceback(tmp_path, device_dir):
    cfg = write_config(tmp_path, device_dir, camera={"fps": "fast"})
    proc = subprocess.run([sys.executable, "-c", "from keycam.cli import main; main()", "run", "--config", str(cfg),
                           "--frames", "5"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: ") and "camera.fps" in proc.stderr


def test_config_check_command(tmp_path, device_dir):
    good = write_config(tmp_path, device_dir)
    res = CliRunner().invoke(cli, ["config", "check", str(good)])
    assert res.exit_code == 0 and "OK" in res.output, res.output
    bad = write_config(tmp_path, device_dir, camera={"fps": "fast"})
    res = CliRunner().invoke(cli, ["config", "check", str(bad)])
    assert res.exit_code == 1 and "camera.fps" in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)


def test_run_check_validates_without_running(tmp_path, device_dir):
    res = CliRunner().invoke(cli, ["run", "--config", str(write_config(tmp_path, device_dir)), "--check"])
    assert res.exit_code == 0 and "OK" in res.output, res.output


def _template(tmp_path, **changes) -> dict:
    doc = yaml.safe_load(SIM_YAML.read_text())
    for key, value in changes.items():
        doc[key] = value
    return doc


def test_rendered_device_config_refuses_what_the_service_would_refuse(tmp_path):
    from deploy.payload import MODEL, SENSOR_KEY, render_config
    files = {MODEL: b"model", SENSOR_KEY: b"key"}
    render_config("cam-1", False, files, _template(tmp_path))                # the shipped example is fine
    with pytest.raises(ConfigError, match="camera.fps"):
        render_config("cam-1", False, files, _template(tmp_path, camera={"type": "replay", "source": "samples",
                                                                 "fps": "fast"}))


@pytest.fixture
def empty_vault(tmp_path):
    path = tmp_path / "vault.kcv"
    env = {"KEYCAM_VAULT": str(path), "KEYCAM_VAULT_PASSPHRASE": "config-check-pass"}
    assert CliRunner().invoke(cli, ["keys", "init"], env=env).exit_code == 0
    return env


@pytest.mark.parametrize("template, faceplate, message", [
    ({"camera": {"type": "replay", "source": "samples"}, "sinks": [{"type": "stdout"}], "sinkz": []},
     "--no-faceplate", r"unknown key sinkz"),
    ({"camera": {"type": "replay", "source": "samples", "fps": "fast"}, "sinks": [{"type": "stdout"}]},
     "--no-faceplate", r"camera.fps"),
    ({"camera": {"type": "replay", "source": "samples"}, "sinks": [{"type": "stdout"}]},
     "--faceplate", r"key_stage"),
])
def test_provision_validates_its_config_template_before_keying(tmp_path, empty_vault, template, faceplate, message):
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(template))
    res = CliRunner().invoke(cli, ["keys", "provision", "cam-1", "--model", str(ROOT / "tools" / "models" /
                                   "lenet_fashion.onnx"), faceplate, "--config", str(path)], env=empty_vault)
    assert res.exit_code == 1, res.output
    assert str(path) in res.output and "pass --config" not in res.output
    assert pytest.importorskip("re").search(message, res.output), res.output
    assert "keying" not in res.output                                        # refused before any keying
