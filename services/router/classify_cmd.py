"""`switchboard classify FILE`: categorise JSON Lines, and measure the classifier on labelled ones.

    switchboard classify FILE [--eval] [--config PATH] [--threshold P]

FILE ("-" for stdin) holds one JSON object per line with "text" and optionally "subject",
"channel", "lang" (a language hint, e.g. the true language or a Telegram language_code) and "id".
Blank lines are skipped. For every input line one JSON line goes to stdout, in input order:

    {"category": "delivery", "confidence": 0.93, "language": "en"}      (+ "id" when given)

Whenever lines carry a "category" label they are scored and a table goes to **stderr** (stdout
stays valid JSON Lines, unchanged): macro-F1, accuracy and count per language and overall, then
per-category precision/recall/F1, the confusion matrix (true category × predicted) and the first
misclassified lines. So
``switchboard classify tests/data/classify/holdout.jsonl`` is also the evaluation. --eval asks
for the table explicitly and complains (on stderr, exit 0) when no line is labelled.
Without --config the default categories and all supported languages (default "en") are used;
with it, the business's categories, keywords, languages and default language.

Exit codes: 0 done; 2 unreadable file, bad JSON or a line that is not an object with a text
(every bad line is named by its number, nothing is written to stdout).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any, NoReturn

from services.router.classifier import DEFAULT_CATEGORIES, Classifier
from services.router.language import detect_language
from shared.vocabulary import LANGUAGES as SUPPORTED_LANGUAGES

MAX_REPORTED_ERRORS = 20


class InputError(Exception):
    """The input file is not usable; the message names the offending line(s)."""


def parse_jsonl(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Records from JSON Lines; raises InputError naming every bad line (up to a limit)."""
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {lineno}: invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"line {lineno}: expected a JSON object, got {type(obj).__name__}")
        elif not isinstance(obj.get("text"), str) and not isinstance(obj.get("subject"), str):
            problems.append(f'line {lineno}: "text" must be a string')
        elif any(k in obj and obj[k] is not None and not isinstance(obj[k], str)
                 for k in ("subject", "channel", "lang", "category")):
            bad = next(k for k in ("subject", "channel", "lang", "category")
                       if k in obj and obj[k] is not None and not isinstance(obj[k], str))
            problems.append(f'line {lineno}: "{bad}" must be a string')
        else:
            obj["_line"] = lineno
            records.append(obj)
        if len(problems) >= MAX_REPORTED_ERRORS:
            problems.append("(stopped after too many errors)")
            break
    if problems:
        raise InputError("\n".join(problems))
    return records


def predict(records: Sequence[Mapping[str, Any]], classifier: Classifier | None = None,
            languages: Sequence[str] = SUPPORTED_LANGUAGES, default_language: str = "en") -> list[dict[str, Any]]:
    """One output record per input: category, confidence, language (and the input's id)."""
    clf = classifier or Classifier()
    out: list[dict[str, Any]] = []
    for rec in records:
        text = rec.get("text") or ""
        subject = rec.get("subject")
        hints = [rec["lang"]] if rec.get("lang") else []
        guess = detect_language(text or subject or "", list(languages), default_language, hints)
        result = clf.classify(text, subject=subject, language=guess.code, channel=rec.get("channel"))
        row: dict[str, Any] = {"category": result.category, "confidence": result.confidence, "language": guess.code}
        if "id" in rec:
            row = {"id": rec["id"], **row}
        out.append(row)
    return out


def _f1_table(pairs: Sequence[tuple[str, str]]) -> dict[str, dict[str, float]]:
    labels = sorted({g for g, _ in pairs} | {p for _, p in pairs})
    table: dict[str, dict[str, float]] = {}
    for c in labels:
        tp = sum(1 for g, p in pairs if g == c and p == c)
        fp = sum(1 for g, p in pairs if g != c and p == c)
        fn = sum(1 for g, p in pairs if g == c and p != c)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        table[c] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                    "support": sum(1 for g, _ in pairs if g == c)}
    return table


def macro_f1(pairs: Sequence[tuple[str, str]]) -> float:
    """Unweighted mean F1 over every label that occurs as truth or prediction (sklearn's macro)."""
    table = _f1_table(pairs)
    return round(sum(v["f1"] for v in table.values()) / len(table), 4) if table else 0.0


def evaluate(records: Sequence[Mapping[str, Any]], classifier: Classifier | None = None,
             languages: Sequence[str] = SUPPORTED_LANGUAGES, default_language: str = "en",
             predictions: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Classify labelled records and score them.

    Returns {"n", "macro_f1", "accuracy", "languages": {lang: {"n", "macro_f1", "accuracy"}},
    "categories": {cat: {"precision", "recall", "f1", "support"}}, "confusion": {truth: {pred: n}},
    "errors": [...]}, and "kinds" ({kind: {"n", "macro_f1", "accuracy"}}) when records carry a "kind"
    (plain, hard, translit, mixed, voicemail in the blind sets). Records are grouped by their "lang" field (the detected language otherwise).
    Records without a "category" are ignored. ``predictions`` (parallel to ``records``) skips
    classifying again when the caller already has them.
    """
    if predictions is not None:
        pairs_in = [(r, p) for r, p in zip(records, predictions, strict=True) if r.get("category")]
        labelled = [r for r, _ in pairs_in]
        predictions = [p for _, p in pairs_in]
    else:
        labelled = [r for r in records if r.get("category")]
        predictions = predict(labelled, classifier, languages, default_language)
    pairs: list[tuple[str, str]] = []
    by_lang: dict[str, list[tuple[str, str]]] = defaultdict(list)
    by_kind: dict[str, list[tuple[str, str]]] = defaultdict(list)
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    errors: list[dict[str, Any]] = []
    for rec, pred in zip(labelled, predictions, strict=True):
        truth, guess = str(rec["category"]), pred["category"]
        pairs.append((truth, guess))
        by_lang[rec.get("lang") or pred["language"]].append((truth, guess))
        if rec.get("kind"):
            by_kind[str(rec["kind"])].append((truth, guess))
        confusion[truth][guess] += 1
        if truth != guess:
            errors.append({"line": rec.get("_line"), "lang": rec.get("lang") or pred["language"], "expected": truth,
                           "predicted": guess, "confidence": pred["confidence"],
                           "text": " ".join(str(rec.get("text") or "").split())[:100]})
    return {
        "n": len(pairs),
        "macro_f1": macro_f1(pairs),
        "accuracy": round(sum(g == p for g, p in pairs) / len(pairs), 4) if pairs else 0.0,
        "languages": {lang: {"n": len(p), "macro_f1": macro_f1(p),
                             "accuracy": round(sum(g == q for g, q in p) / len(p), 4)}
                      for lang, p in sorted(by_lang.items())},
        "kinds": {kind: {"n": len(p), "macro_f1": macro_f1(p),
                         "accuracy": round(sum(g == q for g, q in p) / len(p), 4)}
                  for kind, p in sorted(by_kind.items())},
        "categories": _f1_table(pairs),
        "confusion": {t: dict(c) for t, c in sorted(confusion.items())},
        "errors": errors,
    }


def format_report(report: Mapping[str, Any]) -> str:
    lines = [f"{'language':<10}{'n':>6}{'macro-F1':>10}{'accuracy':>10}"]
    for lang, row in report["languages"].items():
        lines.append(f"{lang:<10}{row['n']:>6}{row['macro_f1']:>10.3f}{row['accuracy']:>10.3f}")
    lines.append(f"{'overall':<10}{report['n']:>6}{report['macro_f1']:>10.3f}{report['accuracy']:>10.3f}")
    lines.append("")
    if report.get("kinds"):
        lines.append(f"{'kind':<10}{'n':>6}{'macro-F1':>10}{'accuracy':>10}")
        for kind, row in report["kinds"].items():
            lines.append(f"{kind:<10}{row['n']:>6}{row['macro_f1']:>10.3f}{row['accuracy']:>10.3f}")
        lines.append("")
    lines.append(f"{'category':<12}{'support':>8}{'precision':>11}{'recall':>8}{'F1':>8}")
    for cat, row in report["categories"].items():
        lines.append(f"{cat:<12}{row['support']:>8}{row['precision']:>11.3f}{row['recall']:>8.3f}{row['f1']:>8.3f}")
    lines.append("")
    lines.extend(format_confusion(report["confusion"]))
    if report["errors"]:
        lines.append("")
        lines.append(f"{len(report['errors'])} misclassified:")
        for e in report["errors"][:MAX_REPORTED_ERRORS]:
            lines.append(f"  line {e['line']} [{e['lang']}] {e['expected']} -> {e['predicted']} "
                         f"({e['confidence']:.2f}): {e['text']}")
    return "\n".join(lines)


def format_confusion(confusion: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Rows are the true category, columns the predicted one: where each category's messages went."""
    labels = sorted(set(confusion) | {p for row in confusion.values() for p in row})
    width = max([9, *(len(c) + 2 for c in labels)])
    lines = ["confusion (rows: true category, columns: predicted)",
             f"{'':<12}" + "".join(f"{c:>{width}}" for c in labels)]
    for truth in labels:
        row = confusion.get(truth, {})
        lines.append(f"{truth:<12}" + "".join(f"{row.get(p, 0):>{width}}" for p in labels))
    return lines


class _ArgParseExit(Exception):
    def __init__(self, code: int):
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse that writes to the given streams and returns instead of calling sys.exit()."""

    def __init__(self, out: IO[str], err: IO[str], **kwargs: Any):
        super().__init__(**kwargs)
        self._out, self._err = out, err

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            (self._err if file is sys.stderr or file is self._err else self._out).write(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._err.write(message)
        raise _ArgParseExit(status)

    def error(self, message: str) -> NoReturn:
        self.print_usage(self._err)
        self.exit(2, f"switchboard classify: {message}\n")


def _arg_parser(out: IO[str], err: IO[str]) -> argparse.ArgumentParser:
    p = _Parser(out, err, prog="switchboard classify", description="Categorise JSON Lines of messages.")
    p.add_argument("file", help='JSON Lines with "text" (optional "subject", "channel", "lang"); "-" for stdin')
    p.add_argument("--eval", action="store_true",
                   help="require labels: score lines that carry a \"category\" (the table on stderr is "
                        "printed for labelled input anyway)")
    p.add_argument("--config", default=None, help="YAML config: its categories, keywords and languages")
    p.add_argument("--threshold", type=float, default=None, help="probability below which a message goes to other")
    return p


def main(argv: list[str], stdout: IO[str], stderr: IO[str]) -> int:
    try:
        args = _arg_parser(stdout, stderr).parse_args(argv)
    except _ArgParseExit as exc:  # usage error (2) or --help (0)
        return exc.code

    try:
        if args.file == "-":
            records = parse_jsonl(sys.stdin)
        else:
            with open(args.file, encoding="utf-8") as fh:
                records = parse_jsonl(fh)
    except OSError as exc:
        stderr.write(f"switchboard classify: cannot read {args.file}: {exc.strerror or exc}\n")
        return 2
    except UnicodeDecodeError as exc:
        stderr.write(f"switchboard classify: {args.file} is not UTF-8: {exc.reason}\n")
        return 2
    except InputError as exc:
        stderr.write(f"switchboard classify: {args.file}:\n{exc}\n")
        return 2

    languages: Sequence[str] = SUPPORTED_LANGUAGES
    default_language = "en"
    kwargs: dict[str, Any] = {}
    if args.threshold is not None:
        if not 0.0 <= args.threshold <= 1.0:
            stderr.write("switchboard classify: --threshold must be between 0 and 1\n")
            return 2
        kwargs["threshold"] = args.threshold
    if args.config:
        from services.router.classifier import build_classifier
        from services.router.macros import check_config_macros
        from shared.config import load_config
        from shared.errors import ConfigError

        try:
            config = load_config(args.config, (check_config_macros,))
        except (ConfigError, OSError) as exc:
            stderr.write(f"switchboard classify: config {args.config}: {exc}\n")
            return 2
        classifier = build_classifier(config, **kwargs)
        languages = list(config.business.languages)
        default_language = config.business.default_language
    else:
        classifier = Classifier(categories=DEFAULT_CATEGORIES, **kwargs)

    rows = predict(records, classifier, languages, default_language)
    for row in rows:
        stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    labelled = any(r.get("category") for r in records)
    if labelled:
        report = evaluate(records, classifier, languages, default_language, predictions=rows)
        stderr.write(format_report(report) + "\n")
    elif args.eval:
        stderr.write("switchboard classify: --eval: no line carries a \"category\" label\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:], sys.stdout, sys.stderr))
