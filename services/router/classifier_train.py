"""Fits the categoriser's linear model at build time, and chooses its settings by cross-validation.

    python -m services.router.classifier_train --cv      # choose C and feature options, report CV scores
    python -m services.router.classifier_train --write   # fit on all training data → classifier_data/model.json.gz

(`make classifier-model` runs both.) Only the training set under classifier_data/train is used:
tests/data/classify/*.jsonl are regression sets the lexicon was tuned on, and the blind
evaluation sets are never read here.

How the settings are chosen (estimator, C, lexicon scale):

* leave one writer out (the one that chooses): each JSON Lines file under train/ is one
  independent writer's set (the spent blind sets and the later native sets, SOURCES.md); each is
  scored by a model fitted on everything else, and the mean macro-F1 over them decides. This is
  the nearest thing to a blind set the training data holds: a new writer's style, trades and
  phrasing, as a new shop's customers bring them;
* grouped (fits the temperature and is reported): stratified by language and category; much of the
  YAML data says the same thing in several languages (a batch's sentence and its translations sit
  in the same category at about the same place of each language's file). Each such cluster —
  batch, category and block of about eight positions; for the JSON Lines sets, set and block of
  five line indexes within a language — is one group, never split between training and test folds
  (StratifiedGroupKFold);
* plain (StratifiedKFold), reported beside it: optimistic, since a fold can test a sentence while
  training on its translation.

Needs the "train" extra (scikit-learn); the router itself only reads the written weights.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.router.category_model import MODEL_FILE, FeatureOptions, LinearModel, data_digest
from services.router.classifier import (
    DATA_DIR,
    DEFAULT_CATEGORIES,
    Classifier,
    Example,
    parse_training_file,
    shipped_examples,
    training_files,
)

FOLDS = 5
SEED = 17
# A linear SVM (one-vs-rest hinge loss) generalised better to writers it had not seen than the
# logistic regression did (leave-one-writer-out macro-F1, see by_writer()); its margins become
# probabilities through the same temperature-scaled softmax, fitted on cross-validated margins.
# (`--estimators logistic --C-grid 100 300 1000` compares the logistic regression, the previous
# model, on the same folds.)
ESTIMATORS = ("svm", "logistic")
C_GRID = (2.0, 4.0, 8.0)
OPTION_GRID = {"focus_extra": (0.5,), "lexicon_scale": (0.5,)}
# SVM margins are about ±1 where logistic logits run to ±10: the grid covers both scales.
TEMPERATURES = tuple(round(0.02 * k, 2) for k in range(1, 25)) + tuple(round(0.5 + 0.05 * k, 2) for k in range(71))
BLOCK = 8  # positions of a category's list in one batch file that count as one group
LINE_BLOCK = 5  # line indexes (per language) of a JSON Lines set that count as one group
MIN_DOCS = 3  # an n-gram seen in fewer training messages is mostly noise, and bloats the model (and start-up)
PRUNE_BELOW = 0.002


def example_groups(data_dir: Path = DATA_DIR) -> list[str]:
    """The CV group of every training example, in shipped_examples() order (see the module doc)."""
    groups: list[str] = []
    for path in training_files(data_dir):
        examples = parse_training_file(path)
        batch = ".".join(path.stem.split(".")[1:]) or "base"
        if path.suffix == ".jsonl":
            seen: dict[str | None, int] = {}
            for e in examples:
                k = seen.get(e.language, 0)
                seen[e.language] = k + 1
                groups.append(f"{path.stem}/{k // LINE_BLOCK}")
            continue
        sizes: dict[str, int] = {}
        for e in examples:
            sizes[e.category] = sizes.get(e.category, 0) + 1
        pos: dict[str, int] = {}
        for e in examples:
            k = pos.get(e.category, 0)
            pos[e.category] = k + 1
            blocks = max(1, round(sizes[e.category] / BLOCK))
            groups.append(f"{batch}/{e.category}/{k * blocks // sizes[e.category]}")
    return groups


def featurise(examples: Sequence[Example], options: FeatureOptions) -> list[dict[str, float]]:
    scaffold = LinearModel(DEFAULT_CATEGORIES, [0.0] * len(DEFAULT_CATEGORIES), {}, 1.0, options)
    clf = Classifier(model=scaffold)
    return [clf.evidence(e.text, e.subject, e.language).features for e in examples]


def _matrix(feats: list[dict[str, float]]) -> tuple[Any, list[str]]:
    from sklearn.feature_extraction import DictVectorizer

    df: dict[str, int] = {}
    for f in feats:
        for k in f:
            df[k] = df.get(k, 0) + 1
    keep = [{k: v for k, v in f.items() if df[k] >= MIN_DOCS or k.startswith(("lex:", "ask:"))} for f in feats]
    vec = DictVectorizer()
    return vec.fit_transform(keep), list(vec.get_feature_names_out())


_MATRICES: dict[FeatureOptions, Any] = {}


def _cached_matrix(examples: Sequence[Example], options: FeatureOptions) -> Any:
    # The features do not depend on C: one featurisation per feature option serves every C.
    if options not in _MATRICES:
        _MATRICES[options] = _matrix(featurise(examples, options))[0]
    return _MATRICES[options]


def _fit(X: Any, y: Sequence[str], C: float, estimator: str = "svm") -> Any:
    if estimator == "svm":
        import numpy as np
        from sklearn.svm import LinearSVC

        # liblinear takes 32-bit sparse indices only; DictVectorizer's whole matrix has 64-bit ones
        # (its row slices, as in cross-validation, come back with 32-bit ones).
        X = X.tocsr(copy=True)
        X.indices, X.indptr = X.indices.astype(np.int32), X.indptr.astype(np.int32)
        return LinearSVC(C=C, max_iter=10000, random_state=SEED).fit(X, y)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=3000).fit(X, y)


def _softmax_rows(z: Any, t: float) -> Any:
    import numpy as np

    z = z / t
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cross_validate(examples: Sequence[Example], C: float, options: FeatureOptions,
                   groups: Sequence[str] | None = None, estimator: str = "svm") -> dict[str, Any]:
    """Out-of-fold decision values for every training example (grouped folds when groups are given)."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    X = _cached_matrix(examples, options)
    y = np.array([e.category for e in examples])
    strata = [f"{e.language}/{e.category}" for e in examples]
    classes = sorted(set(y))
    z = np.zeros((len(examples), len(classes)))
    if groups is None:
        folds = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(X, strata)
    else:
        folds = StratifiedGroupKFold(FOLDS, shuffle=True, random_state=SEED).split(X, strata, list(groups))
    for train, test in folds:
        model = _fit(X[train], y[train], C, estimator)
        assert list(model.classes_) == classes
        z[test] = model.decision_function(X[test])
    return {"z": z, "classes": classes, "y": y}


def writer_sets(data_dir: Path = DATA_DIR) -> list[str]:
    """Per training example, the independent writer's set it belongs to, or "" for the rest.

    Each JSON Lines file under train/ was written by one writer who saw none of the other files
    (the spent blind sets and the later native sets, SOURCES.md); the YAML files were written
    together, many as translations of each other, and always stay on the training side."""
    out: list[str] = []
    for path in training_files(data_dir):
        out += [path.stem if path.suffix == ".jsonl" else ""] * len(parse_training_file(path))
    return out


def by_writer(examples: Sequence[Example], C: float, options: FeatureOptions, sets: Sequence[str],
              estimator: str = "svm") -> dict[str, float]:
    """Leave one writer out: each writer's set scored by a model fitted on everything else.

    The closest the training data comes to a blind set: the writer's style, trades and phrasing
    are new to the model, as a new shop's customers are. Its mean chooses the settings."""
    import numpy as np
    from sklearn.metrics import f1_score

    X = _cached_matrix(examples, options)
    y = np.array([e.category for e in examples])
    where = np.array(sets)
    scores = {}
    for held in sorted({s for s in sets if s}):
        test = where == held
        model = _fit(X[~test], y[~test], C, estimator)
        scores[held] = float(f1_score(y[test], model.predict(X[test]), average="macro"))
    return scores


def _scores(cv: dict[str, Any], examples: Sequence[Example], temperature: float, threshold: float) -> dict[str, Any]:
    import numpy as np
    from sklearn.metrics import f1_score

    probs = _softmax_rows(cv["z"], temperature)
    best = probs.argmax(axis=1)
    pred = np.array([cv["classes"][k] if probs[i, k] >= threshold else "other" for i, k in enumerate(best)])
    y = cv["y"]
    langs = np.array([e.language for e in examples])
    per_lang = {lang: f1_score(y[langs == lang], pred[langs == lang], average="macro")
                for lang in sorted(set(langs))}
    return {"macro_f1": f1_score(y, pred, average="macro"), "accuracy": float((y == pred).mean()),
            "languages": per_lang}


def _nll(cv: dict[str, Any], t: float) -> float:
    import numpy as np

    probs = _softmax_rows(cv["z"], t)
    idx = np.array([cv["classes"].index(c) for c in cv["y"]])
    return float(-np.log(np.clip(probs[np.arange(len(idx)), idx], 1e-12, 1)).mean())


def _ece(cv: dict[str, Any], t: float, bins: int = 10) -> float:
    """Expected calibration error of the top probability: |confidence − accuracy| averaged over bins."""
    import numpy as np

    probs = _softmax_rows(cv["z"], t)
    conf = probs.max(axis=1)
    right = np.array([cv["classes"][k] for k in probs.argmax(axis=1)]) == cv["y"]
    total = 0.0
    for b in range(bins):
        mask = (conf > b / bins) & (conf <= (b + 1) / bins)
        if mask.any():
            total += mask.sum() / len(conf) * abs(conf[mask].mean() - right[mask].mean())
    return float(total)


def _report(label: str, cv: dict[str, Any], examples: Sequence[Example], t: float, out: Any) -> None:
    for threshold in (0.0, 0.4):
        s = _scores(cv, examples, t, threshold)
        langs = " ".join(f"{lang} {v:.3f}" for lang, v in s["languages"].items())
        print(f"{label} CV ({FOLDS} folds, threshold {threshold}): macro-F1 {s['macro_f1']:.3f}, "
              f"accuracy {s['accuracy']:.3f}; {langs}", file=out, flush=True)


def choose(examples: Sequence[Example], groups: Sequence[str], sets: Sequence[str], out: Any = sys.stdout,
           c_grid: Sequence[float] = C_GRID, scale_grid: Sequence[float] = OPTION_GRID["lexicon_scale"],
           estimators: Sequence[str] = ESTIMATORS, show_errors: int = 0,
           char5: bool = False, question_focus: bool = False) -> tuple[str, float, FeatureOptions, float]:
    """Grid search on the leave-one-writer-out macro-F1 (mean over the writers' sets); then the
    temperature minimising the log loss of the chosen settings' grouped cross-validated margins."""
    base = FeatureOptions(char5=char5, question_focus=question_focus)
    results: list[tuple[float, str, float, FeatureOptions]] = []
    for estimator, C, focus, scale in itertools.product(estimators, c_grid, OPTION_GRID["focus_extra"], scale_grid):
        options = replace(base, focus_extra=focus, lexicon_scale=scale)
        scores = by_writer(examples, C, options, sets, estimator)
        mean = sum(scores.values()) / len(scores)
        print(f"{estimator:<8} C={C:<5} focus_extra={focus:<4} lexicon_scale={scale:<4} leave-one-writer-out "
              f"macro-F1 {mean:.3f} (" + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()) + ")",
              file=out, flush=True)
        results.append((mean, estimator, C, options))
    _, estimator, C, options = max(results, key=lambda r: r[0])
    cv = cross_validate(examples, C, options, groups, estimator)
    t = min(TEMPERATURES, key=lambda t: _nll(cv, t))
    print(f"\nchosen: {estimator}, C={C}, {options}, temperature {t}", file=out)
    print(f"calibration (ECE of the top probability, grouped CV): {_ece(cv, 1.0):.3f} raw, {_ece(cv, t):.3f} scaled",
          file=out)
    _report("grouped", cv, examples, t, out)
    plain = cross_validate(examples, C, options, estimator=estimator)
    _report("plain (optimistic)", plain, examples, min(TEMPERATURES, key=lambda t: _nll(plain, t)), out)
    probs = _softmax_rows(cv["z"], t)
    wrong = [(float(probs[i].max()), i) for i in range(len(examples))
             if cv["classes"][int(probs[i].argmax())] != cv["y"][i]]
    for conf, i in sorted(wrong, reverse=True)[:show_errors]:
        e = examples[i]
        print(f"  [{e.language}] {e.category} -> {cv['classes'][int(probs[i].argmax())]} ({conf:.2f}): "
              f"{' '.join(e.text.split())[:110]}", file=out)
    return estimator, C, options, t


def fit_all(examples: Sequence[Example], C: float, options: FeatureOptions, temperature: float,
            data_dir: Path = DATA_DIR, estimator: str = "svm") -> LinearModel:
    X, names = _matrix(featurise(examples, options))
    model = _fit(X, [e.category for e in examples], C, estimator)
    coef = model.coef_
    weights: dict[str, list[float]] = {}
    for j, name in enumerate(names):
        col = [float(coef[k, j]) for k in range(coef.shape[0])]
        if max(abs(x) for x in col) >= PRUNE_BELOW:
            weights[name] = col
    return LinearModel(list(model.classes_), [float(x) for x in model.intercept_], weights, temperature, options,
                       data_digest(data_dir))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.router.classifier_train", description=__doc__)
    p.add_argument("--cv", action="store_true", help="choose settings by cross-validation and report the scores")
    p.add_argument("--write", action="store_true", help=f"fit on all training data and write {MODEL_FILE}")
    p.add_argument("--estimator", choices=ESTIMATORS, default=ESTIMATORS[0])
    p.add_argument("--C", type=float, default=C_GRID[1])
    p.add_argument("--focus-extra", type=float, default=FeatureOptions.focus_extra)
    p.add_argument("--lexicon-scale", type=float, default=FeatureOptions.lexicon_scale)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--char5", action=argparse.BooleanOptionalAction, default=FeatureOptions.char5,
                   help="character 5-grams besides the 4-grams")
    p.add_argument("--question-focus", action=argparse.BooleanOptionalAction, default=True,
                   help="the focus weight on a message's last question too (on: it keeps SPEC §4's \"how to use "
                        "what arrived is product\" at no cost in leave-one-writer-out macro-F1)")
    p.add_argument("--C-grid", type=float, nargs="+", default=list(C_GRID), help="with --cv: the values of C tried")
    p.add_argument("--estimators", choices=ESTIMATORS, nargs="+", default=[ESTIMATORS[0]],
                   help="with --cv: the estimators tried")
    p.add_argument("--lexicon-scale-grid", type=float, nargs="+", default=list(OPTION_GRID["lexicon_scale"]))
    p.add_argument("--errors", type=int, default=0, help="with --cv: list the N most confident CV mistakes")
    args = p.parse_args(argv)
    examples = shipped_examples(DATA_DIR)
    counts: dict[str, int] = {}
    for e in examples:
        counts[e.language or "?"] = counts.get(e.language or "?", 0) + 1
    print(f"training set: {len(examples)} messages; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    estimator, C, t = args.estimator, args.C, args.temperature
    options = FeatureOptions(args.focus_extra, True, args.lexicon_scale, args.char5, args.question_focus)
    if args.cv:
        groups, sets = example_groups(DATA_DIR), writer_sets(DATA_DIR)
        assert len(groups) == len(examples) == len(sets)
        print(f"{len(set(groups))} CV groups (a sentence and its translations in one), "
              f"{len(set(sets) - {''})} writers' sets left out one at a time")
        estimator, C, options, t = choose(examples, groups, sets, c_grid=args.C_grid,
                                          scale_grid=args.lexicon_scale_grid, estimators=args.estimators,
                                          show_errors=args.errors, char5=args.char5,
                                          question_focus=args.question_focus)
    if args.write:
        model = fit_all(examples, C, options, t, estimator=estimator)
        model.save(DATA_DIR / MODEL_FILE)
        size = (DATA_DIR / MODEL_FILE).stat().st_size
        print(f"wrote {DATA_DIR / MODEL_FILE}: {len(model.weights)} features, {size // 1024} KiB, {estimator}, "
              f"C={C}, temperature {t}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
