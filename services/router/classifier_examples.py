"""The categoriser's shipped data: labelled examples (training files, operators' corrections), the
lexicon files and the fitted model, read from ``classifier_data/``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from services.router.category_model import LinearModel, load_model
from services.router.classifier_lexicon import Term, parse_lexicon

DATA_DIR = Path(__file__).with_name("classifier_data")


@dataclass(frozen=True)
class Example:
    """A labelled message: shipped training data or an operator's correction."""

    text: str
    category: str
    subject: str | None = None
    language: str | None = None



# --------------------------------------------------------------------------------------------
# Shipped data


def _load_yaml(text: str) -> Any:
    import yaml

    # libyaml's loader when the wheel has it.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)


def parse_examples(text: str, language: str) -> list[Example]:
    """Training file (YAML): a mapping from category to a list of example messages."""
    data = _load_yaml(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"training data {language}: expected a mapping of category to messages")
    out: list[Example] = []
    for category, texts in data.items():
        for text_ in texts or ():
            if isinstance(text_, str) and text_.strip():
                out.append(Example(text_.strip(), str(category), None, language))
    return out


@lru_cache(maxsize=4)
def shipped_lexicon(data_dir: Path = DATA_DIR) -> tuple[Term, ...]:
    terms: list[Term] = []
    for path in sorted((data_dir / "lexicon").glob("*.ini")):
        terms.extend(parse_lexicon(path.read_text(encoding="utf-8"), path.stem))
    return tuple(terms)


def parse_labelled_lines(text: str) -> list[Example]:
    """Training file (JSON Lines, several languages): {"text", "category", "lang", "subject"?} a line."""
    out: list[Example] = []
    for line in text.splitlines():
        if line.strip():
            r = json.loads(line)
            out.append(Example(str(r["text"]).strip(), str(r["category"]), r.get("subject"), r.get("lang")))
    return out


def training_files(data_dir: Path = DATA_DIR) -> list[Path]:
    """train/<lang>.yaml, train/<lang>.<part>.yaml (en.chat.yaml is English) and train/*.jsonl, in one order."""
    return sorted(p for p in (data_dir / "train").glob("*.*") if p.suffix in (".yaml", ".jsonl"))


def parse_training_file(path: Path) -> list[Example]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return parse_labelled_lines(text)
    return parse_examples(text, path.stem.split(".")[0])


@lru_cache(maxsize=4)
def shipped_examples(data_dir: Path = DATA_DIR) -> tuple[Example, ...]:
    """The training set, every file of :func:`training_files`."""
    examples: list[Example] = []
    for path in training_files(data_dir):
        examples.extend(parse_training_file(path))
    return tuple(examples)


@lru_cache(maxsize=4)
def shipped_model(data_dir: Path = DATA_DIR) -> LinearModel | None:
    return load_model(data_dir)


def coerce_example(item: Example | Mapping[str, Any] | Sequence[Any]) -> Example:
    if isinstance(item, Example):
        return item
    if isinstance(item, Mapping):
        return Example(str(item["text"]), str(item["category"]), item.get("subject"),
                       item.get("language") or item.get("lang"))
    text, category = item[0], item[1]
    return Example(str(text), str(category))
