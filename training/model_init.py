"""A network's initialisation from its training images and options, which ``create_model`` cannot do: patch-whitening
fitted on the training split, Dirac init, BatchNorm momentum."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import Config
from .data.augment import to_unit
from .models import ImageClassifier
from .models.whitening import dirac_init_, whitening_layers

# Airbench fits its whitening on 5,000 training images: the 2x2-patch covariance (12 x 12) is settled
# long before that, and all 45,000 would hold about 2 GB of patches.
WHITENING_IMAGES = 5000


def as_float(images: np.ndarray) -> torch.Tensor:
    """uint8 images [N, H, W, C] as the model takes them: float [N, C, H, W] in 0-1."""
    return to_unit(torch.from_numpy(images).permute(0, 3, 1, 2))


def whitening_sample(images: np.ndarray, how: str, seed: int) -> np.ndarray:
    """The images a whitening layer is fitted on (``TrainConfig.whiten_sample``). Its own generator, so the
    sample takes nothing from the random streams that initialise and train the model."""
    if how == "first" or len(images) <= WHITENING_IMAGES:
        return images[:WHITENING_IMAGES]
    chosen = np.random.default_rng(seed).choice(len(images), WHITENING_IMAGES, replace=False)
    return images[np.sort(chosen)]


@torch.no_grad()
def prepare_model(model: ImageClassifier, config: Config, train_images: np.ndarray) -> None:
    """The data- and option-dependent initialisation that ``create_model`` cannot do: fit patch-whitening
    layers on the training split (as the model will see it: normalised), Dirac init, BatchNorm momentum."""
    layers = whitening_layers(model)
    if layers:
        sample = as_float(whitening_sample(train_images, config.train.whiten_sample, config.train.seed))
        for layer in layers:
            layer.fit(model.normalize(sample))
    if config.model.dirac_init:
        dirac_init_(model.backbone)
    if config.model.bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = config.model.bn_momentum
