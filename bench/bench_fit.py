"""Top-1 accuracy of each fit on photo-shaped versions of the validation images.

    python bench/bench_fit.py [--models-dir models] [--model NAME] [--limit N] [--out FILE.json]

The shipped models only ever saw 32x32 images, and the validation split is 32x32: there every fit leaves
the image alone and the accuracy is the model's own (checked here, as "original 32x32"). To see what a
fit does to a 4:3 photo, each 32x32 validation image (the 45,000/5,000 split with seed 42 the model
records) is made into a 640x480 JPEG (quality 90) in two ways, then decoded by ``decode_image`` with
each fit (reduced-size decoding included, as the service does). The original row sends the 32x32 pixels
as PNG, unchanged:

- "cropped from square": upscaled to 640x640 (bicubic) and the centre 640x480 kept, as a 4:3 shot of
  the same scene framed tighter would be: the top and bottom eighth are gone for every fit.
- "wider scene": the 32x32 image widened to 43x32 by mirroring its left and right edges, then upscaled
  to 640x480: the object in the middle, more background at the sides, as a 4:3 shot framed wider.

Prints a markdown table and writes JSON (by default to .cache/bench-results/fit.json, ignored by git).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import termination  # noqa: E402
from arguments import add_models_dir_argument, add_out_argument  # noqa: E402
from report_io import write_json  # noqa: E402

from inference.fits import FITS  # noqa: E402
from inference.manifest import load_manifest  # noqa: E402
from inference.preprocess import decode_image, to_model_input  # noqa: E402
from inference.runtime import OnnxClassifier  # noqa: E402
from training.cli_types import path_text, positive_int  # noqa: E402

PHOTO = (640, 480)  # width, height: 4:3


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_models_dir_argument(p)
    p.add_argument("--model", help="model name (default: the manifest's default)")
    p.add_argument("--limit", type=positive_int, help="only N validation images, evenly spaced (default: all 5,000)")
    p.add_argument(
        "--cache-dir", type=path_text, default=str(ROOT / ".cache" / "datasets"), help="dataset decode cache"
    )
    add_out_argument(p, "fit")
    return p


def cropped_from_square(image: Image.Image) -> Image.Image:
    side = PHOTO[0]
    big = image.resize((side, side), Image.Resampling.BICUBIC)
    top = (side - PHOTO[1]) // 2
    return big.crop((0, top, side, top + PHOTO[1]))


def wider_scene(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image)
    extra = round(pixels.shape[0] * PHOTO[0] / PHOTO[1]) - pixels.shape[1]  # 43 - 32 = 11 columns
    left = extra // 2
    wide = np.pad(pixels, ((0, 0), (left, extra - left), (0, 0)), mode="symmetric")
    return Image.fromarray(wide).resize(PHOTO, Image.Resampling.BICUBIC)


SCENARIOS = {"cropped from square": cropped_from_square, "wider scene": wider_scene}


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def validation_split(entry, cache_dir: str):
    from training.data import load_split

    source = entry.source
    return load_split(
        source.get("dataset", entry.dataset),
        ROOT / source["data_root"] if not Path(source["data_root"]).is_absolute() else source["data_root"],
        "val",
        val_size=source.get("val_size", 5000),
        seed=source.get("split_seed", 42),
        cache_dir=cache_dir,
        image_size=entry.input.size[0],
        fit="squash",  # the split's own 32x32 images: no fit changes them
    )


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from tqdm import tqdm

    with termination.user_input():  # an unknown model, or one whose training data is not here
        entry = load_manifest(args.models_dir).get(args.model)
        val = validation_split(entry, args.cache_dir)
    count = min(args.limit or len(val), len(val))
    # Evenly spaced over the split, which is in class order: the first N would be one class.
    picked = np.linspace(0, len(val) - 1, count).round().astype(int)
    images, labels = val.images[picked], val.labels[picked]
    classifier = OnnxClassifier(Path(args.models_dir) / entry.file, device="cpu")

    def top1(pixels: list[np.ndarray]) -> float:
        predictions = []
        for start in range(0, len(pixels), 256):
            predictions.append(classifier.logits(to_model_input(pixels[start : start + 256])).argmax(axis=1))
        return float((np.concatenate(predictions) == labels).mean())

    started = time.perf_counter()
    results = {"original 32x32": {fit: top1([decode_image(png(i), fit=fit) for i in images]) for fit in FITS}}
    for scenario, make in SCENARIOS.items():
        fitted: dict[str, list[np.ndarray]] = {fit: [] for fit in FITS}
        for image in tqdm(images, desc=scenario, unit="img"):
            data = jpeg(make(Image.fromarray(image)))
            for fit in FITS:
                fitted[fit].append(decode_image(data, fit=fit))
        results[scenario] = {fit: top1(pixels) for fit, pixels in fitted.items()}
    report = {
        "model": entry.name,
        "precision": entry.precision,
        "model_fit": entry.input.fit,
        "images": count,
        "split": f"validation, {len(val)} held out with seed {entry.source.get('split_seed', 42)}",
        "photo": {"width": PHOTO[0], "height": PHOTO[1], "format": "JPEG quality 90"},
        "top1": {scenario: {fit: round(acc, 4) for fit, acc in accs.items()} for scenario, accs in results.items()},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    write_json(args.out, report)
    print(f"Model `{entry.name}` ({entry.precision}), {count} validation images, top-1 %:\n")
    print("| images | " + " | ".join(FITS) + " |")
    print("|---|" + "---:|" * len(FITS))
    for scenario, accs in results.items():
        print(f"| {scenario} | " + " | ".join(f"{100 * accs[fit]:.2f}" for fit in FITS) + " |")
    return 0


if __name__ == "__main__":
    termination.run(main)
