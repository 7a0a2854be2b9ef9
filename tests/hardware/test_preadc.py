"""Simulated pre-ADC stage: keying in the analog domain, noise statistics, ADC, optics, errors."""
from __future__ import annotations

import numpy as np
import pytest

from base.errors import ConfigError
from base.schema import parse_section
from hardware.camera.samples import load_samples
from hardware.preadc import FiberOptics, KeyStageError, PreADCStage, SensorModel, adc, dequantize
from keys.drbg import Drbg
from keys.generate import KeyConfig, sensor_key

SHAPE = (28, 28)


@pytest.fixture(scope="module", params=[KeyConfig(tile=2), KeyConfig(scatter=15, mixing="multiplex")],
                ids=["tiles", "multiplex"])
def key(request):
    return sensor_key(Drbg(b"\x01" * 32, "test-sensor"), (1, *SHAPE), request.param)


@pytest.fixture(scope="module")
def frame():
    return (load_samples(1)[0][0] / 255.0).astype(np.float32)


def test_adc_rounds_clips_and_picks_the_dtype():
    assert adc(np.array([0.0, 0.5, 1.0, 1.7, -0.2])).tolist() == [0, 128, 255, 255, 0]
    assert adc(np.array([0.5]), bits=10).dtype == np.uint16 and adc(np.array([0.5]), bits=10)[0] == 512
    assert adc(np.array([0.25]), bits=8, gain=2.0)[0] == 128
    assert adc(np.array([1.0]), bits=1)[0] == 1
    np.testing.assert_allclose(dequantize(adc(np.array([0.3]), bits=12), 12), [0.3], atol=1 / 4095)
    for bad in ({"bits": 0}, {"bits": 17}, {"bits": 8.0}, {"gain": 0}):
        with pytest.raises(ConfigError):
            adc(np.zeros(2), **bad)


def test_noiseless_stage_is_exactly_the_adc_of_the_keyed_frame(key, frame):
    keyed = PreADCStage(key, SensorModel())(frame)
    assert keyed.dtype == np.uint8 and keyed.shape == SHAPE
    np.testing.assert_array_equal(keyed, adc(key.apply(frame.reshape(-1).astype(np.float64))).reshape(SHAPE))
    assert not np.array_equal(keyed, adc(frame))


def test_the_key_is_invertible_up_to_quantisation(key, frame):
    codes = PreADCStage(key, SensorModel(bits=12))(frame)
    restored = key.apply_inverse(dequantize(codes, 12).reshape(-1).astype(np.float64)).reshape(SHAPE)
    assert np.abs(restored - frame).max() < 0.01


def test_the_faceplate_optics_and_a_multiplexed_key_compose_before_the_adc(frame):
    key = sensor_key(Drbg(b"\x02" * 32, "mux"), (1, *SHAPE), KeyConfig(scatter=15, mixing="multiplex"))
    optics = FiberOptics(crosstalk=0.02)
    for after in (False, True):
        keyed = PreADCStage(key, SensorModel(optics=optics, optics_after_key=after))(frame)
        m, x = optics.matrix(SHAPE), frame.reshape(-1).astype(np.float64)
        want = m @ key.apply(x) if after else key.apply(m @ x)
        np.testing.assert_array_equal(keyed, adc(want).reshape(SHAPE))


def test_read_noise_has_the_configured_spread(key):
    flat = np.full(SHAPE, 0.5, dtype=np.float32)
    stage = PreADCStage(key, SensorModel(read_noise=0.02, bits=16, seed=3))
    clean = PreADCStage(key, SensorModel(bits=16))(flat).astype(np.float64)
    diffs = np.stack([stage(flat).astype(np.float64) - clean for _ in range(20)]) / 65535
    assert 0.018 < diffs.std() < 0.022 and abs(diffs.mean()) < 0.002


def test_shot_noise_grows_with_signal_and_shrinks_with_full_well():
    ident = type("Identity", (), {"size": 4096, "apply": staticmethod(lambda v: v)})()
    def spread(level, well):
        stage = PreADCStage(ident, SensorModel(shot_noise=True, full_well=well, bits=16, seed=1))
        return (stage(np.full((64, 64), level)).astype(np.float64) / 65535).std()
    assert spread(0.8, 1000) > 1.8 * spread(0.2, 1000)
    assert abs(spread(0.5, 1000) - np.sqrt(0.5 / 1000)) < 0.002
    assert spread(0.5, 100000) < spread(0.5, 1000) / 5


def test_dark_offset_and_adc_gain_shift_and_scale(key):
    flat = np.zeros(SHAPE, dtype=np.float32)
    assert PreADCStage(key, SensorModel(dark_offset=0.1))(flat).min() >= 25
    bright = np.ones(SHAPE, dtype=np.float32)
    assert (PreADCStage(key, SensorModel(adc_gain=4.0))(bright) == 255).mean() > 0.9


def test_same_seed_same_frames_different_seed_different_frames(key, frame):
    model = dict(read_noise=0.01, shot_noise=True)
    a, b = PreADCStage(key, SensorModel(seed=7, **model)), PreADCStage(key, SensorModel(seed=7, **model))
    first = [a(frame) for _ in range(3)]
    assert all(np.array_equal(x, b(frame)) for x in first)
    assert not np.array_equal(first[0], first[1])               # noise differs frame to frame
    a.reset()
    assert np.array_equal(a(frame), first[0])
    assert not np.array_equal(PreADCStage(key, SensorModel(seed=8, **model))(frame), first[0])


def test_colour_frames_are_keyed_in_channel_height_width_order():
    rgb_key = sensor_key(Drbg(b"\x02" * 32, "rgb"), (3, 4, 5), KeyConfig())
    img = np.random.default_rng(0).random((4, 5, 3))
    out = PreADCStage(rgb_key, SensorModel())(img)
    expected = adc(rgb_key.apply(img.transpose(2, 0, 1).reshape(-1))).reshape(3, 4, 5).transpose(1, 2, 0)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("image, match", [
    (np.zeros(SHAPE, np.uint8), "float"),
    (np.zeros(10), r"\(H, W\)"),
    (np.full(SHAPE, np.nan), r"\[0, 1\]"),
    (np.full(SHAPE, 1.5), r"\[0, 1\]"),
    (np.zeros((27, 28)), "does not belong"),
])
def test_bad_frames_raise_key_stage_errors(key, image, match):
    with pytest.raises(KeyStageError, match=match):
        PreADCStage(key, SensorModel())(image)


def test_missing_key_fails_closed(frame):
    with pytest.raises(KeyStageError, match="no sensor key"):
        PreADCStage(None, SensorModel())(frame)


def test_sensor_model_validation_and_parsing():
    model = parse_section({"read_noise": 0.01, "bits": 10, "optics": {"crosstalk": 0.02}}, SensorModel, "sensor")
    assert model.bits == 10 and model.optics == FiberOptics(crosstalk=0.02)
    for bad, match in (({"read_noise": -1}, "sensor.read_noise: must be >= 0"), ({"bits": 0}, "sensor.bits"),
                       ({"bits": 17}, "sensor.bits"), ({"full_well": 0}, "sensor.full_well"),
                       ({"dark_offset": 1.0}, "sensor.dark_offset"), ({"adc_gain": 0}, "sensor.adc_gain"),
                       ({"colour": True}, "sensor: unknown key colour"),
                       ({"optics": {"crosstalk": 0.5}}, "sensor.optics.crosstalk"),
                       ({"optics": {"zoom": 2}}, "sensor.optics: unknown key zoom")):
        with pytest.raises(ConfigError, match=match):
            parse_section(bad, SensorModel, "sensor")
    with pytest.raises(ConfigError, match="bits: must be an integer in 1..16"):   # direct construction too
        SensorModel(bits=0)
    with pytest.raises(ConfigError, match="transmission: must be in"):
        FiberOptics(transmission=0)


def test_fiber_optics_conserves_light_and_degrades_gracefully(frame):
    optics = FiberOptics()
    m = optics.matrix(SHAPE)
    white = m @ np.ones(m.shape[1])
    assert abs(white.mean() - 1.0) < 1e-9 and white.min() > 0.5           # honeycomb, but no dead pixels
    assert m.min() >= 0 and m.nnz < 40 * m.shape[0]                        # non-negative and sparse
    seen = (m @ frame.reshape(-1).astype(np.float64)).reshape(SHAPE)
    assert np.corrcoef(seen.ravel(), frame.ravel())[0, 1] > 0.8
    centre = 14 * 28 + 14

    def psf_peak(**kw):      # share of a point source's light that stays in its own pixel
        column = FiberOptics(**kw).matrix(SHAPE)[:, centre].toarray().ravel()
        return column[centre] / column.sum()
    assert psf_peak(crosstalk=0, blur_sigma=0) > psf_peak(crosstalk=0.1, blur_sigma=0) > psf_peak(crosstalk=0.1)
    jittered = FiberOptics(jitter=1.0, seed=1).matrix(SHAPE)
    assert abs(jittered - m).max() > 0 and abs(FiberOptics(jitter=1.0, seed=1).matrix(SHAPE) - jittered).max() == 0


def test_optics_before_and_after_the_key_differ(key, frame):
    before = PreADCStage(key, SensorModel(optics=FiberOptics()))(frame)
    after = PreADCStage(key, SensorModel(optics=FiberOptics(), optics_after_key=True))(frame)
    plain = PreADCStage(key, SensorModel())(frame)
    assert not np.array_equal(before, after) and not np.array_equal(before, plain)
