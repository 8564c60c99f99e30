"""The fitted linear model behind the categoriser: its features, and scoring with no ML library.

The model is linear — a one-vs-rest linear SVM as shipped, a logistic regression if the training
script is asked for one (scikit-learn, fitted at build time by ``services/router/classifier_train.py``) — over

* word skeletons, 5-letter prefixes, prefix bigrams and character 4-grams of the message (all
  through :func:`services.router.classifier.skeleton`, so Russian, Ukrainian or Bulgarian written
  in Latin letters shares features with the same words in Cyrillic), scaled to unit length so a
  long email is not more certain than an SMS;
* the hand lexicon's per-category scores as features ("lex:delivery"), so the lexicon is evidence
  the model weighs, not a rule that decides.

Its weights ship as ``classifier_data/model.json.gz``; scoring here is a sparse dot product in
plain Python, so the router neither imports scikit-learn/numpy nor fits anything at start-up. The
probabilities are temperature-scaled (the temperature fitted on cross-validated predictions), so
"confidence 0.4" means about four in ten such decisions are right, which is what the triage
threshold assumes.

The file records a digest of the training data and lexicon it was fitted on; a unit test fails
when they change and the model was not rebuilt (``make classifier-model``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Bump when the features change: the shipped model is then stale until refitted.
FEATURE_VERSION = 1
MODEL_FILE = "model.json.gz"


@dataclass(frozen=True)
class FeatureOptions:
    """How a message becomes features; chosen by cross-validation and stored with the model."""

    focus_extra: float = 0.5  # extra weight of n-grams after "but"/"still"/"the main thing"
    lexicon: bool = True
    lexicon_scale: float = 1.0
    char5: bool = False  # character 5-grams besides the 4-grams
    # The last question of a message that says more than its question gets the focus weight too:
    # "The lamp came this morning. How do I change the bulb?" asks about the lamp, not the delivery.
    question_focus: bool = False


def data_digest(data_dir: Path) -> str:
    """What the model was fitted on: the training files, the lexicon and the feature version."""
    h = hashlib.sha256(f"features v{FEATURE_VERSION}\n".encode())
    for sub in ("train", "lexicon"):
        for path in sorted((data_dir / sub).glob("*.*")):
            if path.suffix in (".yaml", ".jsonl", ".ini"):
                h.update(f"{sub}/{path.name}\n".encode())
                h.update(path.read_bytes())
    return h.hexdigest()


class LinearModel:
    """Weights per feature (one per class), intercepts and a calibration temperature."""

    def __init__(self, classes: Sequence[str], intercept: Sequence[float], weights: Mapping[str, Sequence[float]],
                 temperature: float, options: FeatureOptions, digest: str = ""):
        self.classes = tuple(classes)
        self.intercept = tuple(float(x) for x in intercept)
        self.weights = {f: tuple(w) for f, w in weights.items()}
        self.temperature = float(temperature)
        self.options = options
        self.digest = digest
        # A category the model never saw (added by config keywords) scores through its lexicon
        # feature with the weight an average trained category gives its own lexicon feature.
        own = [self.weights[f"lex:{c}"][k] for k, c in enumerate(self.classes) if f"lex:{c}" in self.weights]
        self.own_lexicon_weight = sum(own) / len(own) if own else 1.0
        self.mean_intercept = sum(self.intercept) / len(self.intercept) if self.intercept else 0.0

    def logits(self, features: Mapping[str, float], overlay: Mapping[str, Sequence[float]] | None = None) -> list[float]:
        acc = list(self.intercept)
        n = len(acc)
        weights = self.weights
        for f, v in features.items():
            row = weights.get(f)
            if row is not None:
                for k in range(n):
                    acc[k] += row[k] * v
            if overlay:
                extra = overlay.get(f)
                if extra is not None:
                    for k in range(n):
                        acc[k] += extra[k] * v
        return acc

    def score(self, grams: Iterable[str], focus: Iterable[str], dense: Mapping[str, float], norm: float,
              focus_extra: float, overlay: Mapping[str, Sequence[float]] | None = None) -> list[float]:
        """The logits of a message given as n-gram sets sharing one value, plus dense features.

        The same as :meth:`logits` of the equivalent feature dict, but the weight rows of the
        n-grams are summed column by column in C (``map(sum, zip(*rows))``) and scaled once.
        """
        acc = list(self.intercept)
        tables = [self.weights, overlay] if overlay else [self.weights]
        for table in tables:
            for group, value in ((grams, norm), (focus, norm * focus_extra)):
                if not value:
                    continue
                rows = list(filter(None, map(table.get, group)))
                if rows:
                    for k, total in enumerate(map(sum, zip(*rows, strict=True))):
                        acc[k] += total * value
            for f, v in dense.items():
                row = table.get(f)
                if row is not None:
                    for k, w in enumerate(row):
                        acc[k] += w * v
        return acc

    def to_json(self) -> dict:
        return {
            "feature_version": FEATURE_VERSION,
            "digest": self.digest,
            "classes": list(self.classes),
            "intercept": [round(x, 4) for x in self.intercept],
            "temperature": round(self.temperature, 4),
            "options": {"focus_extra": self.options.focus_extra, "lexicon": self.options.lexicon,
                        "lexicon_scale": self.options.lexicon_scale, "char5": self.options.char5,
                        "question_focus": self.options.question_focus},
            # The weights as one little-endian float32 matrix (a row per feature, a column per class)
            # and the feature names as one string: start-up parses two strings instead of ~40 000
            # JSON lists (about 4 × less CPU to load), and float32 is ample for a dot product.
            "features": "\n".join(sorted(self.weights)),
            "matrix": base64.b64encode(_le(array("f", [x for f in sorted(self.weights) for x in self.weights[f]]))
                                       .tobytes()).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> LinearModel:
        if data.get("feature_version") != FEATURE_VERSION:
            raise RuntimeError(f"category model has features v{data.get('feature_version')}, this code v{FEATURE_VERSION}:"
                               " rebuild it with `make classifier-model`")
        weights = data.get("weights")
        if weights is None:  # the compact form (to_json)
            names = data["features"].split("\n") if data["features"] else []
            flat = iter(_le(array("f", base64.b64decode(data["matrix"]))).tolist())
            # zip of one iterator n times: the rows as tuples of n, built in C.
            weights = dict(zip(names, zip(*[flat] * len(data["classes"]), strict=True), strict=True))
        return cls(data["classes"], data["intercept"], weights, data["temperature"],
                   FeatureOptions(**data.get("options", {})), data.get("digest", ""))

    def save(self, path: Path) -> None:
        raw = json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":")).encode()
        # mtime=0: the same model gives the same bytes, so a rebuild without changes is no diff.
        with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
            gz.write(raw)


def _le(a: array) -> array:
    """The array in little-endian byte order (the file's), whatever this machine's order."""
    if sys.byteorder == "big":
        a.byteswap()
    return a


def load_model(data_dir: Path) -> LinearModel | None:
    path = data_dir / MODEL_FILE
    if not path.exists():
        return None
    with gzip.open(path, "rb") as fh:
        return LinearModel.from_json(json.loads(fh.read()))


def softmax(z: Sequence[float], temperature: float = 1.0) -> list[float]:
    m = max(z)
    ex = [math.exp((v - m) / temperature) for v in z]
    s = sum(ex)
    return [v / s for v in ex]
