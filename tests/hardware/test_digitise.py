"""key_and_digitise: batches keyed exactly as the device's pre-ADC stage keys each frame; model_input; quantise."""
from __future__ import annotations

import numpy as np
import pytest

from base.errors import ConfigError
from hardware.digitise import key_and_digitise, model_input
from hardware.preadc import FiberOptics, KeyStageError, PreADCStage, SensorModel, adc, quantise
from keys.drbg import Drbg
from keys.generate import KeyConfig, sensor_key

GREY = sensor_key(Drbg(b"\x03" * 32, "grey"), (1, 6, 7), KeyConfig(tile=2))
RGB = sensor_key(Drbg(b"\x04" * 32, "rgb"), (3, 6, 7), KeyConfig())
RNG = np.random.default_rng(5)


@pytest.mark.parametrize("model", [SensorModel(), SensorModel(bits=10, adc_gain=1.2),
                                   SensorModel(optics=FiberOptics(supersample=2, core_pitch=2.5, core_radius=1.0))],
                         ids=["ideal8", "10bit", "optics"])
@pytest.mark.parametrize("key, shape", [(GREY, (6, 7)), (RGB, (6, 7, 3))], ids=["grey", "rgb"])
def test_a_batch_is_keyed_like_each_frame_by_the_device_stage(model, key, shape):
    frames = RNG.uniform(size=(4, *shape)).astype(np.float32)
    stage = PreADCStage(key, model)
    want = np.stack([stage(f) for f in frames])
    got = key_and_digitise(key, frames, model)
    assert got.dtype == want.dtype == (np.uint8 if model.bits <= 8 else np.uint16)
    np.testing.assert_array_equal(got, want)


def test_flat_vectors_are_taken_in_the_key_order():
    frames = RNG.uniform(size=(5, 6, 7, 3))
    vectors = frames.transpose(0, 3, 1, 2).reshape(5, -1)         # C, H, W order
    np.testing.assert_array_equal(key_and_digitise(RGB, vectors), adc(RGB.apply(vectors)))
    np.testing.assert_array_equal(key_and_digitise(RGB, vectors),
                                  key_and_digitise(RGB, frames).transpose(0, 3, 1, 2).reshape(5, -1))


def test_noise_restarts_from_the_seed_on_every_call():
    frames = RNG.uniform(size=(3, 6, 7))
    noisy = SensorModel(read_noise=0.02, shot_noise=True, seed=11)
    first = key_and_digitise(GREY, frames, noisy)
    np.testing.assert_array_equal(first, key_and_digitise(GREY, frames, noisy))
    assert not np.array_equal(first, key_and_digitise(GREY, frames))
    assert not np.array_equal(first, key_and_digitise(GREY, frames, SensorModel(read_noise=0.02, shot_noise=True)))


@pytest.mark.parametrize("frames, match", [
    (np.zeros((2, 6, 8)), "does not belong"),
    (np.zeros((2, 6, 7), np.uint8), "float"),
    (np.full((2, 42), 1.5), r"\[0, 1\]"),
    (np.zeros(42), r"\(N, D\)"),
    (np.zeros((1, 1, 6, 7, 1)), r"\(N, H, W, C\)"),
])
def test_bad_batches_raise_key_stage_errors(frames, match):
    with pytest.raises(KeyStageError, match=match):
        key_and_digitise(GREY, frames)


def test_optics_need_frames_not_flat_vectors():
    with pytest.raises(KeyStageError, match="optics"):
        key_and_digitise(GREY, np.zeros((2, 42)), SensorModel(optics=FiberOptics()))


def test_model_input_passes_8_bit_codes_and_rescales_deeper_ones():
    codes = np.array([0, 128, 255], np.uint8)
    assert model_input(codes, 8) is codes
    deep = model_input(np.array([0, 512, 1023], np.uint16), 10)
    assert deep.dtype == np.float32
    np.testing.assert_allclose(deep, [0.0, 512 / 1023, 1.0], rtol=1e-6)


def test_quantise_works_in_the_values_precision():
    halves = (np.arange(256) + 0.5) / 255
    for dtype in (np.float32, np.float64):
        v = np.concatenate([RNG.uniform(-0.2, 1.2, 20000), halves, np.nextafter(halves, 0)]).astype(dtype)
        np.testing.assert_array_equal(quantise(v), np.clip(np.rint(v * 255.0), 0, 255).astype(np.uint8))
    assert quantise(np.array([0.5]), bits=12).dtype == np.uint16 and quantise(np.array([1.0]), bits=12)[0] == 4095
    with pytest.raises(ConfigError, match="bits"):
        quantise(np.zeros(2), bits=17)
