"""The Ray engine's three stages: the work Ray's worker processes do, each batch an Arrow table.

Kept apart from the engine, which only assembles them into a dataset: the workers import this module (Ray
sends the stages by reference), and the stage functions' names here are what ray_failures.py looks for in a
remote traceback. Like the rest of the engine, it imports Ray and pyarrow only inside functions.
"""

from __future__ import annotations

import os
import tempfile

from inference.devices import Device
from inference.image_limits import DEFAULT_MAX_PIXELS
from inference.preprocess import decode_pixels, pixels_to_model_input

from .decode import FILE_ERRORS, decoder_failure, failure_message, read_file
from .sinks import ENCODING


def _text(value: bytes) -> str:
    return value.decode(**ENCODING)


def _raw(text: str | None) -> bytes | None:
    """Paths and messages travel as bytes: a file name that is not UTF-8 (surrogate-escaped) is no Arrow string."""
    return None if text is None else text.encode(**ENCODING)


# ------------------------------------------------------------------------------------------------ the stages
# Each stage takes and returns an Arrow table with the columns ``rel`` and ``error`` (binary; error null for a
# file still going), and adds what it made. They run in Ray's worker processes, which import this module.


def read_files(batch, root: bytes):
    """Stage 1: the bytes of each file (``data``, null where reading failed or the walk had found an error)."""
    import pyarrow as pa

    data, errors = [], []
    for rel, error in zip(batch.column("rel").to_pylist(), batch.column("error").to_pylist()):
        content = None
        if error is None:
            try:
                content = read_file(os.path.join(root, rel))
            except OSError as exc:
                error = _raw(failure_message(exc))
        data.append(content)
        errors.append(error)
    return pa.table(
        {
            "rel": batch.column("rel"),
            "error": pa.array(errors, pa.binary()),
            "data": pa.array(data, pa.large_binary()),  # a block may hold more than 2 GiB of files
        }
    )


def decode_files(batch, size: tuple[int, int], fit: str, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Stage 2: the project's decoder, ``data`` -> ``pixels`` (H x W x 3 uint8 bytes, null where it failed)."""
    import pyarrow as pa

    pixels, errors = [], []
    columns = (batch.column(name).to_pylist() for name in ("rel", "data", "error"))
    for rel, data, error in zip(*columns):
        decoded = None
        if error is None:
            try:
                decoded = decode_pixels(data, size, max_pixels, fit=fit)
            except FILE_ERRORS as exc:
                error = _raw(failure_message(exc))
            except Exception as exc:  # the task fails, and with it the job: RemoteError, as decode_chunk stops
                raise decoder_failure(_text(rel), exc) from exc
        pixels.append(decoded)
        errors.append(error)
    return pa.table(
        {"rel": batch.column("rel"), "error": pa.array(errors, pa.binary()), "pixels": pa.array(pixels, pa.binary())}
    )


class Classify:
    """Stage 3, in each actor of the pool: one ONNX Runtime session; ``pixels`` -> top-k ``index`` and
    ``confidence`` (empty lists on error rows)."""

    def __init__(self, model: tuple, size: tuple[int, int], k: int, threads: int, device: Device) -> None:
        import ray

        from inference.runtime import OnnxClassifier, SessionSettings

        # The model's bytes come through the object store (``model`` holds their reference), so that no node
        # needs the models folder; the session reads its file once.
        with tempfile.TemporaryDirectory(prefix="score-model-") as tmp:
            path = os.path.join(tmp, "model.onnx")
            with open(path, "wb") as f:
                f.write(ray.get(model[0]))
            self.clf = OnnxClassifier(path, device=device, settings=SessionSettings(threads=threads, spin=False))
        self.size = size
        self.k = k

    def __call__(self, batch):
        import pyarrow as pa

        from inference.runtime import top_k

        errors = batch.column("error").to_pylist()
        pixels = batch.column("pixels").to_pylist()
        ok = [i for i, error in enumerate(errors) if error is None]
        index: list[list[int]] = [[] for _ in errors]
        confidence: list[list[float]] = [[] for _ in errors]
        if ok:
            model_input = pixels_to_model_input(b"".join(pixels[i] for i in ok), len(ok), self.size)
            idx, conf = top_k(self.clf.probabilities(model_input), self.k)
            for i, cs, ps in zip(ok, idx.tolist(), conf.tolist()):
                index[i], confidence[i] = cs, ps
        return pa.table(
            {
                "rel": batch.column("rel"),
                "error": batch.column("error"),
                "index": pa.array(index, pa.list_(pa.int32())),
                "confidence": pa.array(confidence, pa.list_(pa.float64())),
            }
        )
