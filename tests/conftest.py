"""Hardware-in-the-loop switches shared by the whole suite: --hil / --hil-env, part markers, fixtures.

Without --hil (and without KEYCAM_HIL_ENV) the `faceplate` and `camera` fixtures resolve to the
actuator emulator (a separate process on a pty) and a ReplayCamera, so tests/hil runs in CI.
With --hil, the environment YAML (--hil-env or KEYCAM_HIL_ENV) describes the real parts:

    faceplate: {port: /dev/ttyUSB0, baudrate: 115200, faceplate_id: FP-0001, position: 0}
    camera: {type: picamera2, index: 0, size: [28, 28]}

Tests marked `faceplate` / `camera` skip when hardware is requested but the YAML lacks that part;
tests marked `emulator_only` (fault injection) skip on real hardware.
"""
from __future__ import annotations

import os
import signal

import pytest
import yaml

pytest_plugins = ("tests.kits.fixtures",)

_ENV_KEY = pytest.StashKey[dict | None]()
_PARTS = ("faceplate", "camera")
# what the emulator's default turret holds (hardware.faceplate_firmware.FirmwareConfig)
_EMULATED_FACEPLATE = {"faceplate_id": "FP-0001", "position": 0}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop")
    group.addoption("--hil", action="store_true", default=False,
                    help="run hardware tests against the real device described by --hil-env")
    group.addoption("--hil-env", default=None,
                    help="environment YAML of the real device (default: $KEYCAM_HIL_ENV)")


def _load_env(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            env = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise pytest.UsageError(f"cannot read HIL environment {path}: {exc}") from exc
    if not isinstance(env, dict) or set(env) - set(_PARTS):
        raise pytest.UsageError(f"HIL environment {path} must be a mapping with keys among {_PARTS}")
    if env.get("faceplate") is not None and "port" not in env["faceplate"]:
        raise pytest.UsageError(f"HIL environment {path}: faceplate needs a 'port'")
    return env


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "emulator_only: needs the emulator's fault injection (skipped with --hil)")
    path = config.getoption("--hil-env") or os.environ.get("KEYCAM_HIL_ENV")
    if config.getoption("--hil") and not path:
        raise pytest.UsageError("--hil needs an environment YAML: --hil-env PATH or KEYCAM_HIL_ENV")
    config.stash[_ENV_KEY] = _load_env(path) if path else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    env = config.stash[_ENV_KEY]
    if env is None:
        return
    for item in items:
        if "emulator_only" in item.keywords:
            item.add_marker(pytest.mark.skip(
                reason="needs the simulators (fault injection, emulator CLI): skipped on real hardware"))
        for part in _PARTS:
            if part in item.keywords and not env.get(part):
                item.add_marker(pytest.mark.skip(reason=f"HIL environment has no {part}"))


def pytest_report_header(config: pytest.Config) -> str:
    env = config.stash[_ENV_KEY]
    return "hil: real hardware " + str(sorted(k for k in env if env[k])) if env else "hil: emulator + replay camera"


@pytest.fixture(scope="session")
def hil_env(pytestconfig: pytest.Config) -> dict | None:
    """The real-device environment, or None when running against simulators."""
    return pytestconfig.stash[_ENV_KEY]


@pytest.fixture
def emulated_faceplate():
    """Factory: start an emulator process with extra CLI args (faults), return its pty path."""
    from hardware.faceplate_emulator import EmulatorProcess

    started = []

    def start(*args: str) -> EmulatorProcess:
        emulator = EmulatorProcess(list(args)).__enter__()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def faceplate_port(hil_env, emulated_faceplate) -> str:
    """Serial port of the real actuator, or of a fresh emulator."""
    if hil_env and hil_env.get("faceplate"):
        return str(hil_env["faceplate"]["port"])
    return emulated_faceplate().port


@pytest.fixture
def faceplate_expected(hil_env) -> dict:
    """The faceplate id and turret position the device configuration expects."""
    if hil_env and hil_env.get("faceplate"):
        fp = hil_env["faceplate"]
        return {"faceplate_id": fp.get("faceplate_id"), "position": int(fp.get("position", 0))}
    return dict(_EMULATED_FACEPLATE)


@pytest.fixture
def faceplate(hil_env, faceplate_port):
    """A connected SerialFaceplate (real or emulated); closed after the test."""
    from hardware.faceplate import SerialFaceplate

    baudrate = int(hil_env["faceplate"].get("baudrate", 115200)) if hil_env and hil_env.get("faceplate") else 115200
    with SerialFaceplate(faceplate_port, baudrate=baudrate, timeout=0.5, retries=3, move_timeout=15.0) as fp:
        yield fp


@pytest.fixture
def camera(hil_env):
    """An open camera: the real one from the environment, else a ReplayCamera on the shipped samples."""
    from hardware.camera import CAMERAS, ReplayCamera

    cam = CAMERAS.create(hil_env["camera"], "camera") if hil_env and hil_env.get("camera") else ReplayCamera("samples")
    with cam:
        yield cam


@pytest.fixture(autouse=True)
def _ctrl_c_restored():
    """Ctrl-C handling as a fresh process has it: a command run in-process (CliRunner) may ignore SIGINT
    once it has committed (keys provision), and programs the next test starts would inherit that."""
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler)
