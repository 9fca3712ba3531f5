"""Raw emotion names from any dataset -> the canonical class indexes of a run.

Datasets spell the same emotion many ways (`ANGER`, `angry`, `Happiness`, `joy`);
`LabelMapper` folds them onto the canonical names and counts what it drops
(unmapped names such as `contempt`, and classes the run leaves out), so the fetch
metrics say exactly which images never entered the pipeline.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

from fersynth.config import CANONICAL_CLASSES
from fersynth.errors import DataError

# Every spelling the built-in sources use; `label_aliases` in params extends or overrides it.
SYNONYMS: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "scared": "fear",
    "happiness": "happy",
    "happy": "happy",
    "joy": "happy",
    "neutral": "neutral",
    "neutrality": "neutral",
    "sadness": "sad",
    "sad": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
}

# FER2013's CSV codes emotions as integers in this order (not alphabetical: 4 is sad, 6 is neutral).
FER2013_CSV_EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def normalize_label(raw: str) -> str:
    """Lower case, trimmed, inner runs of spaces/punctuation as one underscore (also a safe metric-key part)."""
    return re.sub(r"[^0-9a-z]+", "_", raw.strip().lower()).strip("_")


class LabelMapper:
    """Map raw label names to indexes into `classes`; count every name it drops."""

    def __init__(self, classes: Sequence[str], aliases: Mapping[str, str] | None = None) -> None:
        self.classes = tuple(classes)
        self.dropped: Counter[str] = Counter()
        self._table = dict(SYNONYMS)
        for raw, target in (aliases or {}).items():
            if target not in CANONICAL_CLASSES:
                raise DataError(
                    f"label alias {raw!r} -> {target!r}: {target!r} is not a canonical class {list(CANONICAL_CLASSES)}"
                )
            self._table[normalize_label(raw)] = target
        self._index = {name: i for i, name in enumerate(self.classes)}

    def canonical(self, raw: str) -> str | None:
        """The canonical name `raw` stands for, or None when it names no known emotion."""
        return self._table.get(normalize_label(raw))

    def index(self, raw: str) -> int | None:
        """Class index of `raw`, or None (and the drop counted) when it is unmapped or not in `classes`."""
        canonical = self.canonical(raw)
        index = self._index.get(canonical) if canonical else None
        if index is None:
            self.dropped[normalize_label(raw) or "empty"] += 1
        return index
