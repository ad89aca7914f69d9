"""Every model in models/ answers real CIFAR-10 photos correctly through the torch-free serving path.

`python -m export verify` proves each file against its checkpoint on the 5,000 validation images; this test
proves, in every CI run and without any checkpoint, that each shipped file still reads its own card the way
the service does: class order, input size, fit, normalisation and TTA inside the graph. A card that named
the classes in another order, or a graph that expected 0-255 pixels, would score near chance here.
"""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from conftest import ROOT
from inference.manifest import load_manifest
from inference.preprocess import decode_image, to_model_input
from inference.runtime import OnnxClassifier

MODELS = ROOT / "models"
PER_CLASS = 6


@pytest.fixture(scope="module")
def photos(shared_archive) -> tuple[list[bytes], list[str]]:
    """The first PER_CLASS JPEGs of each class folder, as bytes, with their folder names."""
    data, labels, taken = [], [], {}
    with tarfile.open(shared_archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 2 or taken.get(parts[-2], 0) >= PER_CLASS:
                continue
            taken[parts[-2]] = taken.get(parts[-2], 0) + 1
            data.append(tar.extractfile(member).read())
            labels.append(parts[-2])
    return data, labels


@pytest.mark.parametrize("name", [m.name for m in load_manifest(MODELS, verify=False).models])
def test_each_shipped_model_names_real_photos(name, photos):
    manifest = load_manifest(MODELS, verify=False)
    entry = manifest.get(name)
    data, labels = photos
    assert sorted(set(labels)) == sorted(entry.classes), "the card's classes are CIFAR-10's"
    classifier = OnnxClassifier(MODELS / entry.file, device="cpu")
    assert classifier.card.name == name and classifier.card.classes == entry.classes
    size = tuple(entry.input.shape[1:])
    batch = to_model_input([decode_image(d, size=size, fit=entry.input.fit) for d in data])
    probs = classifier.probabilities(batch)
    assert probs.shape == (len(data), len(entry.classes)) and np.allclose(probs.sum(1), 1.0, atol=1e-4)
    predicted = [entry.classes[i] for i in probs.argmax(1)]
    # These are training images (the validation split is not known without decoding the whole archive), no
    # harder than the validation images: a working model names at least its recorded validation share of them,
    # less three binomial standard deviations for so few; a card read wrongly names about one in ten.
    accuracy = float(np.mean([p == t for p, t in zip(predicted, labels)]))
    recorded = entry.metrics["val_top1"]
    floor = recorded - 3 * np.sqrt(recorded * (1 - recorded) / len(labels))
    assert accuracy >= floor, f"{name}: {accuracy:.0%} of {len(labels)} photos, below {floor:.0%}"


def test_models_stay_within_the_repositorys_size_rule():
    """models/ under 100 MiB in all and no file over 50 MiB: what the repository (and every Bento, which packs
    them all) can carry."""
    files = [p for p in MODELS.rglob("*") if p.is_file()]
    sizes = {p.relative_to(MODELS).as_posix(): p.stat().st_size for p in files}
    assert sum(sizes.values()) < 100 * 2**20, f"models/ is {sum(sizes.values()) / 2**20:.1f} MiB"
    assert not {name: size for name, size in sizes.items() if size > 50 * 2**20}
