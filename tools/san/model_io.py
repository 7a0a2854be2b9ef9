"""The SAN ensemble file: member autoencoders + gender prototypes + training metadata (torch, weights only)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tools.san.data import to_float, to_uint8
from tools.san.errors import SanModelError
from tools.san.nets import PrototypeAutoencoder
from tools.san.semi_adversarial import perturb

FORMAT = "keycam-san-ensemble/1"
WEIGHTS = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = WEIGHTS / "san_label_free.pt"        # the deployed stage: label-free (README)
PAPERS_MODEL = WEIGHTS / "san_ensemble.pt"           # the papers' gendered ensemble, kept for comparison
STRENGTH_GROUPS = ("female", "male", "unknown")      # gender label 0, 1, -1
# How the deployed output is formed from the SAN's outputs at the working size (x_s = the downsampled crop):
#   residual:     x + alpha * up(X_OP - x_s)    the papers' output (alpha = 1 gives X_OP itself); carries the
#                                               autoencoder's reconstruction error (SSIM ~0.7 to the original)
#   differential: x + alpha * up(X_OP - X_SM)   only what the opposite prototype changes against the same one:
#                                               the reconstruction error, common to both outputs, cancels
#   label_free:   x + alpha * up(D_N)           D_N: the head's LINEAR output with the neutral prototype in the
#                                               encoder and the head, i.e. the network outputs the change itself
#                                               (nothing to reconstruct); the same stage for everyone (no gender
#                                               input), trained against a classifier retrained on its outputs
#                                               (tools/san/label_free.py)
CHANGES = ("residual", "differential", "label_free")
STRENGTH_MAX = 4.0


def check_strength(strength: dict) -> dict[str, float]:
    """Validate a per-source-gender perturbation strength {female, male[, unknown]} (each in [0, STRENGTH_MAX])."""
    if not isinstance(strength, dict) or not {"female", "male"} <= set(strength) <= set(STRENGTH_GROUPS):
        raise SanModelError(f"strength must map female and male (and optionally unknown) to [0, {STRENGTH_MAX:g}], "
                            f"got {strength!r}")
    out = {"unknown": 1.0, **{k: float(v) for k, v in strength.items()}}
    return {k: check_alpha(v) for k, v in out.items()}


def check_alpha(alpha: float) -> float:
    """One strength value, in [0, STRENGTH_MAX]."""
    if not 0.0 <= float(alpha) <= STRENGTH_MAX:
        raise SanModelError(f"strength values must be in [0, {STRENGTH_MAX:g}], got {alpha!r}")
    return float(alpha)


def check_change(change: str) -> str:
    """One of CHANGES."""
    if change not in CHANGES:
        raise SanModelError(f"change must be one of {', '.join(CHANGES)}, got {change!r}")
    return change


@dataclass
class SanEnsemble:
    """Diverse SAN members sharing one set of prototypes [female, male, neutral] (float (3,C,H,W))."""

    members: list[PrototypeAutoencoder]
    prototypes: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def strength(self) -> dict[str, float]:
        """The stored operating point (x + strength * SAN change, per source gender); full strength if none."""
        return check_strength(self.meta.get("strength", {"female": 1.0, "male": 1.0}))

    @property
    def change(self) -> str:
        """The stored change form of the deployed output (one of CHANGES; models without one: residual)."""
        return check_change(self.meta.get("change", "residual"))

    def strengths(self, gender: np.ndarray, strength: float | dict | None = None) -> np.ndarray:
        """Per-image strength: a number for all images, a per-gender mapping, or None = the stored one."""
        if isinstance(strength, int | float):
            return np.full(len(gender), check_alpha(strength), dtype=np.float32)
        table = check_strength(strength) if strength is not None else self.strength
        return np.array([table[STRENGTH_GROUPS[g] if g >= 0 else "unknown"] for g in gender], dtype=np.float32)

    def one_strength(self, strength: float | dict | None = None) -> float:
        """The label-free stage's strength: it is one stage for every face, so a number, or a mapping (None = the
        stored one) whose values are all equal; a mapping's missing 'unknown' is not filled in with 1."""
        if isinstance(strength, int | float):
            return check_alpha(strength)
        given = self.meta.get("strength", {"female": 1.0, "male": 1.0}) if strength is None else strength
        table = check_strength(given)
        values = {table[g] for g in ("female", "male", *(("unknown",) if "unknown" in given else ()))}
        if len(values) != 1:
            raise SanModelError(f"a label-free stage has one strength for every face; got {given!r}")
        return values.pop()

    @property
    def work_size(self) -> int:
        """Image side the SAN works at (it was trained at this resolution)."""
        return int(self.prototypes.shape[-1])

    def perturb(self, images: np.ndarray, gender: np.ndarray, member: int,
                strength: float | dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(X_SM, X_OP) uint8 (N,H,W,3) for face crops uint8 (N,H,W,3) of any size >= the working size.

        The crops are area-downsampled to the working size, perturbed by member `member`, and the SAN's
        change (output - input, at the working size) is upsampled bilinearly and added to the full-size
        crop, so detail above the SAN's resolution passes through unchanged.
        gender: 1 male, 0 female, -1 unknown (the neutral prototype is used for both outputs). A label-free
        model has no X_SM / X_OP and is refused: its output is `deployed`.
        """
        if self.label_free:
            raise SanModelError("a label-free SAN has no X_SM / X_OP (one stage for every face, no gender input); "
                                "use deployed(images, None, member, strength) for its output")
        full, small, outputs = self._run(images, self._stage_gender(images, gender), member)
        return tuple(self._add(full, torch.from_numpy(out) - small, gender, strength) for out in outputs)

    @property
    def label_free(self) -> bool:
        """Is the deployed output the same stage for every face (no gender input)?"""
        return self.change == "label_free"

    def deployed(self, images: np.ndarray, gender: np.ndarray | None, member: int,
                 strength: float | dict | None = None, change: str | None = None) -> np.ndarray:
        """The deployed output uint8 (N,H,W,3): the change form `change` (None = the stored one) at `strength`
        (None = the stored one). With the differential form an unknown gender (-1) gets no change; the
        label-free form ignores `gender` (the neutral prototype for every face, at `one_strength`)."""
        change = check_change(change or self.change)
        gender = self._stage_gender(images, None if change == "label_free" else gender)
        full, small, (sm, op) = self._run(images, gender, member)
        if change == "label_free":
            return self._add(full, self._label_free_change(small, member), gender, self.one_strength(strength))
        if change == "residual":
            return self._add(full, torch.from_numpy(op) - small, gender, strength)
        return self._add(full, torch.from_numpy(op - sm), gender, strength)

    @torch.no_grad()
    def _label_free_change(self, small: torch.Tensor, member: int, batch_size: int = 256) -> torch.Tensor:
        """D_N of member `member` for working-size faces (N,C,h,w) (see CHANGES)."""
        model = self.members[member].eval()
        neutral = torch.from_numpy(np.ascontiguousarray(self.prototypes[2], dtype=np.float32))[None]
        return torch.cat([model.change(part, neutral.expand(len(part), -1, -1, -1))
                          for part in torch.split(small, batch_size)]) if len(small) else small

    def _stage_gender(self, images: np.ndarray, gender: np.ndarray | None) -> np.ndarray:
        """The stage's gender input: none (-1 for every face) for a label-free model or when not given."""
        return np.full(len(images), -1, dtype=np.int64) if gender is None or self.label_free else gender

    def _add(self, full: torch.Tensor, change: torch.Tensor, gender: np.ndarray,
             strength: float | dict | None) -> np.ndarray:
        """clip(full + alpha * bilinear-upsampled change) as uint8 NHWC."""
        alpha = torch.from_numpy(self.strengths(gender, strength))[:, None, None, None]
        up = F.interpolate(change, size=full.shape[2:], mode="bilinear", align_corners=False)
        return to_uint8((full + alpha * up).clamp(0, 1).numpy())

    def _run(self, images: np.ndarray, gender: np.ndarray, member: int):
        """(full-size float NCHW, working-size float NCHW, (X_SM, X_OP) float at the working size)."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise SanModelError(f"SAN input must be uint8 RGB (N,H,W,3), got {images.dtype} {images.shape}")
        if min(images.shape[1:3]) < self.work_size:
            raise SanModelError(f"SAN input {images.shape[1]}x{images.shape[2]} is smaller than its working size "
                                f"{self.work_size}")
        if len(gender) != len(images):
            raise SanModelError(f"{len(images)} images but {len(gender)} gender labels")
        if not 0 <= member < len(self.members):
            raise SanModelError(f"member {member} does not exist; the ensemble has {len(self.members)}")
        full = torch.from_numpy(to_float(images))
        small = F.interpolate(full, size=(self.work_size, self.work_size), mode="area")
        return full, small, perturb(self.members[member], self.prototypes, small.numpy(), gender)


def save_ensemble(ensemble: SanEnsemble, path: Path) -> None:
    """Write the ensemble as a torch weights-only file."""
    blob: dict[str, object] = {"format": FORMAT, "prototypes": torch.from_numpy(ensemble.prototypes),
                               "meta": json.dumps(ensemble.meta)}
    blob["architecture"] = json.dumps([{"channels": m.channels, **m.widths} for m in ensemble.members])
    for i, member in enumerate(ensemble.members):
        for name, tensor in member.state_dict().items():
            blob[f"member{i}.{name}"] = tensor.detach().clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, path)


def load_ensemble(path: Path | None = None) -> SanEnsemble:
    """Read an ensemble file (default: the committed label-free model, tools/san/weights/san_label_free.pt)."""
    path = Path(path or DEFAULT_MODEL)
    if not path.is_file():
        raise SanModelError(f"SAN model {path} not found; train one with 'keycam san train --out {path}'")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for corrupt files
        raise SanModelError(f"{path} is not a readable SAN model file: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise SanModelError(f"{path} is not a {FORMAT} file")
    members = []
    for i, arch in enumerate(json.loads(blob["architecture"])):
        model = PrototypeAutoencoder(arch["channels"], tuple(arch["enc"]), tuple(arch["dec"]))
        prefix = f"member{i}."
        state = {k[len(prefix):]: v for k, v in blob.items() if k.startswith(prefix)}
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise SanModelError(f"{path}: member {i} weights do not match its architecture: {exc}") from exc
        members.append(model.eval())
    return SanEnsemble(members, blob["prototypes"].numpy(), json.loads(blob["meta"]))
