"""The categoriser on traffic it was not written against: two labelled sets, the issue's sentences.

tests/data/classify/eval.jsonl is the original evaluation set (546 messages); holdout.jsonl (959,
137 per language) was written later, in a deliberately different style (transliteration, voicemail
without punctuation, emails with a quoted thread and signature, one-word SMS, spam, sales pitches
and charity requests that name parcels, cards and products, two topics with one dominating).
Neither is training data. The guards (0.90 overall, 0.85 per language) sit below the measured
figures (eval 0.998, holdout 1.000) so that a change which breaks one language fails here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from services.router import classify_cmd
from services.router.classifier import Classifier

DATA = Path(__file__).resolve().parents[1] / "data" / "classify"
SETS = ("eval.jsonl", "holdout.jsonl")
ALL = ["en", "ru", "bg", "pl", "lt", "uk", "de"]


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier()


def _records(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("name", SETS)
def test_macro_f1_on_both_labelled_sets(clf: Classifier, name: str) -> None:
    records = _records(name)
    report = classify_cmd.evaluate(records, clf, ALL, "en")
    table = classify_cmd.format_report(report)
    assert report["n"] == len(records) >= 420
    assert report["macro_f1"] >= 0.90, table
    for lang in ALL:
        assert report["languages"][lang]["n"] >= 60, (lang, table)
        assert report["languages"][lang]["macro_f1"] >= 0.85, (lang, table)


def test_holdout_set_is_balanced_and_disjoint_from_the_training_data() -> None:
    from services.router.classifier import shipped_examples

    records = _records("holdout.jsonl")
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        counts[(r["lang"], r["category"])] = counts.get((r["lang"], r["category"]), 0) + 1
    for lang in ALL:
        for category in ("product", "delivery", "returns", "payment", "technical", "other"):
            assert counts.get((lang, category), 0) >= 10, (lang, category)
    trained = {" ".join(e.text.lower().split()) for e in shipped_examples()}
    evaluated = {" ".join(r["text"].lower().split()) for r in _records("eval.jsonl")}
    for r in records:
        key = " ".join(r["text"].lower().split())
        assert key not in trained and key not in evaluated, r["text"]


# The issue's three two-topic sentences, each in a written and a voicemail/SMS form, per language.
ISSUE = {
    "en": [("the parcel came but the jacket is too small, how do I send it back",
            "hi the parcel arrived fine but the jacket's too small how can I send it back"),
           ("the bank declined my card", "hello yeah my bank declined my card when I tried to pay"),
           ("the checkout page shows an error", "your checkout page keeps showing an error")],
    "ru": [("Посылка пришла, но куртка мала — как её отправить обратно?",
            "посылку получила но куртка маленькая как отправить назад"),
           ("Банк отклонил мою карту", "банк отклонил карту"),
           ("На странице оформления заказа показывает ошибку", "на странице оформления заказа вылезает ошибка")],
    "uk": [("Посилка прийшла, але куртка замала, як її надіслати назад?",
            "посилку отримала але куртка мала як відправити назад"),
           ("Банк відхилив мою картку", "банк відхилив картку при оплаті"),
           ("Сторінка оформлення замовлення показує помилку", "на сторінці оформлення замовлення вискакує помилка")],
    "bg": [("Пратката дойде, но якето е малко, как да го изпратя обратно?",
            "пратката пристигна ама якето ми е малко как да го върна"),
           ("Банката отхвърли картата ми", "банката ми отказа картата"),
           ("Страницата за завършване на поръчката показва грешка", "на страницата за поръчка излиза грешка")],
    "pl": [("Paczka przyszła, ale kurtka jest za mała, jak ją odesłać?", "paczka doszla ale kurtka za mala jak ja odeslac"),
           ("Bank odrzucił moją kartę", "bank mi odrzucil karte"),
           ("Strona finalizacji zamówienia pokazuje błąd", "na stronie kasy wyskakuje blad")],
    "lt": [("Siuntinys atėjo, bet striukė per maža, kaip ją išsiųsti atgal?",
            "siunta atejo bet striuke per maza kaip ja grazinti"),
           ("Bankas atmetė mano kortelę", "bankas atmete kortele"),
           ("Užsakymo apmokėjimo puslapis rodo klaidą", "atsiskaitymo puslapyje rodo klaida")],
    "de": [("Das Paket ist angekommen, aber die Jacke ist zu klein, wie schicke ich sie zurück?",
            "paket ist da aber die jacke ist zu klein wie kann ich die zurückschicken"),
           ("Die Bank hat meine Karte abgelehnt", "meine bank hat die karte abgelehnt"),
           ("Die Kassenseite zeigt einen Fehler an", "beim checkout kommt eine fehlermeldung")],
}
ISSUE_CASES = [(lang, category, text)
               for lang, rows in ISSUE.items()
               for category, pair in zip(("returns", "payment", "technical"), rows, strict=True)
               for text in pair]


@pytest.mark.parametrize(("lang", "category", "text"), ISSUE_CASES,
                         ids=[f"{lang}-{cat}-{k % 2}" for k, (lang, cat, _) in enumerate(ISSUE_CASES)])
def test_issue_two_topic_sentences_in_every_language(clf: Classifier, lang: str, category: str, text: str) -> None:
    # With the language known (the router's case) and with it left to the classifier.
    assert clf.classify(text, language=lang).category == category
    assert clf.classify(text).category == category


# "Paid, but the order has not left": the payment is context, the question is about delivery.
PAID_NOT_SHIPPED = {
    "en": "I paid on Friday and the money is gone, but the order still says processing. When will you ship it?",
    "ru": "Оплатила в пятницу, деньги ушли, а заказ до сих пор не отправлен. Когда отправите?",
    "uk": "Оплатила в п'ятницю, гроші зняли, а замовлення досі не відправили. Коли відправите?",
    "bg": "Платих в петък, парите са изтеглени, а поръчката все още не е изпратена. Кога ще я изпратите?",
    "pl": "Zapłaciłam w piątek, pieniądze zeszły, a zamówienie nadal nie wysłane. Kiedy wyślecie?",
    "lt": "Sumokėjau penktadienį, pinigai nuskaičiuoti, o užsakymas vis dar neišsiųstas. Kada išsiųsite?",
    "de": "Ich habe am Freitag bezahlt, das Geld ist abgebucht, aber die Bestellung ist immer noch nicht verschickt. "
          "Wann kommt sie?",
}
# Prize spam names vouchers and cards; it is not a payment question.
SPAM = {
    "en": "Congratulations, you have won a £1000 voucher! Enter your card details to claim it",
    "ru": "Поздравляем, вы выиграли сертификат на 10000 рублей! Введите данные карты, чтобы получить",
    "uk": "Вітаємо, ви виграли сертифікат на 3000 грн! Введіть дані картки, щоб отримати",
    "bg": "Поздравления, спечелихте ваучер за 200 лв! Въведете данните на картата си",
    "pl": "Gratulacje, wygrałaś kartę podarunkową 500 zł! Podaj dane karty, aby ją odebrać",
    "lt": "Sveikiname, laimėjote 300 € dovanų kortelę! Įveskite kortelės duomenis",
    "de": "Glückwunsch, Sie haben einen 300 € Gutschein gewonnen! Geben Sie Ihre Kartendaten ein",
}
DOMINANCE = ([(lang, "delivery", text) for lang, text in PAID_NOT_SHIPPED.items()]
             + [(lang, "other", text) for lang, text in SPAM.items()])


@pytest.mark.parametrize(("lang", "category", "text"), DOMINANCE, ids=[f"{c}-{lang}" for lang, c, _ in DOMINANCE])
def test_the_dominant_intent_wins(clf: Classifier, lang: str, category: str, text: str) -> None:
    result = clf.classify(text, language=lang)
    assert result.category == category, result.reason


def test_hinted_bulgarian_in_latin_letters_is_read_as_bulgarian(clf: Classifier) -> None:
    from services.router.language import detect_language

    text = "dunkite mi stoyat stranno na talieta, moje li da gi smenya s 30 nomer?"
    guess = detect_language(text, ALL, "en", ["bg"])
    assert guess.code == "bg"
    assert clf.classify(text, language=guess.code).category == "returns"


# ---------------------------------------------------------------------------------------------
# CLI: labelled input gets the table without --eval


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = classify_cmd.main(args, out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_prints_the_table_for_labelled_input_without_eval(tmp_path: Path) -> None:
    rows = [
        {"text": "where is my parcel", "lang": "en", "category": "delivery", "id": 1},
        {"text": "Gdzie jest moja paczka?", "lang": "pl", "category": "delivery", "id": 2},
        {"text": "Bank odrzucił moją kartę", "lang": "pl", "category": "payment", "id": 3},
    ]
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    plain = tmp_path / "plain.jsonl"
    plain.write_text("\n".join(json.dumps({k: v for k, v in r.items() if k != "category"}, ensure_ascii=False)
                               for r in rows) + "\n", encoding="utf-8")

    code, out, err = _run([str(labelled)])
    assert code == 0
    lines = err.splitlines()
    assert lines[0].split() == ["language", "n", "macro-F1", "accuracy"]
    assert any(line.split()[:2] == ["pl", "2"] for line in lines)
    assert any(line.split()[:3] == ["overall", "3", "1.000"] for line in lines)
    # stdout is the same JSON Lines as for unlabelled input, and unlabelled input gets no table.
    code_plain, out_plain, err_plain = _run([str(plain)])
    assert code_plain == 0 and err_plain == ""
    assert out == out_plain
    assert [json.loads(line)["id"] for line in out.splitlines()] == [1, 2, 3]
    # --eval still works, and still says so when nothing is labelled.
    assert _run([str(labelled), "--eval"])[2] == err
    assert "no line carries" in _run([str(plain), "--eval"])[2]


def test_cli_on_the_holdout_set_reports_every_language(tmp_path: Path) -> None:
    code, out, err = _run([str(DATA / "holdout.jsonl")])
    assert code == 0
    assert len(out.splitlines()) == len(_records("holdout.jsonl"))
    table = {line.split()[0]: line.split() for line in err.splitlines()[1:9] if line.strip()}
    assert set(table) == {*ALL, "overall"}
    assert float(table["overall"][2]) >= 0.90
