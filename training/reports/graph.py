"""An exported graph's logits over uint8 images: one computation for ``python -m training evaluate --onnx``,
``python -m export verify`` and the model card's figures.

An INT8 graph rounds its input to 8 bits, so a pixel one float32 step away can land on the next step and move
an image's logits (and its confidence bin) visibly: the images are scaled here exactly as the service scales
them, so a report's figures are the card's and the service's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from inference.preprocess import to_model_input

from ..inference import tta_logits_numpy


def graph_logits(
    logits_fn: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    batch_size: int = 256,
    tta: str = "none",
    desc: str = "ONNX Runtime",
) -> np.ndarray:
    """float32 logits [N, C] of ``logits_fn`` (an ONNX Runtime session's, on float32 NCHW batches) over uint8
    [N, H, W, 3] ``images`` in order, each batch scaled to [0, 1] exactly as the service scales its input, with
    ``tta`` views averaged outside the graph."""
    out = [
        np.asarray(tta_logits_numpy(logits_fn, to_model_input(images[i : i + batch_size]), tta), dtype=np.float32)
        for i in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False)
    ]
    return np.concatenate(out)
