"""Camera interface: replay sources, pacing and drop counting, faults, validation, picamera2 backend."""
from __future__ import annotations

import gzip
import sys
import time
import types

import numpy as np
import pytest

from base.errors import ConfigError
from hardware.camera import CAMERAS, Picamera2Camera, ReplayCamera, ReplayFaults, box_downsample
from hardware.camera.samples import load_samples
from hardware.errors import CameraDisconnected, CameraEndOfStream, CameraError, CameraFrameError, CameraTimeout

pytestmark = pytest.mark.timeout(30)


def frames(n=5, shape=(6, 7)):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


def test_samples_replay_with_labels_and_linear_scaling():
    images, labels = load_samples(3)
    with ReplayCamera("samples", limit=3) as cam:
        got = [cam.read() for _ in range(4)]
    assert cam.frame_shape == (28, 28)
    np.testing.assert_allclose(got[1].image, images[1] / 255.0, atol=1e-7)
    assert [f.label for f in got] == [*labels.tolist(), labels[0]]       # loops
    assert [f.seq for f in got] == [0, 1, 2, 3]


def test_npz_folder_and_idx_sources(tmp_path):
    data = frames()
    np.savez(tmp_path / "f.npz", images=data, labels=np.arange(5))
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image
    for i, img in enumerate(data[:3]):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    np.save(folder / "003.npy", data[3].astype(np.float32) / 255)
    header = bytes([0, 0, 8, 3]) + b"".join(int(v).to_bytes(4, "big") for v in data.shape)
    with gzip.open(tmp_path / "x-idx3-ubyte.gz", "wb") as fh:
        fh.write(header + data.tobytes())
    for source, n in ((tmp_path / "f.npz", 5), (folder, 4), (tmp_path / "x-idx3-ubyte.gz", 5)):
        cam = ReplayCamera(source, loop=False)
        assert len(cam.images) == n and cam.frame_shape == (6, 7)
        with cam:
            np.testing.assert_allclose(cam.read().image, data[0] / 255.0, atol=1e-6)
    assert ReplayCamera(tmp_path / "f.npz").labels.tolist() == list(range(5))


def test_colour_frames_keep_their_channels():
    rgb = np.random.default_rng(1).random((2, 4, 5, 3)).astype(np.float32)
    with ReplayCamera(rgb) as cam:
        assert cam.read().image.shape == (4, 5, 3) == cam.frame_shape


def test_no_loop_ends_the_stream():
    with ReplayCamera(frames(2), loop=False) as cam:
        cam.read(), cam.read()
        with pytest.raises(CameraEndOfStream, match="exhausted after 2"):
            cam.read()


def test_paced_replay_counts_frames_a_slow_reader_missed():
    with ReplayCamera(frames(), fps=50) as cam:
        first = cam.read(timeout=1)
        time.sleep(0.2)                            # ~10 frame periods pass unread
        late = cam.read(timeout=1)
        nxt = cam.read(timeout=1)
    assert late.seq - first.seq >= 8 and cam.dropped == late.seq - first.seq - 1
    assert nxt.seq == late.seq + 1


def test_paced_replay_waits_for_the_next_frame_and_times_out_when_too_slow():
    with ReplayCamera(frames(), fps=20) as cam:
        cam.read(timeout=1)
        t = time.monotonic()
        cam.read(timeout=1)
        assert 0.02 < time.monotonic() - t < 0.2
    with ReplayCamera(frames(), fps=0.5) as cam:
        cam.read(timeout=1)
        with pytest.raises(CameraTimeout, match="no frame within 0.1s"):
            cam.read(timeout=0.1)


@pytest.mark.parametrize("faults, error, match", [
    (ReplayFaults(stall_after=2), CameraTimeout, "stopped delivering after 2"),
    (ReplayFaults(disconnect_after=2), CameraDisconnected, "disappeared"),
    (ReplayFaults(bad_frame_at=2), CameraFrameError, "shape"),
])
def test_injected_faults_raise_clear_errors(faults, error, match):
    with ReplayCamera(frames(), faults=faults) as cam:
        cam.read(timeout=0.1), cam.read(timeout=0.1)
        with pytest.raises(error, match=match):
            cam.read(timeout=0.1)


def test_disconnected_camera_stays_closed():
    with ReplayCamera(frames(), faults=ReplayFaults(disconnect_after=0)) as cam:
        with pytest.raises(CameraDisconnected):
            cam.read()
        with pytest.raises(CameraError, match="not open"):
            cam.read()


def test_read_requires_open_and_a_positive_timeout():
    cam = ReplayCamera(frames())
    with pytest.raises(CameraError, match="not open"):
        cam.read()
    with cam, pytest.raises(CameraError, match="timeout"):
        cam.read(timeout=0)


@pytest.mark.parametrize("source, match", [
    ("nowhere/x.npz", "does not exist"),
    (np.zeros((0, 4, 4), np.uint8), "N >= 1"),
    (np.zeros((2, 4), np.uint8), "N >= 1"),
    (np.full((1, 4, 4), 2.0), r"\[0, 1\]"),
    (np.zeros((1, 4, 4), np.int32), "unsupported image dtype"),
])
def test_bad_sources_are_config_errors(source, match):
    with pytest.raises(ConfigError, match=match):
        ReplayCamera(source)


def test_npz_without_images_and_empty_folder(tmp_path):
    np.savez(tmp_path / "bad.npz", pixels=frames())
    with pytest.raises(ConfigError, match="no 'images'"):
        ReplayCamera(tmp_path / "bad.npz")
    with pytest.raises(ConfigError, match="holds no images"):
        ReplayCamera(tmp_path)


def test_camera_registry_validates_the_config(tmp_path):
    cam = CAMERAS.create({"type": "replay", "source": "samples", "fps": 30, "limit": 10,
                          "faults": {"stall_after": 5}}, "camera")
    assert isinstance(cam, ReplayCamera) and cam.fps == 30 and len(cam.images) == 10
    assert isinstance(CAMERAS.create({"type": "picamera2", "size": [32, 24]}, "camera"), Picamera2Camera)
    for bad, match in (({"type": "webcam"}, "camera.type: unknown camera type 'webcam'"),
                       ({"type": "replay"}, "camera.source: required key is missing"),
                       ({"source": "samples"}, "camera.type: required key is missing"),
                       ({"type": "replay", "source": "samples", "colour": 1}, "camera: unknown key colour"),
                       ({"type": "replay", "source": "samples", "faults": {"stall_after": -1}},
                        r"camera.faults.stall_after: must be >= 0"),
                       ({"type": "picamera2", "size": "big"}, "camera.size: expected a list"),
                       ({"type": "picamera2", "size": [28]}, r"camera.size: must be \[width, height\]"),
                       ({"type": "picamera2", "size": [28, 0]}, r"camera.size: must be \[width, height\] >= 1"),
                       ({"type": "picamera2", "buffer_count": 99}, "camera.buffer_count: must be 1..32"),
                       ({"type": "picamera2", "analog_gain": 0}, "camera.analog_gain: must be > 0"),
                       ("samples", "camera: expected a mapping")):
        with pytest.raises(ConfigError, match=match):
            CAMERAS.create(bad, "camera")
    rel = CAMERAS.parse({"type": "replay", "source": "frames"}, "camera", base=tmp_path)
    assert rel.source == str(tmp_path / "frames")               # resolved against the config's folder


def test_picamera2_off_pi_fails_with_an_actionable_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(CameraError, match="system-site-packages"):
        Picamera2Camera().open()


def test_box_downsample_preserves_the_mean_of_divisible_blocks():
    img = np.arange(36, dtype=np.float64).reshape(6, 6)
    out = box_downsample(img, (3, 2))
    assert out.shape == (3, 2) and out[0, 0] == img[:2, :3].mean()
    with pytest.raises(CameraError):
        box_downsample(img, (7, 2))


# -- picamera2 backend against a stand-in for the picamera2 module (its API as documented) --------
class FakeRequest:
    def __init__(self, raw, meta):
        self.raw, self.meta, self.released = raw, meta, False

    def make_array(self, name):
        assert name == "raw"
        return self.raw

    def get_metadata(self):
        return self.meta

    def release(self):
        self.released = True


class FakePicamera2:
    sensor_modes = [{"size": (2028, 1520), "unpacked": "SRGGB12", "bit_depth": 12},
                    {"size": (1332, 990), "unpacked": "SRGGB10", "bit_depth": 10},
                    {"size": (64, 48), "unpacked": "SRGGB10", "bit_depth": 10}]
    script: list = []

    def __init__(self, index):
        self.index, self.started, self.closed = index, False, False

    def create_video_configuration(self, raw, buffer_count, controls):
        self.config = dict(raw=raw, buffer_count=buffer_count, controls=controls)
        return self.config

    def configure(self, config):
        pass

    def start(self):
        self.started = True

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True

    def capture_request(self, wait):
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def raw_frame(value_10bit: int, width=64, height=48) -> np.ndarray:
    samples = np.full((height, width), value_10bit, dtype=np.uint16)
    return samples.view(np.uint8)                      # picamera2 hands unpacked raw as bytes


def test_picamera2_backend_linearises_raw_and_counts_drops(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    black16 = 64 << 6                                 # 10-bit black level 64, reported on a 16-bit scale
    meta = {"SensorBlackLevels": (black16,) * 4, "FrameDuration": 33333, "ExposureTime": 1000, "AnalogueGain": 2.0}
    FakePicamera2.script = [
        FakeRequest(raw_frame(64 + 959 // 2), {**meta, "SensorTimestamp": 0}),
        FakeRequest(raw_frame(1023), {**meta, "SensorTimestamp": 3 * 33_333_000}),   # two frames missed
        TimeoutError("no frame"),
        RuntimeError("camera unplugged"),
    ]
    cam = Picamera2Camera(size=(16, 12), exposure_us=1000)
    with cam:
        assert cam._cam.config["raw"] == {"size": (64, 48), "format": "SRGGB10"}
        assert cam._cam.config["controls"] == {"ExposureTime": 1000}
        a = cam.read(timeout=0.5)
        assert a.image.shape == (12, 16) and a.image.dtype == np.float32
        assert abs(float(a.image.mean()) - 479 / 959) < 1e-6 and a.exposure_us == 1000 and a.analog_gain == 2.0
        b = cam.read(timeout=0.5)
        assert float(b.image.min()) == 1.0 and (b.seq, cam.dropped) == (3, 2)
        with pytest.raises(CameraTimeout):
            cam.read(timeout=0.5)
        with pytest.raises(CameraDisconnected, match="unplugged"):
            cam.read(timeout=0.5)
    with pytest.raises(CameraError, match="no sensor mode"):
        Picamera2Camera.pick_mode(FakePicamera2.sensor_modes, (4000, 4000))
