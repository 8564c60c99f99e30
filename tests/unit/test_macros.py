"""Macros (services/router/macros.py): every starter macro renders in every language, with the
customer's variables where they belong and without the phrases whose variable is empty."""

from __future__ import annotations

import pytest

from services.router import macros
from shared.config import DEFAULT_CATEGORIES, SUPPORTED_LANGUAGES

# Languages whose greeting may name the customer (nominative address); pl, uk, lt greet neutrally.
NAMED = {"en", "de", "ru", "bg"}


def test_the_starter_set_is_complete_and_renders_in_every_language() -> None:
    assert macros.check(SUPPORTED_LANGUAGES) == []
    for language in SUPPORTED_LANGUAGES:
        covered = {m.category for m in macros.macros_for(language)}
        assert covered == set(DEFAULT_CATEGORIES), language


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_each_macro_carries_the_variables_and_the_seven_blocks_shape(language: str) -> None:
    for macro in macros.macros_for(language):
        text = macros.render(macro, customer_name="Olena", order_number="NW-20417", owner_name="Maria Georgieva",
                             business_name="Northwind Outfitters")
        assert "{" not in text and "None" not in text, (language, macro.id, text)
        assert "Maria Georgieva, Northwind Outfitters" in text  # the open door signs
        assert ("Olena" in text) == (language in NAMED), (language, macro.id)
        paragraphs = text.split("\n\n")
        assert len(paragraphs) >= 4 and paragraphs[0] == macros.render(
            macro, customer_name="Olena", order_number=None, owner_name="x", business_name="y").split("\n\n")[0]
        if macro.id in ("delivery-late", "returns-how", "payment-problem", "technical-error"):
            assert "NW-20417" in text, (language, macro.id)
        bare = macros.render(macro, customer_name=None, order_number=None, owner_name="Maria Georgieva",
                             business_name="Northwind Outfitters")
        assert "NW-20417" not in bare and "  " not in bare and " ." not in bare and " ," not in bare, bare


def test_apology_and_compensation_appear_where_due() -> None:
    late = macros.find("delivery-late", "en")
    assert {"apology", "compensation"} <= set(late.blocks)
    text = macros.render(late, customer_name="Alex", order_number="NW-1", owner_name="Anna", business_name="NW")
    assert text.startswith("Hello Alex,\n\n")
    assert "I am sorry that it is taking longer than we promised." in text
    assert "we are refunding the delivery cost of order NW-1." in text
    assert "apology" not in macros.find("returns-how", "en").blocks


def test_russian_and_german_read_as_written() -> None:
    ru = macros.render(macros.find("delivery-late", "ru"), customer_name="Ольга", order_number="123",
                       owner_name="Тарас", business_name="Northwind")
    assert ru.startswith("Здравствуйте, Ольга!\n\nПонимаю, как неприятно ждать посылку, поэтому мы сразу проверили"
                         " ваш заказ № 123.")
    de = macros.render(macros.find("returns-how", "de"), customer_name=None, order_number=None,
                       owner_name="Jonas", business_name="Northwind")
    assert de.startswith("Guten Tag,\n\nschade, dass der Artikel nicht gepasst hat")
    assert "Bestellnummer" not in de


def test_categories_first_and_errors_named() -> None:
    assert macros.macros_for("pl", "returns")[0].id == "returns-how"
    with pytest.raises(macros.MacroError, match="no macro 'nope' in 'en'"):
        macros.find("nope", "en")
    with pytest.raises(macros.MacroError, match="order_number"):
        macros.render(macros.find("returns-how", "en"), customer_name=None, order_number="x" * 41,
                      owner_name="a", business_name="b")
