"""What an ML engineer embedding the shipped models in their own Python code gets wrong, and is told in one line
by ``inference`` rather than answered with confident classes or a traceback from deep inside numpy, Pillow or
ONNX Runtime."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from inference.errors import UsageError
from inference.pixel_modes import to_rgb_image
from inference.preprocess import decode_image, decode_pixels, to_model_input
from inference.runtime import ModelFileError, OnnxClassifier, SessionSettings, read_card, top_k

MODEL = ROOT / "models" / "resnet9-half-cifar10-int8.onnx"


@pytest.fixture(scope="module")
def classifier() -> OnnxClassifier:
    return OnnxClassifier(MODEL, device="cpu")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 10)).save(buffer, "PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- model input values
@pytest.mark.parametrize(
    ("value", "said"),
    [(np.nan, "got NaN"), (np.inf, "got values from 0 to inf"), (200.0, "got values from 0 to 200"), (-1.5, "-1.5")],
)
def test_values_no_image_scaled_to_0_1_can_have_are_refused_not_answered(classifier, value, said):
    """NaN, and pixels left on 0-255 or normalised by hand (the graph normalises itself), were answered with a
    confident class (NaN: 0.92 for deer)."""
    batch = np.zeros((2, 3, 32, 32), dtype=np.float32)
    batch[1, 0, 5, 5] = value
    for call in (classifier.logits, classifier.probabilities):
        with pytest.raises(UsageError, match=rf"in \[0, 1\] \(pixel / 255.*{said}.*to_model_input") as info:
            call(batch)
        assert "\n" not in str(info.value)


def test_the_ends_of_the_range_and_an_empty_batch_still_run(classifier):
    assert classifier.probabilities(np.ones((1, 3, 32, 32), dtype=np.float32)).shape == (1, 10)
    assert classifier.probabilities(np.zeros((0, 3, 32, 32), dtype=np.float32)).shape == (0, 10)


# ---------------------------------------------------------------------------------------------- top_k
def test_top_k_of_one_images_probabilities_says_how_to_make_a_row_of_them():
    with pytest.raises(
        UsageError, match=r"probabilities \[N, classes\].*got shape \[3\]: one image's are probs\[None\]"
    ):
        top_k(np.array([0.2, 0.5, 0.3]), 2)


@pytest.mark.parametrize("k", [2.5, "3", None])
def test_top_k_of_a_k_that_is_no_whole_number_is_refused_in_one_line(k):
    with pytest.raises(UsageError, match=rf"k must be a whole number of at least 1, got {k!r}"):
        top_k(np.array([[0.2, 0.5, 0.3]]), k)


def test_top_k_takes_numpys_integers():
    index, _ = top_k(np.array([[0.2, 0.5, 0.3]]), np.int64(2))
    assert index.tolist() == [[1, 2]]


# ---------------------------------------------------------------------------------------------- session settings
@pytest.mark.parametrize("threads", [0, -1, 1025, "4", 2.0, True])
def test_a_thread_count_onnx_runtime_would_misread_or_take_minutes_over_is_refused(threads):
    """-1 went through unsaid, "4" (read from an environment variable) failed in a many-line TypeError, and
    2000 kept the model loading for minutes."""
    with pytest.raises(UsageError, match=rf"threads must be a whole number from 1 to 1024 .*got {threads!r}$"):
        SessionSettings(threads=threads)


def test_thread_counts_in_range_are_taken_numpys_too():
    assert SessionSettings(threads=np.int32(2)).threads == 2 and SessionSettings(threads=1024).threads == 1024


@pytest.mark.parametrize("count", [0, 2.5, "64"])
def test_a_max_run_images_that_is_no_positive_whole_number_is_refused_before_loading(count):
    with pytest.raises(UsageError, match=rf"max_run_images must be a whole number of at least 1 .*got {count!r}"):
        OnnxClassifier(MODEL, device="cpu", max_run_images=count)


# ---------------------------------------------------------------------------------------------- model files
@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_a_missing_model_file_is_said_to_be_missing_not_to_be_no_onnx(tmp_path, device):
    """ONNX Runtime's words were "is not an ONNX model ONNX Runtime can load (... NO_SUCHFILE ...)"."""
    with pytest.raises(ModelFileError, match=rf"^no ONNX model at {tmp_path / 'gone.onnx'}$"):
        OnnxClassifier(tmp_path / "gone.onnx", device=device)
    with pytest.raises(ModelFileError, match="^no ONNX model at"):
        read_card(tmp_path / "gone.onnx")


def test_a_models_name_given_for_its_file_says_where_its_file_is_named():
    with pytest.raises(ModelFileError, match=r"no ONNX model at resnet9-half-cifar10-int8 \(a model's name\? .*get"):
        OnnxClassifier("resnet9-half-cifar10-int8", device="cpu")


def test_a_folder_given_for_a_model_is_said_to_be_a_folder(tmp_path):
    """ONNX Runtime's words were "Protobuf parsing failed"."""
    with pytest.raises(ModelFileError, match=rf"^{tmp_path} is a folder, not an ONNX model file$"):
        OnnxClassifier(tmp_path, device="cpu")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_pipe_given_for_a_model_is_refused_without_reading_it(tmp_path):
    """ONNX Runtime opened it and waited for a writer for good."""
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    # a writer that closes at once: a reader that opened the pipe reads nothing rather than waits here for ever
    writer = threading.Thread(target=lambda: os.close(os.open(fifo, os.O_WRONLY)), daemon=True)
    writer.start()
    try:
        with pytest.raises(ModelFileError, match="is not a regular file"):
            OnnxClassifier(fifo, device="cpu")
    finally:
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # held until the writer's open has returned
        writer.join()
        os.close(reader)


# ---------------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize(
    ("given", "hint"),
    [
        (Image.new("RGB", (8, 8)), r"got Image; a PIL image is fitted by to_rgb_image\(image, size, fit=\.\.\.\)"),
        (np.zeros((8, 8, 3), np.uint8), r"got ndarray; an array of pixels is fitted by to_rgb_image\(PIL.Image"),
        ("photo.jpg", r"got str; a file's are pathlib.Path\(name\).read_bytes\(\)"),
        (Path("photo.jpg"), r"got PosixPath|got WindowsPath"),
        (None, r"got NoneType$"),
    ],
)
def test_decoding_something_other_than_a_files_bytes_says_what_it_takes(given, hint):
    """A PIL image was an AttributeError ('startswith'), a path a TypeError about bytes, an array numpy's
    "truth value of an array is ambiguous"."""
    for decode in (decode_image, decode_pixels):
        with pytest.raises(UsageError, match=rf"^image decoding takes the bytes of an image file, {hint}"):
            decode(given, fit="squash")


def test_a_memoryview_or_bytearray_of_a_file_is_decoded_as_its_bytes():
    data = _png()
    expected = decode_image(data, fit="squash")
    assert np.array_equal(decode_image(memoryview(data), fit="squash"), expected)
    assert np.array_equal(decode_image(bytearray(data), fit="squash"), expected)


@pytest.mark.parametrize("limit", [None, 0, -5, 1.5e6, True])
def test_a_pixel_limit_that_is_no_positive_whole_number_is_the_callers_error_not_the_images(limit):
    """None failed every image with a TypeError, 0 refused each as an image over the limit."""
    with pytest.raises(UsageError, match=rf"max_pixels is the most pixels .*got {limit!r}"):
        decode_image(_png(), max_pixels=limit, fit="squash")


@pytest.mark.parametrize("size", [32, (0, 32), (32, 32, 3)])
def test_fitting_a_pil_image_to_a_size_that_is_none_says_so(size):
    """``to_rgb_image`` failed with "cannot unpack non-iterable int" or Pillow's "height and width must be > 0"."""
    with pytest.raises(UsageError, match=r"size is the model input's \(height, width\)"):
        to_rgb_image(Image.new("RGB", (4, 4)), size, fit="squash")


def test_a_pil_image_classified_as_the_docs_say_gives_the_files_pixels():
    image = Image.open(io.BytesIO(_png()))
    fitted = np.asarray(to_rgb_image(image, (32, 32), fit="squash"))
    assert np.array_equal(fitted, decode_image(_png(), fit="squash"))


# ---------------------------------------------------------------------------------------------- to_model_input
def test_to_model_input_of_no_images_says_how_an_empty_batch_is_given():
    """numpy's "need at least one array to stack"."""
    with pytest.raises(UsageError, match=r"got none: an empty batch is an array \[0, H, W, 3\]"):
        to_model_input([])
    assert to_model_input(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 3, 32, 32)


def test_to_model_input_of_images_of_several_sizes_names_them():
    """numpy's "all input arrays must have the same shape"."""
    images = [np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)]
    with pytest.raises(UsageError, match=r"of one size .*got images of shapes \[16, 16, 3\], \[32, 32, 3\]"):
        to_model_input(images)


def test_to_model_input_refuses_an_out_of_another_shape_or_type():
    images = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(UsageError, match=r"out must be float32 \[2, 3, 32, 32\], got float32 \[1, 3, 32, 32\]"):
        to_model_input(images, out=np.empty((1, 3, 32, 32), np.float32))
    with pytest.raises(UsageError, match=r"got float64 \[2, 3, 32, 32\]"):
        to_model_input(images, out=np.empty((2, 3, 32, 32), np.float64))


def test_the_file_the_hint_for_a_models_name_names_is_the_models_file():
    """The hint said `load_manifest(MODELS_DIR).get(NAME).file` is the file, which is relative to the models
    folder: followed from anywhere else, it failed again with "no ONNX model at NAME.onnx"."""
    from conftest import ROOT
    from inference.manifest import load_manifest
    from inference.runtime import MODEL_FILE_OF_A_NAME

    expression = MODEL_FILE_OF_A_NAME.replace("MODELS_DIR", "models_dir").replace("NAME", "name")
    scope = {"models_dir": ROOT / "models", "load_manifest": load_manifest, "name": "resnet9-half-cifar10-int8"}
    path = eval(expression, scope)  # the hint as a user would type it
    assert OnnxClassifier(path, device="cpu").card.name == "resnet9-half-cifar10-int8"
