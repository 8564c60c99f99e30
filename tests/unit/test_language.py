"""Language detection among the configured languages, with channel hints and transliteration."""

from __future__ import annotations

import pytest

from services.router.language import (
    LanguageGuess,
    _detector,
    detect_language,
    language_for_country,
    normalise_hint,
    translit_language,
)

ALL = ["en", "ru", "bg", "pl", "lt", "uk", "de"]


@pytest.mark.parametrize(("text", "expected"), [
    ("Hi, where is my parcel? I ordered it last Monday.", "en"),
    ("Где моя посылка? Заказывала в понедельник.", "ru"),
    ("Къде е пратката ми? Поръчах я в понеделник.", "bg"),
    ("Gdzie jest moja paczka? Zamawiałam w poniedziałek.", "pl"),
    ("Kur mano siuntinys? Užsakiau pirmadienį.", "lt"),
    ("Де моя посилка? Замовляла в понеділок.", "uk"),
    ("Wo ist mein Paket? Ich habe am Montag bestellt.", "de"),
])
def test_detects_each_language(text: str, expected: str) -> None:
    guess = detect_language(text, ALL, "en")
    assert isinstance(guess, LanguageGuess)
    assert guess.code == expected
    assert 0.0 <= guess.confidence <= 1.0
    assert guess.reason


@pytest.mark.parametrize(("text", "expected"), [
    ("Де моя посилка?", "uk"),        # short: lingua alone leans Bulgarian
    ("Где моя посылка?", "ru"),
    ("Къде е пратката ми?", "bg"),
    ("Дякую!", "uk"),
    ("Спасибо!", "ru"),
    ("Благодаря!", "bg"),
])
def test_short_cyrillic_messages_use_letters_and_function_words(text: str, expected: str) -> None:
    assert detect_language(text, ALL, "en").code == expected


@pytest.mark.parametrize("text", ["ok", "?", "12345", "", "👍", "OK!!", "Hi"])
def test_too_short_or_universal_text_follows_the_hint_then_the_default(text: str) -> None:
    assert detect_language(text, ALL, "en", ["ru"]).code == "ru"
    assert detect_language(text, ALL, "de").code == "de"
    guess = detect_language(text, ALL, "en")
    assert guess.code == "en" and "default" in guess.reason


def test_hint_forms_are_normalised_and_unconfigured_hints_ignored() -> None:
    assert normalise_hint("pt-br") == "pt"
    assert normalise_hint("uk_UA") == "uk"
    assert normalise_hint("RU") == "ru"
    assert normalise_hint("ua") == "uk"
    assert normalise_hint("") is None and normalise_hint(None) is None and normalise_hint("12") is None
    # Portuguese is not configured: the hint cannot win, the default does.
    assert detect_language("ok", ALL, "en", ["pt-br"]).code == "en"
    assert detect_language("ok", ALL, "en", ["uk-UA"]).code == "uk"


def test_text_beats_a_hint_in_another_language() -> None:
    # A Telegram client set to English does not make a Russian message English.
    assert detect_language("Здравствуйте, где мой заказ? Жду уже неделю.", ALL, "en", ["en"]).code == "ru"
    assert detect_language("Dzień dobry, gdzie jest moje zamówienie?", ALL, "en", ["de"]).code == "pl"


def test_hint_breaks_a_tie_between_close_languages() -> None:
    # "Добре" is good Bulgarian and plausible Ukrainian/Russian: the channel's hint decides.
    assert detect_language("Добре", ALL, "en", ["bg"]).code == "bg"
    assert detect_language("Добре", ALL, "en", ["uk"]).code == "uk"


@pytest.mark.parametrize(("text", "expected"), [
    ("gde moya posylka", "ru"),
    ("zdravstvuyte, kogda dostavka? uzhe nedelyu zhdu", "ru"),
    ("hochu vernut platye, ne podoshel razmer", "ru"),
    ("de moie zamovlennia? zamovliala 5 dniv tomu", "uk"),
    ("kude e poruchkata mi? poruchah predi 5 dni", "bg"),
])
def test_transliterated_russian_ukrainian_bulgarian(text: str, expected: str) -> None:
    guess = detect_language(text, ALL, "en")
    assert guess.code == expected
    assert "Latin letters" in guess.reason


def test_translit_needs_the_language_configured_and_does_not_fire_on_latin_languages() -> None:
    assert detect_language("gde moya posylka", ["en", "pl", "de"], "en").code in {"en", "pl", "de"}
    for text in ("Where is my parcel?", "Gdzie jest moja paczka?", "Kur mano siuntinys?", "Wo ist mein Paket?",
                 "Moja przesyłka nie dotarła, co mam zrobić?"):
        assert translit_language(text) is None, text


def test_translit_with_a_russian_hint_on_a_very_short_message() -> None:
    assert detect_language("gde zakaz", ALL, "en", ["ru"]).code == "ru"


def test_quoted_reply_in_another_language_is_ignored() -> None:
    text = ("Hallo, das Paket ist immer noch nicht da. Können Sie bitte nachsehen?\n\n"
            "On Mon, 12 May 2025 at 09:14, Northwind Support <support@northwind.example> wrote:\n"
            "> Thank you for your order! Your parcel is on its way and will arrive within three days.\n"
            "> If anything is wrong, just reply to this email and we will be happy to help.\n")
    assert detect_language(text, ALL, "en").code == "de"


def test_restricted_language_set() -> None:
    langs = ["en", "de"]
    assert detect_language("Wo ist mein Paket?", langs, "en").code == "de"
    assert detect_language("Где моя посылка?", langs, "en").code in langs
    assert detect_language("anything at all", ["pl"], "pl").code == "pl"


def test_detector_is_built_once_per_language_set() -> None:
    detect_language("Where is my parcel?", ["en", "de"], "en")
    first = _detector(frozenset({"en", "de"}))
    detect_language("Wo ist mein Paket?", ["de", "en"], "en")
    assert _detector(frozenset({"de", "en"})) is first


def test_country_to_language_for_phone_numbers() -> None:
    assert language_for_country("UA", ALL) == "uk"
    assert language_for_country("at", ALL) == "de"
    assert language_for_country("LT", ["en"]) is None
    assert language_for_country("FR", ALL) is None
    assert language_for_country(None, ALL) is None
