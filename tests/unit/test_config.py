"""Config validation: a bad config names the key path and the problem; exit code 2 from the CLI."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from services.cli import main
from services.config_checks import ALL_CHECKS
from shared.config import WhatsAppTemplate, load_config_text
from shared.errors import ConfigError
from shared.settings import load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "switchboard.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def problems(doc: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(yaml.safe_dump(doc, allow_unicode=True), "test.yaml", ALL_CHECKS)
    return info.value.problems


def test_example_config_loads(example_config) -> None:
    assert example_config.business.name == "Northwind Outfitters"
    assert set(example_config.agents) == {"anna", "taras", "jonas", "maria"}
    assert example_config.categories["delivery"].target_for("sms") == timedelta(hours=2)
    assert example_config.categories["delivery"].target_for("telegram") == timedelta(hours=4)
    assert example_config.channel_mode("instagram") == "redirect"
    assert example_config.channels["whatsapp"].survey_template == WhatsAppTemplate(name="csat_survey", language="en", languages=("pl",))
    # An agent's shift keeps the team's holidays: Christmas Day is closed for Anna too.
    from datetime import datetime
    from zoneinfo import ZoneInfo

    assert not example_config.agents["anna"].shift.is_open(datetime(2026, 12, 25, 10, tzinfo=ZoneInfo("Europe/Warsaw")))
    assert example_config.agents["anna"].shift.is_open(datetime(2026, 12, 23, 10, tzinfo=ZoneInfo("Europe/Warsaw")))


def test_bad_shift_names_the_key_path() -> None:
    doc = example()
    doc["agents"][2]["hours"]["mon"] = "9-17"
    assert problems(doc) == ['agents[2].hours.mon: "9-17" is not HH:MM-HH:MM']


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["agents"][1].update(team="nope"), 'agents[1].team: "nope" is not a team id'),
    (lambda d: d["teams"][0].update(lead="ghost"), 'teams[0].lead: "ghost" is not an agent id'),
    (lambda d: d["business"].update(default_language="fr"), "business.default_language"),
    (lambda d: d["calendars"]["business"].update(timezone="Mars/Olympus"),
     'calendars.business.timezone: "Mars/Olympus" is not a known timezone'),
    # One zone check for calendars and agents (shared.calendar.parse_zone): "localtime" passed the
    # agent's own copy and then failed building the shift, a ValueError instead of a config error.
    (lambda d: d["agents"][0].update(timezone="localtime"), 'agents[0].timezone: "localtime" is not a known timezone'),
    (lambda d: d["agents"][0].update(timezone="Mars/Olympus"), 'agents[0].timezone: "Mars/Olympus" is not a known timezone'),
    (lambda d: d["categories"][1].update(target="soon"), 'categories[1].target: "soon" is not a duration'),
    (lambda d: d["channels"].update(fax={"mode": "active"}), "channels.fax"),
    (lambda d: d["channels"]["sms"].update(mode="redirect"), "channels.sms.redirect_to: a channel in redirect mode needs redirect_to"),
    (lambda d: d.update(surprise=1), "surprise: is not a known key"),
    (lambda d: d["agents"][0].update(skills=["cooking"]), 'agents[0].skills: "cooking" is not a category'),
    (lambda d: d.update(templates={"en/ack.txt.j2": "Hello {{ name"}), "templates.en/ack.txt.j2: line 1"),
    (lambda d: d["channels"]["whatsapp"].update(reply_template="Support Reply!"),
     "channels.whatsapp.reply_template: is not a WhatsApp template name"),
    (lambda d: d["channels"]["whatsapp"].update(survey_template={"name": "CSAT survey"}),
     "channels.whatsapp.survey_template.name: is not a WhatsApp template name"),
    (lambda d: d["channels"]["whatsapp"].update(survey_template={"name": "csat_survey", "language": "Polish"}),
     "channels.whatsapp.survey_template.language: is not a template language code"),
    (lambda d: d["channels"]["whatsapp"].update(survey_template={"language": "pl"}),
     "channels.whatsapp.survey_template.name"),
    (lambda d: d["channels"]["sms"].update(survey_template={"name": "csat_survey"}),
     "channels.sms.survey_template: only the whatsapp channel sends templates"),
    (lambda d: d["channels"]["telegram"].update(nps_template={"name": "nps_survey"}),
     "channels.telegram.nps_template: only the whatsapp channel sends templates"),
    (lambda d: d["channels"]["whatsapp"].update(nps_template={"name": "NPS survey"}),
     "channels.whatsapp.nps_template.name: is not a WhatsApp template name"),
])
def test_each_problem_is_reported_where_it_is(mutate, expected) -> None:
    doc = example()
    mutate(doc)
    assert any(p.startswith(expected) or expected in p for p in problems(doc)), problems(doc)


def test_whatsapp_may_have_an_nps_template() -> None:
    doc = example()
    assert load_config_text(yaml.safe_dump(doc, allow_unicode=True), "x.yaml").channels["whatsapp"].nps_template is None
    doc["channels"]["whatsapp"]["nps_template"] = {"name": "nps_survey", "language": "pl"}
    config = load_config_text(yaml.safe_dump(doc, allow_unicode=True), "x.yaml")
    assert config.channels["whatsapp"].nps_template == WhatsAppTemplate(name="nps_survey", language="pl")


def test_every_problem_is_reported_at_once() -> None:
    doc = example()
    doc["agents"][0]["hours"]["tue"] = "morning"
    doc["agents"][3]["capacity"] = 0
    assert len(problems(doc)) == 2


def test_not_yaml_is_reported_with_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("business: [unclosed\n", "x.yaml")
    assert "line" in info.value.problems[0]


def test_cli_config_check_exits_2_with_the_path(tmp_path, capsys) -> None:
    doc = example()
    doc["agents"][2]["hours"]["mon"] = "9-17"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert 'agents[2].hours.mon: "9-17" is not HH:MM-HH:MM' in err
    assert main(["config", "check", str(EXAMPLE)]) == 0


def test_bad_environment_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"TELEGRAM_WEBHOOK_SECRET": "has spaces!", "PORT": "eighty"})
    joined = "\n".join(info.value.problems)
    assert "TELEGRAM_WEBHOOK_SECRET" in joined and "PORT" in joined


def test_environment_defaults_are_the_embedded_mode() -> None:
    s = load_settings({})
    assert s.broker_url == "memory://" and s.database_url.startswith("sqlite:///")
    assert s.telegram_bot_id == "sandbox"
    assert load_settings({"TELEGRAM_BOT_TOKEN": "123456:abc"}).telegram_bot_id == "123456"


# --- macros: the starter set can be changed from the config, and a bad change fails at start ----


def _with_macros(macros: dict) -> dict:
    doc = example()
    doc["macros"] = macros
    return doc


def test_a_config_macro_replaces_a_block_and_adds_a_macro_in_every_language() -> None:
    from services.router import macros as m

    languages = example()["business"]["languages"]
    added = {lang: {"gift-wrap": {"category": "product", "title": "Gift wrap",
                                  "empathy": "Gifts deserve care.", "answer": f"[{lang}] We wrap for free."}}
             for lang in languages}
    added["en"]["delivery-late"] = {"answer": "Your parcel {{ order_number }} left our depot today."}
    for lang in languages:
        added[lang]["returns-how"] = None  # this business takes no returns
    config = load_config_text(yaml.safe_dump(_with_macros(added), allow_unicode=True), "test.yaml", ALL_CHECKS)
    late = m.render(m.find("delivery-late", "en", config.macros), customer_name="Alex", order_number="NW-7",
                    owner_name="Anna", business_name="NW")
    assert "Your parcel NW-7 left our depot today." in late
    assert late.startswith("Hello Alex,")  # the blocks it did not name are the starter's
    assert "I am sorry that it is taking longer" in late
    wrap = m.render(m.find("gift-wrap", "pl", config.macros), customer_name=None, order_number=None,
                    owner_name="Anna", business_name="NW")
    assert "[pl] We wrap for free." in wrap and wrap.split("\n\n")[0] == m.render(
        m.find("delivery-late", "pl"), customer_name=None, order_number=None, owner_name="Anna",
        business_name="NW").split("\n\n")[0]  # the language's own greeting fills in
    assert "returns-how" not in {x.id for x in m.macros_for("de", None, config.macros)}
    with pytest.raises(m.MacroError):
        m.find("returns-how", "de", config.macros)
    # The starter set itself is untouched for a config without overrides.
    assert "left our depot today" not in m.render(m.find("delivery-late", "en"), customer_name=None, order_number=None,
                                                  owner_name="Anna", business_name="NW")


@pytest.mark.parametrize(("macros", "expected"), [
    ({"en": {"delivery-late": {"answer": "{{ tracking_url }}"}}},
     "macros.en (config): macro 'delivery-late': block 'answer' uses tracking_url; the variables are "
     "customer_name, order_number, owner_name, business_name"),
    ({"en": {"delivery-late": {"answer": "{% if order_number %}oops"}}},
     "macros.en (config): macro 'delivery-late': block 'answer': Unexpected end of template."),
    ({"en": {"delivery-late": {"closing": "Bye"}}},
     "macros.en (config): macro 'delivery-late': unknown keys ['closing'], missing blocks [], category given"),
    ({"en": {"delivery-late": {"category": "weather"}}},
     "macros.en.delivery-late.category: 'weather' is not a category "
     "(product, delivery, returns, payment, technical, other)"),
    ({"fr": {"delivery-late": {"answer": "Bonjour"}}},
     "macros.fr: not one of the business's languages (en, pl, ru, uk, bg, lt, de)"),
    ({"en": {"gift-wrap": {"category": "product", "empathy": "Gifts deserve care.", "answer": "We wrap."}}},
     "macros.pl: macro 'gift-wrap' is missing"),
    ({"de": {"returns-how": None}}, "macros.de: macro 'returns-how' is missing"),
])
def test_a_bad_macro_override_fails_config_check_naming_it(macros, expected) -> None:
    found = problems(_with_macros(macros))
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize("customer, expected", [
    ("pl", "pl"), ("en", "en_US"), ("uk", "en_US"), (None, "en_US"), ("pt", "pt_BR"), ("lt", "en_US"),
])
def test_a_template_goes_in_the_customers_language_when_it_is_approved_in_it(customer, expected) -> None:
    template = WhatsAppTemplate(name="csat_survey", language="en_US", languages=("pl", "pt_BR"))
    assert template.language_for(customer) == expected


def test_template_languages_are_read_and_checked() -> None:
    doc = example()
    doc["channels"]["whatsapp"].update(survey_template={"name": "csat_survey", "language": "en", "languages": ["pl", "de"]},
                                       reply_template="support_reply", reply_template_languages=["pl"])
    whatsapp = load_config_text(yaml.safe_dump(doc)).channels["whatsapp"]
    assert whatsapp.survey_template.language_for("de") == "de"
    assert whatsapp.reply_template_languages == ("pl",)
    doc["channels"]["whatsapp"]["survey_template"]["languages"] = ["Polish"]
    assert any(p.startswith("channels.whatsapp.survey_template.languages") for p in problems(doc)), problems(doc)
