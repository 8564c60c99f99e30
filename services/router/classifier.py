"""Categorises incoming customer messages (product, delivery, returns, payment, technical, other).

Two parts, because neither alone survives real traffic:

* a hand-built multilingual lexicon (``classifier_data/lexicon/<lang>.ini``) of weighted stems and
  phrases per category, matched by word prefix so inflected forms (посылку, przesyłki, siuntinio)
  hit the same entry; Cyrillic entries are also matched in a phonetic Latin "skeleton" so that
  Russian, Ukrainian or Bulgarian written in Latin letters ("gde moya posylka") is understood;
* a multinomial logistic regression (:mod:`services.router.category_model`) over word skeletons,
  prefixes, prefix bigrams and character 4-grams, with the lexicon's per-category scores as
  features among the others (evidence it weighs, not a rule). It is fitted at build time on
  ``classifier_data/train/*.yaml`` (``make classifier-model``) and ships as weights; its
  probabilities are temperature-scaled on cross-validated predictions, so below the threshold
  (a calibrated probability) the message goes to the fallback category (``other``, i.e. triage).

The reason returned with each decision names the matched lexicon terms and the probabilities and
is JSON-serialisable. Operators' corrections count at once: a near-identical message follows the
correction, and a few gradient steps on the corrected example move similar messages too.

Two topics in one message are settled by where the customer puts the weight: words after a
contrast ("but", "still", "only", "the main thing", Russian/Bulgarian "а", Lithuanian "o") count
more, in the lexicon and in the n-grams, so "I paid, but the order is STILL not shipped" is
delivery and "delivery can wait, THE MAIN THING: is the coat lined?" is product. The labelled sets
tests/data/classify/eval.jsonl and holdout.jsonl are regression sets (the lexicon was tuned on
them); neither is training data.

Email bodies are cleaned first with :func:`shared.text.strip_quotes_and_signature`, the gateway's
too: quoted replies, forwarded headers and signatures talk about *our* previous message
and would otherwise decide the category.
"""


from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.router.category_model import MODEL_FILE, LinearModel, softmax
from services.router.classifier_examples import (
    DATA_DIR,
    Example,
    coerce_example,
    parse_training_file,
    shipped_examples,
    shipped_lexicon,
    shipped_model,
    training_files,
)
from services.router.classifier_lexicon import Term, TermIndex, best_matches, parse_term, translit_term
from services.router.classifier_text import (
    FOCUS_WEIGHT,
    focus_start,
    last_question,
    ngram_features,
    script_share,
    skeleton,
    tokenize,
)
from shared.text import clean_subject, is_reply_subject, strip_quotes_and_signature
from shared.vocabulary import CATEGORIES, CYRILLIC_LANGUAGES, FALLBACK_CATEGORY

# Re-exported: the rest of the router, the trainer and the tests import these from here.
__all__ = ["DATA_DIR", "DEFAULT_CATEGORIES", "Classification", "Classifier", "Example", "build_classifier",
           "parse_training_file", "shipped_examples", "shipped_model", "strip_quotes_and_signature",
           "training_files"]


DEFAULT_CATEGORIES = CATEGORIES
FALLBACK = FALLBACK_CATEGORY
DEFAULT_THRESHOLD = 0.4
CONFIG_KEYWORD_WEIGHT = 3.0
CORRECTION_WEIGHT = 4.0
# When the message's language is known, another language's terms count less: they still catch
# loanwords and mixed messages, but a false friend (Ukrainian "склад" is "composition", Russian
# "склад" a warehouse) no longer decides.
FOREIGN_TERM_FACTOR = 0.5

# A correction lifts a near-identical message's category by this much (logit) times the similarity.
CORRECTION_BOOST = 8.0
# The online update on a correction: gradient steps until the corrected text itself is this sure.
CORRECTION_STEPS = 20
CORRECTION_TARGET_PROBABILITY = 0.9
CORRECTION_LEARNING_RATE = 1.0
CORRECTION_MIN_SIMILARITY = 0.5
MAX_CHARS = 3000


@dataclass(frozen=True)
class Classification:
    category: str
    confidence: float
    reason: dict[str, Any]



# --------------------------------------------------------------------------------------------
# The classifier


@dataclass(frozen=True)
class Evidence:
    """What one message offers the model: its features and the lexicon's view, for the reason.

    The n-grams are kept as sets with one shared value (``norm``) rather than a dict per message:
    scoring sums their weight rows first and scales once, which keeps a message's cost at that of
    the naive Bayes model this replaced.
    """

    grams: frozenset[str] | set[str]
    focus_grams: frozenset[str] | set[str]
    dense: dict[str, float]  # lexicon features
    norm: float
    focus_extra: float
    lexicon: dict[str, float]
    hits: list[dict[str, Any]]
    leaning: str | None
    stripped: bool
    translit: bool

    @property
    def features(self) -> dict[str, float]:
        out = dict.fromkeys(self.grams, self.norm)
        extra = self.focus_extra * self.norm
        for f in self.focus_grams:
            out[f] = out.get(f, 0.0) + extra
        out.update(self.dense)
        return out

    @property
    def words(self) -> frozenset[str]:
        return frozenset(f for f in self.grams if f.startswith("w:"))


@dataclass
class _Corrections:
    """Operators' corrections: a nearest-correction override and an online update of the weights."""

    items: list[tuple[frozenset[str], str, str]] = field(default_factory=list)  # (words, category, text)
    index: dict[str, list[int]] = field(default_factory=dict)
    overlay: dict[str, list[float]] = field(default_factory=dict)  # feature -> added weight per class


class Classifier:
    """Lexicon features + a linear model, for a configurable set of categories.

    categories: the configured ids; must contain the fallback ("other").
    keywords: extra lexicon terms from the config, ``{category: {language: [term, ...]}}``; a term
      is a word prefix ("refund" also hits "refunded"), "word$" for the whole word only, and
      "a * b" allows up to three words in between. New categories can be defined this way alone:
      the model scores them through their lexicon feature.
    extra_examples: labelled messages (operators' corrections); each counts at once, both as a
      nearest-correction override for near-identical messages and as an online update of the
      model's weights for the features it contains.
    threshold: below this (calibrated) probability the message goes to the fallback category.
    """

    def __init__(
        self,
        categories: Sequence[str] = DEFAULT_CATEGORIES,
        keywords: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        extra_examples: Iterable[Example | Mapping[str, Any] | Sequence[Any]] = (),
        threshold: float = DEFAULT_THRESHOLD,
        fallback: str = FALLBACK,
        data_dir: Path = DATA_DIR,
        model: LinearModel | None = None,
    ):
        self.categories = tuple(dict.fromkeys(categories))
        if fallback not in self.categories:
            raise ValueError(f"the fallback category {fallback!r} must be one of the categories")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be between 0 and 1")
        self.fallback = fallback
        self.threshold = threshold
        self.data_dir = data_dir
        loaded = model or shipped_model(data_dir)
        if not shipped_lexicon(data_dir) or loaded is None:
            # A build that dropped the data files would otherwise categorise everything as "other".
            raise RuntimeError(f"classifier data missing: no lexicon/*.ini or {MODEL_FILE} under {data_dir}")
        self.model: LinearModel = loaded
        terms = [t for t in shipped_lexicon(data_dir) if t.category in self.categories]
        for category, per_language in (keywords or {}).items():
            if category not in self.categories:
                raise ValueError(f"keywords for unknown category {category!r}")
            for language, words in per_language.items():
                for word in words:
                    term = parse_term(word, category, CONFIG_KEYWORD_WEIGHT, language)
                    if term:
                        terms.append(Term(term.category, term.weight, term.parts, term.exact, language,
                                          f"config:{term.source}"))
        self._index = TermIndex(terms)
        self._translit_index = TermIndex(t for t in (translit_term(x) for x in terms) if t)
        self._unmodelled = [c for c in self.categories if c not in self.model.classes]
        self._extra: list[Example] = []
        self._lock = threading.Lock()
        self._corrections = self._learn(_Corrections(), [coerce_example(e) for e in extra_examples])

    # -- corrections ----------------------------------------------------------------------------

    def retrain(self, extra_examples: Iterable[Example | Mapping[str, Any] | Sequence[Any]]) -> None:
        """Add labelled examples (e.g. operators' corrections); the next classify() sees them.

        The new state is built aside and swapped in one assignment, so concurrent classify()
        calls see either the old or the new corrections, never half of them.
        """
        new = [coerce_example(e) for e in extra_examples]
        with self._lock:
            self._corrections = self._learn(self._corrections, new)

    def _learn(self, old: _Corrections, new: list[Example]) -> _Corrections:
        unknown = sorted({e.category for e in new} - set(self.categories))
        if unknown:
            raise ValueError(f"examples with unknown categories: {', '.join(unknown)}")
        if not new:
            return old
        state = _Corrections(list(old.items), {w: list(ks) for w, ks in old.index.items()},
                             {f: list(w) for f, w in old.overlay.items()})
        for e in new:
            ev = self.evidence(e.text, e.subject, e.language)
            if ev.words:
                k = len(state.items)
                state.items.append((ev.words, e.category, e.text[:200]))
                for w in ev.words:
                    state.index.setdefault(w, []).append(k)
            if e.category in self.model.classes:
                self._online_update(state.overlay, ev.features, self.model.classes.index(e.category))
        self._extra = self._extra + new
        return state

    def _online_update(self, overlay: dict[str, list[float]], feats: Mapping[str, float], target: int) -> None:
        """A few logistic-loss gradient steps on one corrected example, in an overlay of the weights.

        Similar messages (sharing many n-grams) move towards the corrected category; the shipped
        weights stay untouched, so a restart with the stored corrections gives the same state.
        """
        n = len(self.model.classes)
        for _ in range(CORRECTION_STEPS):
            probs = softmax(self.model.logits(feats, overlay), self.model.temperature)
            if probs[target] >= CORRECTION_TARGET_PROBABILITY:
                return
            for f, v in feats.items():
                row = overlay.setdefault(f, [0.0] * n)
                for k in range(n):
                    row[k] += CORRECTION_LEARNING_RATE * v * ((1.0 if k == target else 0.0) - probs[k])

    @property
    def extra_examples(self) -> tuple[Example, ...]:
        return tuple(self._extra)

    # -- classification -------------------------------------------------------------------------

    def evidence(self, text: str, subject: str | None = None, language: str | None = None) -> Evidence:
        """The model's features for a message (also used to fit the model, so both see the same)."""
        options = self.model.options
        body = strip_quotes_and_signature(text or "")
        stripped = body != (text or "").strip()
        body = body[:MAX_CHARS]
        body_tokens = tokenize(body)
        subject_tokens = tokenize(clean_subject(subject)) if subject else []
        # A reply's subject is usually ours ("Re: Your refund"): it describes the old thread,
        # not what the customer is asking now, so it only counts a little.
        is_reply = is_reply_subject(subject)
        subject_factor = 0.3 if is_reply else 1.0

        lex: dict[str, float] = dict.fromkeys(self.categories, 0.0)
        hits: list[dict[str, Any]] = []
        use_translit = self._translit_active(body, language)
        for segment, factor in ((subject_tokens, subject_factor), (body_tokens, 1.0)):
            if not segment:
                continue
            focus = focus_start(segment, language)
            found = self._index.matches(segment)
            if use_translit:
                found += self._translit_index.matches([skeleton(t) for t in segment])
            for term, start, _end, quality in best_matches(found):
                w = term.weight * quality * factor * (FOCUS_WEIGHT if focus and start >= focus else 1.0)
                index = self._translit_index if term.translit else self._index
                if language and not index.listed_for(term, language) and not term.source.startswith("config:"):
                    w *= FOREIGN_TERM_FACTOR
                lex[term.category] += w
                hit = {"term": term.source, "category": term.category, "weight": round(w, 2),
                       "lang": term.language + ("-translit" if term.translit else "")}
                if quality < 1.0:
                    hit["near"] = segment[start]
                hits.append(hit)

        grams = ngram_features(body_tokens if is_reply else subject_tokens + body_tokens, options.char5)
        focus = focus_start(body_tokens, language)
        focus_grams = ngram_features(body_tokens[focus:], options.char5) if focus and options.focus_extra else set()
        if not focus_grams and options.question_focus and options.focus_extra:
            question = last_question(body)
            if question:
                focus_grams = ngram_features(tokenize(question), options.char5)
        # Unit length: a long email is no more certain than an SMS for having more n-grams.
        norm = 1.0 / math.sqrt(len(grams) + options.focus_extra ** 2 * len(focus_grams)) if grams else 0.0
        dense: dict[str, float] = {}
        leaning = _question_leaning(body, subject, lex, self.fallback)
        if options.lexicon:
            for c, v in lex.items():
                if v:
                    dense["lex:" + c] = options.lexicon_scale * math.log1p(v)
            if leaning:
                dense["ask:" + leaning] = 1.0
            if max((v for c, v in lex.items() if c != self.fallback), default=0.0) < 0.5:
                dense["lex:none"] = 1.0
        return Evidence(grams, focus_grams, dense, norm, options.focus_extra, lex, hits, leaning, stripped,
                        use_translit)

    def classify(self, text: str, subject: str | None = None, language: str | None = None,
                 channel: str | None = None) -> Classification:
        corrections = self._corrections
        model = self.model
        ev = self.evidence(text, subject, language)
        raw = model.score(ev.grams, ev.focus_grams, ev.dense, ev.norm, ev.focus_extra, corrections.overlay)
        logits = dict(zip(model.classes, raw, strict=True))
        for c in self._unmodelled:
            logits[c] = model.mean_intercept + model.own_lexicon_weight * math.log1p(ev.lexicon.get(c, 0.0)) * \
                model.options.lexicon_scale
        correction = self._correction(corrections, ev.words) if corrections.items else None
        if correction:
            target = correction[1] if correction[1] in logits else self.fallback
            logits[target] += CORRECTION_BOOST * correction[0]
        # A category this business dropped gives its probability to the fallback.
        model_probs = _softmax({c: v / model.temperature for c, v in logits.items()})
        probs: dict[str, float] = dict.fromkeys(self.categories, 0.0)
        for c, p in model_probs.items():
            probs[c if c in self.categories else self.fallback] += p
        best = max(probs, key=lambda c: probs[c])
        confidence = probs[best]
        category = best if confidence >= self.threshold else self.fallback
        reason: dict[str, Any] = {
            "method": "lexicon+linear_model",
            "decision": "best" if category == best else f"below threshold {self.threshold}: {best} → {category}",
            "best": best,
            "terms": sorted(ev.hits, key=lambda h: -h["weight"])[:10],
            "lexicon": {c: round(v, 2) for c, v in ev.lexicon.items() if v},
            "model": {c: round(p, 3) for c, p in probs.items()},
            "probabilities": {c: round(p, 3) for c, p in sorted(probs.items(), key=lambda kv: -kv[1])[:3]},
        }
        if ev.leaning:
            reason["question_about"] = ev.leaning
        if ev.stripped:
            reason["quoted_text_removed"] = True
        if ev.translit:
            reason["translit"] = True
        if correction:
            reason["similar_correction"] = {"category": correction[1], "similarity": round(correction[0], 2),
                                            "text": correction[2]}
        # On a fallback the confidence stays that of the best guess: low, which is why it is triage.
        return Classification(category, round(confidence, 4), reason)

    def _translit_active(self, body: str, language: str | None) -> bool:
        cyr, lat = script_share(body)
        if lat == 0 or cyr > lat:
            return False
        if language in CYRILLIC_LANGUAGES:
            return True
        if language is None:
            # Imported here because language.py imports this module (for the email clean-up).
            from services.router.language import translit_language

            return translit_language(body) is not None
        return False

    @staticmethod
    def _correction(state: _Corrections, words: frozenset[str]) -> tuple[float, str, str] | None:
        if not state.items or not words:
            return None
        overlap: Counter[int] = Counter()
        for w in words:
            for k in state.index.get(w, ()):
                overlap[k] += 1
        best: tuple[float, str, str] | None = None
        for k, n in overlap.items():
            cwords, cat, text = state.items[k]
            sim = n / math.sqrt(len(cwords) * len(words))
            if sim >= CORRECTION_MIN_SIMILARITY and (best is None or sim > best[0]):
                best = (sim, cat, text)
        return best


def _question_leaning(body: str, subject: str | None, lex: Mapping[str, float], fallback: str) -> str | None:
    """The one category a question's words point to, if exactly one does (and beats the fallback's cues).

    "Does the 3-in-1 jacket zip apart?" names a jacket and nothing else: in a shop that is a
    question about the product, not triage, even though one noun is weak evidence.
    """
    if "?" not in body and "?" not in (subject or ""):
        return None
    topical = [c for c, v in lex.items() if c != fallback and v > 0]
    if len(topical) != 1 or lex[topical[0]] <= lex.get(fallback, 0.0):
        return None
    return topical[0]


def _softmax(z: Mapping[str, float]) -> dict[str, float]:
    if not z:
        return {}
    m = max(z.values())
    ex = {c: math.exp(v - m) for c, v in z.items()}
    s = sum(ex.values())
    return {c: v / s for c, v in ex.items()}


def build_classifier(config: Any, extra_examples: Iterable[Example | Mapping[str, Any]] = (),
                     threshold: float = DEFAULT_THRESHOLD) -> Classifier:
    """The classifier for a loaded :class:`shared.config.Config` (its categories and keywords)."""
    categories = list(config.categories)
    keywords = {cid: dict(cat.keywords) for cid, cat in config.categories.items() if cat.keywords}
    return Classifier(categories=categories, keywords=keywords, extra_examples=extra_examples, threshold=threshold)
