"""``--labels-from-folders``: accuracy against the parent folder names, per class and overall."""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import PurePosixPath

from inference.classes import ClassMatcher
from inference.messages import counted, display_width, pad

from .sinks import Row


class FolderAccuracy:
    """Accuracy against the parent folder names, accumulated row by row (memory: classes squared)."""

    def __init__(self, classes: list[str] | None, root_name: str, model: str) -> None:
        self.classes = classes
        self.model = model
        self.root_name = root_name
        self.matcher = ClassMatcher(classes) if classes else None
        self.images: Counter[str] = Counter()
        self.top1: Counter[str] = Counter()
        self.topk: Counter[str] = Counter()
        self.confusions: Counter[tuple[str, str]] = Counter()  # (truth, predicted)
        self.unknown: Counter[str] = Counter()
        self.failed = 0  # error rows: no prediction to compare
        self.k = 0

    def label_of(self, path: str, labels: list[str] | None = None) -> str | None:
        """The class the folder of ``path`` names. Where the model's classes are not known (a service that does
        not list them), the folder's name is its class, matched as a class name is to the ``labels`` this image
        got, so that a folder copied from macOS ("café" decomposed) or named in other case counts as that class."""
        parent = PurePosixPath(path).parent.name or self.root_name
        if self.matcher is not None:
            return self.matcher.label(parent)
        return ClassMatcher(labels or []).label(parent) or unicodedata.normalize("NFC", parent)

    def add(self, row: Row) -> None:
        if row.error is not None or not row.top_k:
            self.failed += 1
            return
        truth = self.label_of(row.path, [p.label for p in row.top_k])
        if truth is None:
            self.unknown[PurePosixPath(row.path).parent.name or self.root_name] += 1
            return
        self.k = max(self.k, len(row.top_k))
        self.images[truth] += 1
        predicted = row.top_k[0].label
        if predicted == truth:
            self.top1[truth] += 1
        else:
            self.confusions[truth, predicted] += 1
        if any(p.label == truth for p in row.top_k):
            self.topk[truth] += 1

    def _meant(self, folder: str) -> str:
        """The class a folder that names none likely meant, said beside its count (never scored as it)."""
        meant = self.matcher.suggestion(folder) if self.matcher is not None else None
        return "" if meant is None else f"; did you mean {meant}?"

    def report(self, max_confusions: int = 10) -> str:
        lines = []
        n = sum(self.images.values())
        if n:
            top1, topk = sum(self.top1.values()), sum(self.topk.values())
            head = f"accuracy against folder names ({counted(n, 'image')}): top-1 {100 * top1 / n:.2f}% ({top1}/{n})"
            if self.k > 1:
                head += f", top-{self.k} {100 * topk / n:.2f}%"
            if self.failed:
                head += f"; {counted(self.failed, 'image')} that could not be scored left out"
            lines.append(head)
            order = self.classes or sorted(self.images)
            width = max([display_width("class")] + [display_width(c) for c in order if self.images[c]])
            lines.append(f"  {pad('class', width)}  {'images':>7}  {'top-1':>7}")
            for c in order:
                if self.images[c]:
                    lines.append(
                        f"  {pad(c, width)}  {self.images[c]:>7}  {100 * self.top1[c] / self.images[c]:>6.2f}%"
                    )
            if self.confusions:
                lines.append("most frequent confusions (true -> predicted: images, share of the true class):")
                for (truth, pred), count in self.confusions.most_common(max_confusions):
                    lines.append(f"  {truth} -> {pred}: {count} ({100 * count / self.images[truth]:.1f}%)")
        elif not self.unknown:
            lines.append(f"accuracy against folder names: none, as no image could be scored ({self.failed} failed)")
        else:
            lines.append("accuracy against folder names: no scored image is in a folder named after a class")
        if self.unknown:
            names = ", ".join(f"{name!r} ({count}{self._meant(name)})" for name, count in sorted(self.unknown.items()))
            left_out = sum(self.unknown.values())
            lines.append(
                f"folder names that are not classes of model {self.model!r} (their {counted(left_out, 'image')} "
                f"{'is' if left_out == 1 else 'are'} left out of the accuracy): {names}"
            )
            if self.classes:
                lines.append(f"  the classes are: {', '.join(self.classes)}")
        return "\n".join(lines)
