"""Join trained checkpoints into one ensemble checkpoint, which evaluate, compare and export take as any other.

The members must have been trained on the same data: same classes in the same order, same dataset, images and
train/validation split, same input size and fit; otherwise the ensemble's validation figures would mix
images some members trained on. Each member keeps its own normalisation and contributes the weights that
its checkpoint serves (the EMA where the run kept one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from inference.classes import folded
from inference.errors import UsageError
from inference.fits import LEGACY_FIT, get_fit
from inference.manifest import sha256_file
from inference.messages import counted

from .checkpoint import (
    check_checkpoint_out,
    checkpoint_file,
    load_checkpoint,
    model_from_checkpoint,
    recorded_top1,
    save_model_checkpoint,
)
from .inference import check_tta, network_of
from .models import create_model
from .models.ensemble import ENSEMBLE_ARCH, Ensemble, member_spec
from .reports.samples import names_text

# Meta entries every member must share: what the ensemble's split, classes and input are.
SHARED_KEYS = ("classes", "num_classes", "dataset", "val_size", "split_seed", "input_size", "fit")


def same_root(a: str | None, b: str | None) -> bool:
    if a == b:
        return True
    if a is None or b is None:
        return False
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _shared(meta: dict, key: str):
    # A run from before runs recorded their fit used the legacy one.
    return meta.get(key, LEGACY_FIT) if key == "fit" else meta.get(key)


def _classes_differ(mine: list[str], name: str, theirs: list[str], first_name: str) -> str:
    """What two members' class lists differ in: the names each has and the other lacks, or, with the same names,
    their order (the joined network's outputs are the first member's, index by index); said first member first,
    as they were given."""
    only_mine, only_theirs = [c for c in mine if c not in theirs], [c for c in theirs if c not in mine]
    if not only_mine and not only_theirs:
        return f"the same names in another order ({names_text(theirs, 5)} against {names_text(mine, 5)})"
    return (
        f"only {first_name}: {names_text(only_theirs, 5) or 'none'}; only {name}: {names_text(only_mine, 5) or 'none'}"
    )


def check_compatible(metas: Sequence[dict], names: Sequence[str], fit_given: bool = False) -> None:
    """Refuse members trained on different data, naming the first difference. With ``fit_given`` the members'
    fits may differ: the caller has chosen the ensemble's."""
    for meta, name in zip(metas, names):
        if meta["arch"] == ENSEMBLE_ARCH:
            raise UsageError(f"{name} is already an ensemble: join its members instead")
    first, first_name = metas[0], names[0]
    # Class names compared exactly, not folded as ``samples.same_classes`` pairs two models' predictions: the
    # joined network answers with one list, the first member's, which its card and the service show. Members read
    # from the same data name their classes alike (a folder's name is read as NFC), so a "Cat" against a "cat" is
    # a member of other folders, and which name to serve is the user's to settle, not the join's to pick.
    keys = [k for k in SHARED_KEYS if not (k == "fit" and fit_given)]
    for meta, name in zip(metas[1:], names[1:]):
        for key in keys:
            mine, theirs = _shared(meta, key), _shared(first, key)
            if mine != theirs:
                hint = (
                    ": choose the ensemble's with --fit (it changes nothing where the dataset's images already "
                    "have the input size, as CIFAR's do)"
                    if key == "fit"
                    else ""
                )
                if key == "classes":
                    said = _classes_differ(mine, name, theirs, first_name)
                    raise UsageError(f"{first_name} and {name} differ in classes: {said}")
                raise UsageError(f"{first_name} and {name} differ in {key} ({theirs!r} against {mine!r}){hint}")
        # a run continued from a copy of its data elsewhere has members of two roots and one fingerprint
        fingerprint = meta.get("data_fingerprint")
        same_images = fingerprint is not None and fingerprint == first.get("data_fingerprint")
        if not same_images and not same_root(meta.get("data_root"), first.get("data_root")):
            raise UsageError(
                f"{first_name} and {name} were trained on different data ({first.get('data_root')!r} against "
                f"{meta.get('data_root')!r})"
            )


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa
    )


def check_different_networks(networks: Sequence[torch.nn.Module], files: Sequence[Path]) -> None:
    """Refuse two members that serve the same weights under two file names: a copy of a checkpoint, or a run's
    best.pt beside its last.pt where the best epoch was the last. Their average is the one network; joined, it
    would pass for an ensemble in the card and every report."""
    for i, network in enumerate(networks):
        twin = next((j for j in range(i) if _same_weights(networks[j], network)), None)
        if twin is not None:
            raise UsageError(
                f"{files[twin]} and {files[i]} hold the same weights (a copy, or a run's last.pt whose epoch was its "
                "best): an ensemble of a model with itself is that model"
            )


def _common_fingerprint(metas: Sequence[dict], fit: str) -> dict:
    """The members' fingerprint of their images, where they all recorded the same one and read them with the
    ensemble's fit: export and verify then check a moved dataset (--data) against it, as for a single run."""
    fingerprints = {m.get("data_fingerprint") for m in metas}
    fits = {_shared(m, "fit") for m in metas}
    if len(fingerprints) == 1 and None not in fingerprints and fits == {fit}:
        return {"data_fingerprint": fingerprints.pop()}
    return {}


def _where_the_data_is(ckpts: Sequence[dict]) -> dict:
    """The member whose data root (and cache) the ensemble records: the first one whose root is still there. Members
    of a run continued from a copy of its data elsewhere name two roots, and the first member's is usually the one
    that was lost: evaluate and export would ask for --data where the last member found it."""
    return next((c for c in ckpts if c["meta"].get("data_root") and Path(c["meta"]["data_root"]).exists()), ckpts[0])


def join_checkpoints(
    paths: Sequence[str | Path],
    out: str | Path,
    tta: Sequence[str] = (),
    fit: str | None = None,
    replace: bool = False,
) -> dict:
    """Write the ensemble of the checkpoints (files, or run folders for their best.pt) to ``out``; returns
    its meta. ``tta``: each member's own test-time augmentation (none for all when empty), averaged inside
    the member before the members are; a cheap member can then average views where a costly one does not.
    ``fit`` (inference.fits): how the dataset's images are fitted to the input, for members trained with
    different ones. ``replace``: write over an existing ``out``."""
    if fit is not None:
        get_fit(fit)  # an unknown name, refused naming the valid ones
    if len(paths) < 2:
        raise UsageError("an ensemble needs at least two checkpoints")
    tta = list(tta) or ["none"] * len(paths)
    if len(tta) != len(paths):
        raise UsageError(f"{counted(len(tta), 'test-time augmentation')} for {len(paths)} members: give one per member")
    for choice in tta:
        check_tta(choice)
    files = [checkpoint_file(p) for p in paths]
    check_checkpoint_out(Path(out), files, "the members", replace)
    ckpts = [load_checkpoint(f) for f in files]  # a missing file is named here
    if len({f.resolve() for f in files}) < len(files):
        raise UsageError("the same checkpoint is given twice: an ensemble of a model with itself is that model")
    metas = [c["meta"] for c in ckpts]
    check_compatible(metas, [str(f) for f in files], fit_given=fit is not None)
    networks = [model_from_checkpoint(c) for c in ckpts]
    check_different_networks(networks, files)
    first = metas[0]
    here = _where_the_data_is(ckpts)
    specs = [member_spec(m, t) for m, t in zip(metas, tta)]
    meta = {
        "arch": ENSEMBLE_ARCH,
        "model_args": {"members": specs},
        "num_classes": first["num_classes"],
        "classes": list(first["classes"]),
        # Each member normalises its own input; the ensemble passes it on as it comes.
        "mean": [0.0] * len(first["mean"]),
        "std": [1.0] * len(first["std"]),
        "input_size": first["input_size"],
        "fit": fit or first.get("fit", LEGACY_FIT),
        "dataset": first["dataset"],
        "data_root": here["meta"]["data_root"],
        "val_size": first["val_size"],
        "split_seed": first["split_seed"],
        "recipe": "ensemble(" + ", ".join(str(m.get("recipe") or m["arch"]) for m in metas) + ")",
        "cache_dir": ((here.get("config") or {}).get("data") or {}).get("cache_dir"),
        **_common_fingerprint(metas, fit or first.get("fit", LEGACY_FIT)),
        "members": [
            {
                "checkpoint": str(file),
                "checkpoint_sha256": sha256_file(file),
                "arch": m["arch"],
                "recipe": m.get("recipe"),
                "epoch": c.get("epoch"),
                "val_top1": recorded_top1(c),
                "used_ema": bool(c.get("ema")),
                "tta": t,
            }
            for file, m, c, t in zip(files, metas, ckpts, tta)
        ],
    }
    model = create_model(ENSEMBLE_ARCH, meta["num_classes"], meta["mean"], meta["std"], **meta["model_args"])
    ensemble = model.backbone
    assert isinstance(ensemble, Ensemble)  # what create_model builds for ENSEMBLE_ARCH
    for member, network in zip(ensemble.members, networks):
        network_of(member).load_state_dict(network.state_dict())
    save_model_checkpoint(meta, model, out)
    return meta


# What a report's source records of the evaluation rather than of the model: the same file read on a GPU or a CPU.
_EVALUATION_KEYS = ("path", "providers")
# What reports record since they name the checkpoint they hold: an earlier report of the same file lacks them.
_CHECKPOINT_KEYS = ("checkpoint_sha256", "checkpoint")


def _same_model(a: dict, b: dict) -> bool:
    """Whether two reports' sources (metrics.json's ``source``) name one model: the same kind of file at the same
    place holding the same training state (epoch, recorded accuracy, weights used, card). A run continued or a file
    exported again in between is another model there; a source that names no file is never taken for one."""
    if a.get("kind") is None or a.get("kind") != b.get("kind") or a.get("path") is None or b.get("path") is None:
        return False
    unshared = {k for k in _CHECKPOINT_KEYS if (k in a) != (k in b)}  # compared where both reports record them
    rest_a = {k: v for k, v in a.items() if k not in _EVALUATION_KEYS and k not in unshared}
    rest_b = {k: v for k, v in b.items() if k not in _EVALUATION_KEYS and k not in unshared}
    return rest_a == rest_b and same_root(a["path"], b["path"])


def _one_checkpoint(a: dict, b: dict) -> bool:
    """Whether two reports' sources hold one checkpoint's weights by its sha256 (a checkpoint's own, or the one an
    exported graph's card records): a checkpoint and its ONNX export, or two precisions of one export. A source
    that records none (a report written before reports kept it, a graph exported by hand) is never taken for one."""
    sha256 = a.get("checkpoint_sha256")
    return sha256 is not None and sha256 == b.get("checkpoint_sha256")


def _one_model_refusal(report: dict, other: dict, name: str, other_name: str) -> UsageError:
    """The refusal of ``report`` and ``other`` (named ``name`` and ``other_name``), reports of one model; said
    in the order given, ``report`` the one given first."""
    source, theirs = report["metrics"].get("source") or {}, other["metrics"].get("source") or {}
    views = (report["metrics"].get("tta", "none"), other["metrics"].get("tta", "none"))
    if same_root(source.get("path"), theirs.get("path")):
        epoch = f" at epoch {source['epoch']}" if source.get("epoch") is not None else ""
        model = f"{source['path']}{epoch}"
        measure = f"tta {views[0]} against {views[1]}" if views[0] != views[1] else ""
    else:  # one checkpoint under two files: itself and its export, or two exports
        sha256 = source["checkpoint_sha256"][:12]
        model = f"{source.get('path')} and {theirs.get('path')} hold the checkpoint of sha256 {sha256}"
        measure = "one file against the other"
    hint = f" (to measure {measure}, `python -m training compare` them)" if measure else ""
    return UsageError(
        f"{name} and {other_name} are reports of one model ({model}): an ensemble of a model with itself is that "
        f"model; give reports of different models{hint}"
    )


def check_different_models(reports: Sequence[dict], names: Sequence[str]) -> None:
    """Refuse two reports of one model (a copied report folder, one checkpoint evaluated twice, or a checkpoint and
    its ONNX export), or of the same predictions logit for logit (a copy of a report written before reports named
    their model, or one network's weights under two file names): their average is the one model, which the
    estimate would call an ensemble of two and credit with what it scores. As ``join_checkpoints`` refuses the
    same checkpoint twice."""
    for i, report in enumerate(reports):
        source = report["metrics"].get("source") or {}
        for j in range(i):
            other = reports[j]["metrics"].get("source") or {}
            if _same_model(other, source) or _one_checkpoint(other, source):
                raise _one_model_refusal(reports[j], report, names[j], names[i])
            same_shape = report["logits"].shape == reports[j]["logits"].shape
            if same_shape and np.array_equal(report["logits"], reports[j]["logits"]):
                raise UsageError(
                    f"{names[j]} and {names[i]} hold the same predictions, logit for logit (a copy of one report, or "
                    "one model's weights under two names): an ensemble of a model with itself is that model; give "
                    "reports of different models"
                )


def _in_first_order(report: dict, first: dict, name: str, first_name: str, order: np.ndarray | None) -> dict:
    """``report`` with its logits' columns in the first report's class order, where it lists the same classes in
    ``order`` (``samples.class_order``: the index into the first's classes of each of its own; None: in the
    first's own), after checking that both scored the same samples with the same labels."""
    if order is None:
        if report["fingerprint"] != first["fingerprint"]:
            raise _other_samples(report, first, name, first_name, "fingerprint")
        return report
    # The digest of the labels as indices into each report's own order differs for the same samples: only the
    # digests by class name can tell, which a report written before reports kept them lacks.
    if report["fingerprint_by_name"] is None or first["fingerprint_by_name"] is None:
        old = [n for n, r in ((first_name, first), (name, report)) if r["fingerprint_by_name"] is None]
        at = next(i for i, (x, y) in enumerate(zip(first["classes"], report["classes"])) if folded(x) != folded(y))
        said = f"{old[0]} was" if len(old) == 1 else "both were"
        raise UsageError(
            f"{first_name} and {name} list the same {len(first['classes'])} classes in different orders (from index "
            f"{at}: {first['classes'][at]} against {report['classes'][at]}), and {said} written by an earlier "
            f"version, whose reports cannot be matched by class name: evaluate {'it' if len(old) == 1 else 'them'} "
            "again"
        )
    if report["fingerprint_by_name"] != first["fingerprint_by_name"]:
        raise _other_samples(report, first, name, first_name, "fingerprint_by_name")
    logits = np.empty_like(report["logits"])
    logits[:, order] = report["logits"]
    return {**report, "logits": logits, "labels": order[report["labels"]], "classes": list(first["classes"])}


def _other_samples(report: dict, first: dict, name: str, first_name: str, key: str) -> UsageError:
    """The refusal of two reports on different samples, their digests under ``key`` told apart; the first
    report's said first, as given."""
    return UsageError(
        f"{first_name} and {name} are reports on different samples ({len(first['labels'])} against "
        f"{counted(len(report['labels']), 'image')}, fingerprints {first[key][:12]} and {report[key][:12]}): "
        "evaluate both on the same --data and --split"
    )


def estimate_from_reports(paths: Sequence[str | Path]) -> dict:
    """What the ensemble of the reports' models would score on their samples, from their saved logits alone:
    each member's top-1, the average's, and the average against the best member (McNemar, paired interval).
    Reports listing the same classes in other orders are averaged by class name, in the first report's order.
    A way to choose members before joining their checkpoints; the joined checkpoint's own report is the figure
    (it averages the members before, not after, any test-time augmentation)."""
    from .reports.compare import another_order_note, classes_differ
    from .reports.metrics import PAIRED_INTERVAL_METHOD, mcnemar, paired_difference_interval, softmax
    from .reports.predictions import load_predictions, logits_before_temperature
    from .reports.samples import class_order, same_classes

    if len(paths) < 2:
        raise UsageError("an ensemble needs at least two reports")
    if len({Path(p).resolve() for p in paths}) < len(paths):
        raise UsageError("the same report is given twice: an ensemble of a model with itself is that model")
    reports = [load_predictions(p) for p in paths]
    first = reports[0]
    notes = []
    for i, (path, report) in enumerate(zip(paths[1:], reports[1:]), start=1):
        same_order = same_classes(report["classes"], first["classes"])
        order = None if same_order else class_order(first["classes"], report["classes"])
        if not same_order and order is None:
            differ = classes_differ(first["classes"], report["classes"])
            raise UsageError(f"reports {paths[0]} (A) and {path} (B): {differ}")
        reports[i] = _in_first_order(report, first, str(path), str(paths[0]), order)
        if order is not None:
            notes.append(another_order_note(str(path), report["classes"], f"the first report's ({paths[0]})"))
    check_different_models(reports, [str(p) for p in paths])
    labels = first["labels"]
    # as the joined network averages them: each member's softmax of its own logits, without a graph's temperature
    probabilities = [softmax(logits_before_temperature(r)) for r in reports]
    members = [
        {
            "report": str(p),
            "tta": r["metrics"].get("tta", "none"),
            "graph_tta": (r["metrics"].get("source") or {}).get("graph_tta", "none"),
            "top1": float((pr.argmax(1) == labels).mean()),
        }
        for p, r, pr in zip(paths, reports, probabilities)
    ]
    correct = np.mean(probabilities, axis=0).argmax(1) == labels
    best = max(range(len(members)), key=lambda i: members[i]["top1"])
    best_correct = probabilities[best].argmax(1) == labels
    low, high = paired_difference_interval(best_correct, correct)
    return {
        "samples": int(labels.size),
        "members": members,
        "top1": float(correct.mean()),
        "against_best_member": {
            "member": members[best]["report"],
            "difference": float(correct.mean() - best_correct.mean()),
            "interval_95": [low, high],
            "interval_method": PAIRED_INTERVAL_METHOD,
            "mcnemar": mcnemar(best_correct, correct),
        },
        "notes": notes,
    }
