"""Put a verified graph in place and list it in the manifest, the file and its entry changed together so that
the service never finds a file its sha256 does not match; and check the name first, so that an export does not
replace a listed model's file and figures unasked."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

from inference.devices import DEVICE_KINDS, DeviceKind
from inference.errors import UsageError
from inference.interrupts import interrupts_held
from inference.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    ModelCard,
    ModelEntry,
    load_manifest,
    manifest_update,
    refuse_read_only,
    save_manifest,
    sha256_file,
)
from inference.messages import counted
from inference.precisions import unsuited_hosts

from .onnx_export import writing

log = logging.getLogger("export")


def record_entry(
    card: ModelCard,
    out: Path,
    final: Path,
    models_dir: Path,
    make_default: bool,
    default_for: Sequence[DeviceKind] = (),
    *,
    replaces: str | None,
) -> ModelEntry:
    """Move the verified graph ``out`` to ``final`` and list it in the manifest. The new manifest is made (and a
    manifest that cannot be read refused) before the file is replaced, so a refusal leaves the shipped file
    as the manifest knows it; the file and the manifest then change together (see ``_replace_listed``).

    ``replaces``: the sha256 of the entry listed under the card's name when ``check_replacement`` allowed this
    export (None: none was). The name is checked again under the manifest's lock, since another export of the
    same name may have been recorded while this one converted and measured (minutes): it is not replaced
    unasked."""
    entry = ModelEntry(**card.model_dump(), file=final.name, sha256=sha256_file(out))
    recorded = False
    try:
        with manifest_update(models_dir):  # waited for outside interrupts_held: a Ctrl-C then stops the wait
            manifest = _with_entry(entry, models_dir, make_default, default_for, replaces)
            with interrupts_held():
                _replace_listed(out, final, manifest, models_dir)
                recorded = True
    except KeyboardInterrupt as exc:  # one that arrived during the renames, acted on once they were done
        if recorded:
            exc.add_note(f"{entry.name} was recorded in {models_dir / MANIFEST_NAME} before the stop")
        raise
    warning = unsuited_hosts(entry.name, entry.precision, DEVICE_KINDS if make_default else default_for)
    if warning:
        log.warning("%s", warning)
    return entry


def _check_unchanged(path: Path, name: str, listed: str | None, replaces: str | None) -> None:
    if listed == replaces:
        return
    happened = "listed" if replaces is None else "replaced" if listed else "removed"
    raise UsageError(
        f"{name!r} was {happened} in {path} by another command while this export ran: nothing was recorded and the "
        f"verified graph was discarded; run the export again (with --replace to replace the model now listed), or "
        "give another --name"
    )


def _replace_listed(out: Path, final: Path, manifest: Manifest, models_dir: Path) -> None:
    """``out`` in place of ``final`` and ``manifest`` saved, or neither: where the manifest cannot be saved (a
    full disk), the file it lists comes back, so the shipped model still matches its sha256 and the service
    still starts. The caller holds off interrupts; only a kill between the renames can part them."""
    kept = final.with_name(f".{final.name}.kept")  # hidden: the service lists models from the manifest only
    kept.unlink(missing_ok=True)  # left by a process killed here before
    if final.is_file():
        try:
            os.link(final, kept)
        except OSError:  # a file system without hard links
            shutil.copy2(final, kept)
    try:
        os.replace(out, final)
        with writing(models_dir / MANIFEST_NAME):
            save_manifest(manifest, models_dir)
    except BaseException:
        if kept.exists():
            os.replace(kept, final)
        else:
            final.unlink(missing_ok=True)  # not listed: it would only be mistaken for a model
        raise
    kept.unlink(missing_ok=True)


def check_replacement(
    models_dir: Path,
    name: str,
    arch: str,
    classes: Sequence[str],
    precision: str,
    replace: bool = False,
    max_val_images: int | None = None,
) -> str | None:
    """Refuse, before any work, to record ``name`` over a listed model unless ``replace`` is asked for: the
    manifest keeps one entry per name, so the listed file and its measured figures would be gone, and its
    checkpoint may be long gone too. Even asked, a model of another network, classes or precision is refused,
    and so is a quick check (``max_val_images``) over figures measured on more images. Re-exporting the same kind
    of model under its name (a new training run, a calibrated FP32) is what ``replace`` is for. An unreadable
    manifest is refused here too, not after the conversion, and so is a folder in the graph's place; replacing a
    file is said. Returns the sha256 of the listed entry that may be replaced (None: nothing is listed under
    ``name``), which ``record_entry`` checks again before it records."""
    final = models_dir / f"{name}.onnx"
    if final.exists() and not final.is_file():
        raise UsageError(f"{final} is not a file (a folder?): the graph of {name!r} would be written there")
    listed = None
    if (models_dir / MANIFEST_NAME).exists():
        refuse_read_only(models_dir / MANIFEST_NAME)  # before any work, not at the end
        models = {m.name: m for m in load_manifest(models_dir, verify=False).models}
        listed = models.get(name)
        # on a case-insensitive file system (macOS, Windows; a checkout of the models there) Tiny.onnx is tiny.onnx:
        # the new graph would replace the listed model's file under it, breaking that entry's sha256
        twin = next((other for other in models if other != name and other.casefold() == name.casefold()), None)
        if twin is not None:
            raise UsageError(
                f"--name {name!r} differs from the listed {twin!r} only in case, and their files would be one on a "
                f"case-insensitive file system: give another --name (or {twin!r} with --replace)"
            )
    if listed is None:
        if final.exists():
            log.warning("%s is in no manifest entry: the new graph replaces it once verified", final)
        return None
    old = (listed.arch, list(listed.classes), listed.precision)
    if old != (arch, list(classes), precision):
        # as many classes of other names (a folder of one's own against CIFAR-10's) would read as the same kind
        other = "other " if len(classes) == len(listed.classes) and list(classes) != list(listed.classes) else ""
        # "an": each precision's name (fp32, fp16, int8) is said with a vowel sound
        raise UsageError(
            f"{name!r} is already in {models_dir / 'manifest.json'} as an {listed.precision} {listed.arch} of "
            f"{len(listed.classes)} classes; this {precision} {arch} of {len(classes)} {other}classes would replace "
            f"it: give it another --name (or take the listed one out first: python -m export remove {name})"
        )
    samples = listed.metrics.get("val_samples")
    measured = (
        f"val_top1 {100 * listed.metrics['val_top1']:.2f}% on {counted(samples, 'image')}" if samples else "its figures"
    )
    if not replace:
        raise UsageError(
            f"{name!r} is already listed in {models_dir / MANIFEST_NAME} ({measured}): pass --replace to replace "
            "its file and figures with this export, or give another --name"
        )
    if max_val_images is not None and samples and max_val_images < samples:
        raise UsageError(
            f"--max-val-images {max_val_images} would replace the figures of {name!r} ({measured}) with a quick "
            "check's: measure on all the validation images to replace it, or give another --name"
        )
    log.info("%r is listed in %s: the new graph replaces it once verified", name, models_dir / MANIFEST_NAME)
    return listed.sha256


def _with_entry(
    entry: ModelEntry, models_dir: Path, make_default: bool, default_for: Sequence[DeviceKind], replaces: str | None
) -> Manifest:
    try:
        manifest = load_manifest(models_dir, verify=False)
        listed = next((m.sha256 for m in manifest.models if m.name == entry.name), None)
        _check_unchanged(models_dir / MANIFEST_NAME, entry.name, listed, replaces)
        # A re-export keeps its place, so the listing's order (and the manifest's diff) stays as it was.
        models = [entry if m.name == entry.name else m for m in manifest.models]
        if all(m.name != entry.name for m in manifest.models):
            models.append(entry)
        default = entry.name if make_default else manifest.default
        defaults = {} if make_default else dict(manifest.defaults)  # the default everywhere, as `export default`
    except ManifestError:
        if (models_dir / "manifest.json").exists():
            raise  # never overwrite a manifest we cannot read: it may list models we would forget
        _check_unchanged(models_dir / MANIFEST_NAME, entry.name, None, replaces)
        models, default, defaults = [entry], entry.name, {}
        log.info("starting a new manifest: %s", models_dir / "manifest.json")
    defaults.update({kind: entry.name for kind in default_for})
    return Manifest(default=default, defaults=defaults, models=models)
