"""Message categorisation: per-language examples, hard message kinds, configuration, corrections, CLI."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from services.router import classify_cmd
from services.router.classifier import (
    DEFAULT_CATEGORIES,
    Classification,
    Classifier,
    build_classifier,
    strip_quotes_and_signature,
)

EVAL_SET = Path(__file__).resolve().parents[1] / "data" / "classify" / "eval.jsonl"
ALL = ["en", "ru", "bg", "pl", "lt", "uk", "de"]


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier()


EXAMPLES = {
    "en": ["Does this jacket come in XL?", "where is my parcel",
           "the parcel came but the jacket is too small, how do I send it back", "the bank declined my card",
           "the checkout page shows an error", "Thanks a lot, have a nice weekend!"],
    "ru": ["Есть ли эта куртка в размере XL?", "Где моя посылка? Жду уже неделю",
           "Посылка пришла, но куртка маленькая, как отправить её обратно?", "Банк отклонил оплату картой",
           "На странице оформления заказа ошибка", "Спасибо большое, хороших выходных!"],
    "uk": ["Чи є ця куртка в розмірі XL?", "Де моя посилка? Чекаю вже тиждень",
           "Посилка прийшла, але куртка замала, як відправити її назад?", "Банк відхилив оплату карткою",
           "На сторінці оформлення замовлення помилка", "Дякую, гарних вихідних!"],
    "bg": ["Има ли това яке в размер XL?", "Къде е пратката ми? Чакам вече седмица",
           "Пратката дойде, но якето е малко, как да го върна?", "Банката отказа плащането с картата",
           "На страницата за поръчка излиза грешка", "Благодаря, хубав уикенд!"],
    "pl": ["Czy ta kurtka jest w rozmiarze XL?", "Gdzie jest moja paczka? Czekam już tydzień",
           "Paczka przyszła, ale kurtka jest za mała, jak ją odesłać?", "Bank odrzucił płatność kartą",
           "Na stronie zamówienia wyskakuje błąd", "Dzięki, miłego weekendu!"],
    "lt": ["Ar ši striukė yra XL dydžio?", "Kur mano siuntinys? Laukiu jau savaitę",
           "Siuntinys atėjo, bet striukė per maža, kaip ją grąžinti?", "Bankas atmetė mokėjimą kortele",
           "Užsakymo puslapyje rodoma klaida", "Ačiū, gero savaitgalio!"],
    "de": ["Gibt es die Jacke in XL?", "Wo ist mein Paket? Ich warte seit einer Woche",
           "Das Paket kam an, aber die Jacke ist zu klein, wie schicke ich sie zurück?",
           "Die Bank hat meine Kartenzahlung abgelehnt", "Auf der Bestellseite kommt ein Fehler",
           "Danke, schönes Wochenende!"],
}
CASES = [(lang, cat, text) for lang, texts in EXAMPLES.items()
         for cat, text in zip(("product", "delivery", "returns", "payment", "technical", "other"), texts, strict=True)]


@pytest.mark.parametrize(("lang", "category", "text"), CASES, ids=[f"{lang}-{cat}" for lang, cat, _ in CASES])
def test_one_example_per_category_per_language(clf: Classifier, lang: str, category: str, text: str) -> None:
    result = clf.classify(text, language=lang)
    assert isinstance(result, Classification)
    assert result.category == category, result.reason
    assert 0.0 <= result.confidence <= 1.0


@pytest.mark.parametrize(("text", "category"), [
    ("where is my parcel??", "delivery"),
    ("the parcel came but the jacket is too small, how do I send it back", "returns"),
    ("the bank declined my card", "payment"),
    ("the checkout page shows an error", "technical"),
    ("does this jacket come in XL", "product"),
    # voicemail transcript: no punctuation, filler words
    ("hi yeah it's Mark calling about my order the courier was meant to come yesterday between "
     "eight and twelve and nobody turned up can you call me back", "delivery"),
    # typos
    ("can i retrun the shoes i got yesterday", "returns"),
    ("my paymnet didnt go thru but money is gone from my acount", "payment"),
    # two topics, one dominating
    ("Thanks for the quick delivery! Unfortunately the zip broke on the first day, I'd like a replacement.",
     "returns"),
    ("The sweater arrived and fits perfectly, but you charged me twice for it.", "payment"),
    ("I wanted to check my order status but your app crashes every time I open it", "technical"),
])
def test_realistic_english_traffic(clf: Classifier, text: str, category: str) -> None:
    assert clf.classify(text, language="en").category == category


@pytest.mark.parametrize(("text", "category"), [
    ("gde moya posylka? zakaz 44821", "delivery"),
    ("hochu vernut kurtku, ne podoshel razmer", "returns"),
    ("ne mogu zayti v lichnyj kabinet, pishet oshibka", "technical"),
    ("spisali dengi dva raza za odin zakaz", "payment"),
    ("de moie zamovlennia? chekaiu vzhe tyzhden", "delivery"),
    ("kude e poruchkata mi? chakam veche sedmica", "delivery"),
])
def test_transliterated_cyrillic_languages(clf: Classifier, text: str, category: str) -> None:
    # Without a language given the classifier spots the transliteration itself.
    assert clf.classify(text).category == category
    result = clf.classify(text, language="ru")
    assert result.category == category and result.reason.get("translit")


QUOTED = {
    "en": "Hi,\nwhere is my parcel? Still nothing.\n\nOn Mon, 12 May 2025 at 09:14, Shop <s@x.example> wrote:\n> refund",
    "outlook": "Where is my parcel?\n\n-----Original Message-----\nFrom: Shop\nSent: Monday\nSubject: refund\n\nrefund",
    "ru": "Где моя посылка?\n\n12.05.2025, 09:14, Ivan Petrov пишет:\n> возврат денег",
    "pl": "Gdzie jest paczka?\n\nW dniu 12.05.2025 o 09:14 Sklep <s@x.example> napisał(a):\n> zwrot pieniędzy",
    "lt": "Kur mano siuntinys?\n\n2025-05-12 09:14, Parduotuvė <s@x.example> rašė:\n> pinigų grąžinimas",
    "de": "Wo ist mein Paket?\n\nAm 12.05.2025 um 09:14 schrieb Shop <s@x.example>:\n> Erstattung",
    "bg": "Къде е пратката?\n\nНа 12.05.2025 г. в 9:14 Shop <s@x.example> написа:\n> връщане на пари",
    "uk": "Де посилка?\n\n12 трав. 2025 р. о 09:14 Shop <s@x.example> написав:\n> повернення коштів",
    "webmail": "Где посылка?\n\n12.05.2025, 09:14, \"Shop\" <s@x.example>:\n> возврат",
    "gmail-wrapped": "Where is my parcel?\n\nOn Mon, 12 May 2025 at 09:14, Northwind Support <\nsupport@x.example> wrote:\n> refund",
    "signature": "Where is my parcel?\n-- \nJohn Smith\nReturns Manager, ACME",
    "mobile": "Where is my parcel?\n\nSent from my iPhone",
    "sign-off": "Where is my parcel? It's late.\n\nKind regards,\nJohn Smith\nReturns & Refunds Dept.",
}


@pytest.mark.parametrize("key", list(QUOTED))
def test_strip_quotes_and_signature(key: str) -> None:
    stripped = strip_quotes_and_signature(QUOTED[key])
    assert stripped
    for word in ("refund", "возврат", "zwrot", "grąžinimas", "Erstattung", "връщане", "повернення", "Returns", "iPhone",
                 "wrote", "пишет"):
        assert word not in stripped, (key, stripped)


def test_strip_keeps_plain_text_and_falls_back_on_bare_forwards() -> None:
    plain = "Where is my parcel?\nI ordered it on Monday."
    assert strip_quotes_and_signature(plain) == plain
    assert strip_quotes_and_signature("Thank you!") == "Thank you!"  # a sign-off only ends a longer text
    assert strip_quotes_and_signature("") == ""
    forwarded = "> The zip broke on my jacket\n> Please help"
    assert "zip broke" in strip_quotes_and_signature(forwarded)


def test_quoted_thread_does_not_decide_the_category(clf: Classifier) -> None:
    text = ("Hello,\n\nIt's been over a week and the tracking link still shows nothing. Can you check?\n\n"
            "Thanks,\nDan\n\n-----Original Message-----\nFrom: Northwind <orders@northwind.example>\n"
            "Sent: 3 June 2025 14:02\nSubject: Your refund\n\n"
            "Your refund has been processed. To return another item print the return label, refunds take 5 days.")
    result = clf.classify(text, subject="Re: Your refund", language="en")
    assert result.category == "delivery"
    assert result.reason["quoted_text_removed"] is True


@pytest.mark.parametrize("text", ["Hi", "ok", "asdf qwerty", "12345", "👍", ""])
def test_low_confidence_goes_to_other(clf: Classifier, text: str) -> None:
    assert clf.classify(text).category == "other"


def test_threshold_is_a_parameter() -> None:
    text = "is the jacket warm?"
    strict = Classifier(threshold=0.99).classify(text, language="en")
    assert strict.category == "other"
    assert "below threshold" in strict.reason["decision"]
    lenient = Classifier(threshold=0.0).classify(text, language="en")
    assert lenient.category == lenient.reason["best"]
    with pytest.raises(ValueError):
        Classifier(threshold=1.5)


def test_reason_is_json_serialisable_and_names_the_evidence(clf: Classifier) -> None:
    result = clf.classify("Where is my parcel? The tracking hasn't moved for a week.", language="en")
    reason = json.loads(json.dumps(result.reason))
    assert reason["best"] == "delivery"
    assert any(hit["category"] == "delivery" for hit in reason["terms"])
    assert set(reason["model"]) == set(DEFAULT_CATEGORIES)


def test_correction_changes_the_outcome_of_a_similar_message() -> None:
    # This shop treats gift wrapping as a product service; the model reads "order" as delivery.
    original = "Can you add a gift message and gift wrap to my order?"
    similar = "could you gift wrap my order and add a message for my mum"
    clf = Classifier()
    assert clf.classify(similar, language="en").category != "product"

    clf.retrain([{"text": original, "category": "product"}])
    after = clf.classify(similar, language="en")
    assert after.category == "product"
    assert after.reason["similar_correction"]["category"] == "product"
    assert clf.extra_examples[0].category == "product"

    # The same correction given at construction time (e.g. loaded from the database at start).
    assert Classifier(extra_examples=[(original, "product")]).classify(similar, language="en").category == "product"
    # Unrelated messages keep their category.
    assert clf.classify("where is my parcel", language="en").category == "delivery"


def test_correction_with_an_unknown_category_is_rejected() -> None:
    with pytest.raises(ValueError):
        Classifier().retrain([{"text": "hello", "category": "nonsense"}])


def test_added_category_with_config_keywords() -> None:
    clf = Classifier(categories=[*DEFAULT_CATEGORIES, "wholesale"],
                     keywords={"wholesale": {"en": ["wholesale", "bulk order", "reseller"],
                                             "de": ["großhandel", "mengenrabatt"]}})
    assert clf.classify("We'd like to place a bulk order of 200 jackets for our shop", language="en").category == \
        "wholesale"
    assert clf.classify("Gibt es Mengenrabatt für Großhandel?", language="de").category == "wholesale"
    assert clf.classify("where is my parcel", language="en").category == "delivery"


def test_dropped_category_is_never_returned() -> None:
    cats = ("product", "delivery", "payment", "technical", "other")
    clf = Classifier(categories=cats)
    result = clf.classify("the jacket is too small, how do I send it back for a refund", language="en")
    assert result.category in cats
    with pytest.raises(ValueError):
        Classifier(categories=("product", "delivery"))  # no fallback category


def test_build_classifier_from_the_example_config(example_config) -> None:
    clf = build_classifier(example_config)
    assert set(clf.categories) == set(example_config.categories)
    assert clf.classify("Gdzie jest moja paczka?", language="pl").category == "delivery"


def test_fast_enough(clf: Classifier) -> None:
    texts = [text for _, _, text in CASES] * 5
    clf.classify("warm up")
    start = time.perf_counter()
    for text in texts:
        clf.classify(text)
    per_message = (time.perf_counter() - start) / len(texts)
    assert per_message < 0.005


# ---------------------------------------------------------------------------------------------
# CLI and evaluation


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = classify_cmd.main(args, out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_writes_one_json_line_per_input(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([
        json.dumps({"text": "where is my parcel??", "channel": "sms"}),
        "",
        json.dumps({"text": "Где моя посылка?", "channel": "telegram", "id": "m-2"}),
        json.dumps({"text": "ok", "lang": "de"}),
        json.dumps({"text": "Bitte um Hilfe", "subject": "Rechnung fehlt", "channel": "email"}),
    ]) + "\n", encoding="utf-8")
    code, out, err = _run([str(src)])
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert set(row) >= {"category", "confidence", "language"}
        assert row["category"] in DEFAULT_CATEGORIES and 0.0 <= row["confidence"] <= 1.0
    assert rows[0]["category"] == "delivery" and rows[0]["language"] == "en"
    assert rows[1] == {**rows[1], "id": "m-2", "language": "ru", "category": "delivery"}
    assert rows[2]["language"] == "de"  # too short to tell: the given lang is the hint
    assert rows[3]["category"] == "payment"


def test_cli_eval_prints_a_table_to_stderr(tmp_path: Path) -> None:
    src = tmp_path / "labelled.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"text": "where is my parcel", "lang": "en", "category": "delivery"},
        {"text": "Wo ist mein Paket?", "lang": "de", "category": "delivery"},
        {"text": "Die Bank hat meine Karte abgelehnt", "lang": "de", "category": "payment"},
    ]) + "\n", encoding="utf-8")
    code, out, err = _run([str(src), "--eval"])
    assert code == 0
    assert len(out.splitlines()) == 3
    assert "macro-F1" in err and "overall" in err
    assert any(line.startswith("de ") for line in err.splitlines())


def test_cli_eval_scores_each_kind_of_message_when_lines_say_their_kind(tmp_path: Path) -> None:
    # The blind sets label every line plain/hard/translit/...: the table shows where the model fails.
    src = tmp_path / "kinds.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"text": "where is my parcel", "lang": "en", "category": "delivery", "kind": "plain"},
        {"text": "gde moya posylka", "lang": "ru", "category": "delivery", "kind": "translit"},
        {"text": "the bank declined my card", "lang": "en", "category": "payment", "kind": "plain"},
    ]) + "\n", encoding="utf-8")
    code, _, err = _run([str(src), "--eval"])
    assert code == 0
    rows = {line.split()[0]: line.split()[1] for line in err.splitlines() if line.split()[:1] in (["plain"], ["translit"])}
    assert rows == {"plain": "2", "translit": "1"}


def test_cli_bad_json_names_the_line(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine"}\n{"text": broken\n["not", "an object"]\n', encoding="utf-8")
    code, out, err = _run([str(src)])
    assert code == 2
    assert out == ""
    assert "line 2" in err and "invalid JSON" in err
    assert "line 3" in err


def test_cli_missing_text_missing_file_and_bad_usage(tmp_path: Path) -> None:
    src = tmp_path / "notext.jsonl"
    src.write_text('{"subject": 5}\n', encoding="utf-8")
    assert _run([str(src)])[0] == 2
    code, _, err = _run([str(tmp_path / "nope.jsonl")])
    assert code == 2 and "cannot read" in err
    assert _run([])[0] == 2
    assert _run([str(src), "--threshold", "7"])[0] == 2


def test_cli_with_config(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "Kur mano siuntinys?"}) + "\n", encoding="utf-8")
    config = Path(__file__).resolve().parents[2] / "deploy" / "switchboard.yaml"
    code, out, err = _run([str(src), "--config", str(config)])
    assert code == 0, err
    assert json.loads(out) == {**json.loads(out), "category": "delivery", "language": "lt"}


def test_macro_f1_on_the_evaluation_set(clf: Classifier) -> None:
    records = [json.loads(line) for line in EVAL_SET.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(records) >= 420
    report = classify_cmd.evaluate(records, clf, ALL, "en")
    assert report["n"] == len(records)
    assert report["macro_f1"] >= 0.90, classify_cmd.format_report(report)
    for lang in ALL:
        assert report["languages"][lang]["n"] >= 60
        assert report["languages"][lang]["macro_f1"] >= 0.90, (lang, classify_cmd.format_report(report))


def test_macro_f1_definition() -> None:
    assert classify_cmd.macro_f1([("a", "a"), ("b", "b")]) == 1.0
    # a: P=1/2 R=1 F1=2/3; b: P=0 R=0 F1=0 -> 1/3
    assert classify_cmd.macro_f1([("a", "a"), ("b", "a")]) == pytest.approx(1 / 3, abs=1e-3)


def test_missing_data_files_fail_loudly(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="classifier data missing"):
        Classifier(data_dir=tmp_path)


def test_the_last_question_is_the_focus_only_when_the_message_says_more() -> None:
    from services.router.classifier_text import last_question

    assert last_question("The lamp came this morning. How do I change the bulb?").strip() == "How do I change the bulb"
    assert last_question("Order 4471 arrived\nis it real leather??") == "is it real leather"
    assert last_question("Where is my parcel?") is None  # the whole message: nothing to focus away from
    assert last_question("No question in this one.") is None
