"""Knowledge distillation: the loss, the teacher's targets, and a run that learns from a trained checkpoint."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_overrides, torchrun, train_straight_and_resumed
from inference.errors import UsageError
from training import distill
from training.config import ConfigError
from training.config_recipes import build_config
from training.data.arrays import ImageArrays
from training.data.augment import AugmentParams
from training.data.loader import TensorLoader
from training.data.targets import DistilledTargets, hard_labels, part_of
from training.engine import train


def _stopped_after_its_first_epoch(config, run, monkeypatch) -> None:
    """``config`` trained into ``run`` and interrupted once its first epoch is saved, as Ctrl-C would."""
    from training.engine import Trainer

    original = Trainer._end_epoch

    def interrupt(self, record):
        original(self, record)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_end_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(config, run)
    monkeypatch.setattr(Trainer, "_end_epoch", original)


def test_distill_loss_is_the_weighted_sum_of_cross_entropy_and_softened_kl():
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    target = DistilledTargets(labels, teacher)
    ce = F.cross_entropy(student, labels, label_smoothing=0.1)
    p = F.softmax(teacher / 3, 1)
    kl = (p * (p.log() - F.log_softmax(student / 3, 1))).sum(1).mean()
    got = distill.distill_loss(student, target, label_smoothing=0.1, weight=0.25, temperature=3.0)
    assert torch.allclose(got, 0.75 * ce + 0.25 * 9 * kl, atol=1e-6)
    assert torch.allclose(distill.distill_loss(student, target, 0.1, 0.0, 3.0), ce)
    # a student that answers as the teacher does has nothing left to learn from it
    assert distill.distill_loss(teacher, target, 0.0, 1.0, 3.0).abs() < 1e-6


def test_targets_slice_per_micro_batch_and_count_accuracy_on_the_labels():
    target = DistilledTargets(torch.arange(8), torch.arange(16.0).reshape(8, 2))
    part = part_of(target, slice(2, 5))
    assert isinstance(part, DistilledTargets)
    assert part.labels.tolist() == [2, 3, 4] and part.teacher[:, 0].tolist() == [4.0, 6.0, 8.0]
    assert torch.equal(hard_labels(target), target.labels)


class _LeftHeavy(nn.Module):
    """Answers differently for an image and its mirror: the mean of the left and right halves' brightness."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.stack([x[..., :half].mean((1, 2, 3)), 2 * x[..., half:].mean((1, 2, 3))], 1)


def test_teacher_logits_average_each_image_with_its_mirror():
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    model = _LeftHeavy()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    plain = distill.teacher_logits(model, images, 2, torch.device("cpu"), bf16=False, mirror=False)
    mirrored = distill.teacher_logits(model, images, 2, torch.device("cpu"), bf16=False, mirror=True)
    assert torch.allclose(plain, model(x), atol=1e-6)
    assert torch.allclose(mirrored, (model(x) + model(x.flip(3))) / 2, atol=1e-6)
    assert not torch.allclose(plain, mirrored)


def test_each_training_batch_carries_the_teacher_logits_of_its_own_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 4, 4, 3), dtype=np.uint8)
    data = ImageArrays(images, rng.integers(0, 3, 40), ["a", "b", "c"])
    # the teacher's "logit" of an image is its brightness, which the batch's images show again
    teacher = torch.from_numpy(images.reshape(40, -1).astype(np.float32).mean(1, keepdims=True))
    no_change = AugmentParams(crop_padding=0, flip=False)
    loader = TensorLoader(data, 8, train=True, augment=no_change, teacher=teacher, seed=3)
    batches = list(loader)
    assert len(batches) == 5
    for x, y in batches:
        assert isinstance(y, DistilledTargets)
        assert torch.allclose(x.mean((1, 2, 3)) * 255, y.teacher[:, 0], atol=1e-3)
    # validation batches (train=False) stay plain labels
    x, y = next(iter(TensorLoader(data, 8, teacher=teacher)))
    assert isinstance(y, torch.Tensor)
    with pytest.raises(ValueError, match="3 teacher logits for 40 images"):
        TensorLoader(data, 8, train=True, teacher=teacher[:3])


def student_overrides(image_folder, tmp_path, teacher, **extra) -> list[str]:
    return tiny_overrides(
        image_folder,
        tmp_path / "cache",
        **{"model.name": "airbench94", "model.args": "{widths: [8, 8, 8]}"},
        distill_from=str(teacher),
        micro_batch_size=8,
        **extra,
    )


def test_a_student_learns_from_a_trained_run_and_resumes_on_its_kept_targets(
    image_folder, tiny_run, tmp_path, monkeypatch
):
    calls, losses = [], []
    compute, loss = distill.teacher_logits, distill.distill_loss

    def count(*args, **kwargs):
        calls.append(1)
        return compute(*args, **kwargs)

    def spy(logits, target, label_smoothing, weight, temperature, **kwargs):
        losses.append((weight, temperature))
        return loss(logits, target, label_smoothing, weight, temperature, **kwargs)

    monkeypatch.setattr(distill, "teacher_logits", count)
    monkeypatch.setattr("training.engine.distill_loss", spy)
    overrides = student_overrides(
        image_folder, tmp_path, tiny_run, epochs=3, distill_weight=0.7, distill_temperature=2.5
    )
    a, b = train_straight_and_resumed("airbench94_cpu", overrides, tmp_path, monkeypatch)
    # once for each run; the resumed one read its targets back from its folder
    assert len(calls) == 2
    assert losses and set(losses) == {(0.7, 2.5)}
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    kept = torch.load(tmp_path / "straight" / distill.TEACHER_FILE, weights_only=True)
    assert kept["logits"].shape == (45, 3) and kept["mirror"] is True
    assert a["meta"]["teacher"]["sha256"] == kept["sha256"] == a["meta"]["teacher"]["sha256"]
    assert a["meta"]["teacher"]["checkpoint"].endswith("best.pt")
    # the exported model's card names its teacher
    from export.pipeline import export_checkpoint
    from inference.manifest import load_manifest

    export_checkpoint(tmp_path / "straight" / "best.pt", "student", "fp32", tmp_path / "models", cache_dir=None)
    card = load_manifest(tmp_path / "models").get("student")
    assert card.source["teacher"] == a["meta"]["teacher"]


def test_a_teacher_of_another_split_or_other_classes_is_refused(image_folder, tiny_run, tmp_path):
    other_split = student_overrides(image_folder, tmp_path, tiny_run, epochs=2, **{"data.val_size": 12})
    with pytest.raises(distill.TeacherError, match="another split"):
        train(build_config("airbench94_cpu", other_split), tmp_path / "split")
    meta = torch.load(tiny_run / "best.pt", weights_only=True)["meta"]
    with pytest.raises(distill.TeacherError, match="has classes"):
        distill.check_teacher({**meta, "classes": ["x", "y", "z"]}, meta, tiny_run)
    with pytest.raises(distill.TeacherError, match="takes 64-pixel images"):
        distill.check_teacher({**meta, "input_size": 64}, meta, tiny_run)
    with pytest.raises(distill.TeacherError, match="an exported ONNX model"):
        train(
            build_config("airbench94_cpu", student_overrides(image_folder, tmp_path, "models/x.onnx")), tmp_path / "o"
        )
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(
            build_config("airbench94_cpu", student_overrides(image_folder, tmp_path, tmp_path / "none.pt")),
            tmp_path / "x",
        )


def test_a_teacher_that_cannot_be_used_is_refused_before_the_dataset_is_read(image_folder, tmp_path, monkeypatch):
    def read(*_args, **_kwargs):
        raise AssertionError("the dataset was read first")

    monkeypatch.setattr("training.trainer_setup.load_data", read)
    with pytest.raises(FileNotFoundError, match=r"train.distill_from: no checkpoint at .*none.pt"):
        train(build_config("airbench94_cpu", student_overrides(image_folder, tmp_path, tmp_path / "none.pt")), tmp_path)
    with pytest.raises(distill.TeacherError, match="an exported ONNX model"):
        train(build_config("airbench94_cpu", student_overrides(image_folder, tmp_path, "models/x.onnx")), tmp_path)
    # where the run folder keeps the teacher's logits the run can go on without it: the dataset is read
    (tmp_path / distill.TEACHER_FILE).write_bytes(b"kept")
    with pytest.raises(AssertionError, match="dataset was read first"):
        train(build_config("airbench94_cpu", student_overrides(image_folder, tmp_path, tmp_path / "none.pt")), tmp_path)


def test_distillation_does_not_combine_with_mixup(image_folder, tmp_path, tiny_run):
    with pytest.raises(ConfigError, match="does not combine with Mixup"):
        build_config("airbench94_cpu", student_overrides(image_folder, tmp_path, tiny_run, mixup_alpha=0.2))


@pytest.mark.parametrize("teacher_now", ["gone", "changed"])
def test_a_run_resumes_on_its_kept_targets_when_the_teacher_is_gone_or_changed(
    image_folder, tiny_run, tmp_path, caplog, monkeypatch, teacher_now
):
    """``training resume`` goes on with the teacher's logits the run started with, whether the teacher's file is
    gone or has changed since (its run trained on): a resume continues the run it was."""
    from training.resume import resume

    teacher = tmp_path / "teacher.pt"
    shutil.copy(tiny_run / "best.pt", teacher)
    overrides = student_overrides(image_folder, tmp_path, teacher, epochs=2, lookahead_every=2)  # 4 steps in all
    config = build_config("airbench94_cpu", overrides)
    _stopped_after_its_first_epoch(config, tmp_path / "run", monkeypatch)
    if teacher_now == "gone":
        teacher.unlink()
    else:
        shutil.copy(tiny_run / "last.pt", teacher)  # another checkpoint of the teacher's run: other logits
    kept = torch.load(tmp_path / "run" / distill.TEACHER_FILE, weights_only=True)
    resume(tmp_path / "run")
    said = "is gone: the run continues" if teacher_now == "gone" else "has changed since the run started"
    assert said in caplog.text
    assert torch.load(tmp_path / "run" / distill.TEACHER_FILE, weights_only=True)["sha256"] == kept["sha256"]
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("junk", [b"not a torch file", None])
def test_kept_logits_that_cannot_be_read_are_computed_again(tiny_run, tmp_path, caplog, junk):
    meta = torch.load(tiny_run / "best.pt", weights_only=True)["meta"]
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    kept = tmp_path / distill.TEACHER_FILE
    if junk is None:
        torch.save({"something": torch.zeros(2)}, kept)
    else:
        kept.write_bytes(junk)
    logits, record = distill.load_or_compute(
        str(tiny_run), tmp_path, meta, images, batch_size=4, device=torch.device("cpu"), bf16=False, mirror=True
    )
    assert logits.shape == (5, 3) and record["checkpoint"].endswith("best.pt")
    assert "computed again" in caplog.text
    assert torch.equal(torch.load(kept, weights_only=True)["logits"], logits)


def test_under_torchrun_one_rank_runs_the_teacher_and_the_other_reads_its_logits(image_folder, tiny_run, tmp_path):
    # one step a rank: too few for the recipe's lookahead, which this is not about
    overrides = student_overrides(image_folder, tmp_path, tiny_run, epochs=1, threads=1, lookahead_every=0)
    result = torchrun("train", "--recipe", "airbench94_cpu", "--out", str(tmp_path / "ddp"), "--set", *overrides)
    assert result.stderr.count("logits for 45 training images") == 1, result.stderr[-3000:]
    kept = torch.load(tmp_path / "ddp" / distill.TEACHER_FILE, weights_only=True)
    best = torch.load(tmp_path / "ddp" / "best.pt", weights_only=True)
    assert best["meta"]["teacher"] == kept["teacher"] and kept["logits"].shape == (45, 3)


def test_a_teacher_the_run_itself_writes_over_is_refused(image_folder, tiny_run, tmp_path):
    """Distilling from the run folder being trained (a --force over the teacher's own run): the run replaces that
    best.pt with the student's, and a resume would then learn from the student itself."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for teacher in (run, run / "best.pt", run / "last.pt"):
        with pytest.raises(distill.TeacherError, match="a checkpoint this run writes over: copy it out of"):
            distill.teacher_file(str(teacher), run)
    assert distill.teacher_file(str(run), tmp_path / "student") == run / "best.pt"


def _kept_logits(teacher, run, meta, images, resuming):
    """``load_or_compute`` for a student ``run`` of ``meta`` on ``images``, on the CPU."""
    return distill.load_or_compute(
        str(teacher),
        run,
        meta,
        images,
        batch_size=4,
        device=torch.device("cpu"),
        bf16=False,
        mirror=True,
        resuming=resuming,
    )


def test_a_resume_keeps_its_targets_when_the_teacher_file_has_changed(tiny_run, tmp_path, caplog):
    """A teacher trained on (or replaced) after the student started: the resumed student goes on with the logits
    it started with, as it would have; a new run in the folder takes the teacher as it is now."""
    teacher = tmp_path / "teacher.pt"
    shutil.copy(tiny_run / "best.pt", teacher)
    ckpt = torch.load(teacher, weights_only=True)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)

    def logits(resuming: bool) -> torch.Tensor:
        return _kept_logits(teacher, tmp_path / "run", ckpt["meta"], images, resuming)[0]

    started = logits(False)
    for weights in ("model", "ema"):  # the head's, sharper
        if ckpt.get(weights):
            ckpt[weights] = {k: v * 3 if v.ndim == 2 else v for k, v in ckpt[weights].items()}
    torch.save(ckpt, teacher)
    assert torch.equal(logits(True), started)
    assert "has changed since the run started: the run continues on the logits it started with" in caplog.text
    assert not torch.equal(logits(False), started)


def test_a_new_run_whose_teacher_is_missing_is_not_taught_by_the_logits_another_teacher_left(tiny_run, tmp_path):
    """A run started over (--force) in a folder whose kept logits came from another teacher, with distill_from
    mistyped or deleted: it trained on the old teacher's logits, with a warning that it "continues"."""
    meta = torch.load(tiny_run / "best.pt", weights_only=True)["meta"]
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    teacher = tmp_path / "teacher.pt"
    shutil.copy(tiny_run / "best.pt", teacher)

    def logits(source, resuming=False):
        return _kept_logits(source, tmp_path / "run", meta, images, resuming)

    kept = logits(teacher)[0]
    said = r"no checkpoint at .*mistyped\.pt.*another teacher's \(.*teacher\.pt\)"
    with pytest.raises(FileNotFoundError, match=said):
        logits(tmp_path / "mistyped.pt")
    teacher.unlink()
    with pytest.raises(FileNotFoundError, match="another teacher's"):
        logits(tmp_path / "other.pt")
    # the teacher they were computed from, gone: its logits are still its own, for a resume and a new run alike
    assert torch.equal(logits(teacher)[0], kept) and torch.equal(logits(teacher, resuming=True)[0], kept)


@pytest.mark.parametrize(
    "settings, said",
    [
        ({"batch_size": 48}, r"batch_size 48 exceeds the 45 training images: set batch_size to 40 \(micro_batch"),
        ({"lookahead_every": 100}, "train.lookahead_every 100 is more than the run's 4 optimizer steps"),
    ],
    ids=["batch", "lookahead"],
)
def test_a_run_too_short_for_its_settings_is_refused_before_the_teachers_pass(
    image_folder, tiny_run, tmp_path, monkeypatch, settings, said
):
    """The teacher's pass over the training images (minutes on a real dataset) came first, then the refusal."""

    def teach(*args, **kwargs):
        raise AssertionError("the teacher ran first")

    monkeypatch.setattr("training.trainer_setup.load_or_compute", teach)
    config = build_config("airbench94_cpu", student_overrides(image_folder, tmp_path, tiny_run, epochs=2, **settings))
    with pytest.raises(UsageError, match=said):
        train(config, tmp_path / "run")


def test_a_resume_on_changed_data_is_refused_as_such_before_the_teachers_pass(
    image_folder, tiny_run, tmp_path, monkeypatch
):
    """A distilling run resumed after its data changed came to the teacher first: refused as if the teacher were at
    fault ("has classes ...", "trained on other images"), or, a teacher that names no images, only once its pass
    over the new images had replaced the logits the run keeps."""
    from training.resume import resume

    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    config = build_config("airbench94_cpu", student_overrides(data, tmp_path, tiny_run, epochs=2, lookahead_every=2))
    _stopped_after_its_first_epoch(config, tmp_path / "run", monkeypatch)
    kept = (tmp_path / "run" / distill.TEACHER_FILE).read_bytes()

    def teach(*args, **kwargs):
        raise AssertionError("the teacher came first")

    monkeypatch.setattr("training.trainer_setup.load_or_compute", teach)
    (data / "alpha").rename(data / "aardvark")  # the same images, another class name
    with pytest.raises(ConfigError, match=r"was trained on other data than .*classes \['alpha', 'beta', 'gamma'\]"):
        resume(tmp_path / "run")
    assert (tmp_path / "run" / distill.TEACHER_FILE).read_bytes() == kept


def test_a_teacher_at_weight_0_is_not_run(image_folder, tiny_run, tmp_path, monkeypatch):
    """At distill_weight 0 the config warns that the teacher is unused, yet the run still passed it over every
    training image (minutes on CIFAR) and kept its logits in the run folder."""
    calls = []
    monkeypatch.setattr(distill, "teacher_logits", lambda *args, **kwargs: calls.append(1))
    config = build_config(
        "airbench94_cpu", student_overrides(image_folder, tmp_path, tiny_run, epochs=3, distill_weight=0)
    )
    train(config, tmp_path / "run")
    assert calls == [] and not (tmp_path / "run" / distill.TEACHER_FILE).exists()
    assert (tmp_path / "run" / "best.pt").is_file()
