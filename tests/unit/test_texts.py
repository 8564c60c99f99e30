"""The texts customers and agents read, in en, ru, bg, pl, lt, uk and de: what a reader would notice.

Dates used (2026): Fri 20 Nov 17:55 in Warsaw is "now" for an out-of-hours message; the promise
is Mon 23 Nov 13:00 and the business reopens Mon 23 Nov 09:00.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.notifier.texts import (
    AGENT_NOTICE_KINDS,
    CATEGORIES,
    LANGUAGES,
    SMS_LIMIT,
    AckContext,
    TemplateError,
    format_weekly_hours,
    format_when,
    render_ack,
    render_agent_notice,
    render_redirect,
    render_survey_question,
    render_survey_thanks,
    template_names,
    validate_overrides,
)

WARSAW = ZoneInfo("Europe/Warsaw")
FRIDAY_EVENING = datetime(2026, 11, 20, 17, 55, tzinfo=WARSAW)
MONDAY_OPENING = datetime(2026, 11, 23, 9, 0, tzinfo=WARSAW)
MONDAY_PROMISE = datetime(2026, 11, 23, 13, 0, tzinfo=WARSAW)
OFFICE = {**{d: [(time(9), time(17))] for d in ("mon", "tue", "wed", "thu", "fri")},
          "sat": [(time(10), time(14))], "sun": []}
TEMPLATES = Path(__file__).resolve().parents[2] / "services" / "notifier" / "templates"


def w(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=WARSAW)


def ack(language: str = "en", **changes) -> AckContext:
    base = AckContext(
        language=language, customer_name=None, category="delivery", promise_due=MONDAY_PROMISE,
        now=FRIDAY_EVENING, is_open=False, next_opening=MONDAY_OPENING, weekly_hours=OFFICE,
        timezone_label="Europe/Warsaw", self_help=[("Track your parcel", "https://northwind.example/track")],
        urgent_contact="+48 22 100 20 30", business_name="Northwind", channel="email", reference="SB-7K2Q",
    )
    return replace(base, **changes)


# --- the customer's name ------------------------------------------------------------------------

# (language, name as the customer gave it, the greeting line the customer reads)
NAMED_GREETINGS = [
    ("en", "Anna Kowalska", "Hello Anna Kowalska,"),
    ("de", "Anna Schmidt", "Hallo Anna Schmidt,"),
    ("ru", "Анна", "Здравствуйте, Анна!"),
    ("bg", "Мария Иванова", "Здравейте, Мария Иванова!"),
    ("pl", "Anna Kowalska", "Dzień dobry, Pani Anno!"),
    ("pl", "piotr nowak", "Dzień dobry, Panie Piotrze!"),
    ("uk", "Тарас Шевченко", "Добрий день, Тарасе!"),
    ("uk", "Ганна", "Добрий день, Ганно!"),
    ("lt", "Jonas Jonaitis", "Sveiki, Jonai!"),
    ("lt", "Eglė", "Sveiki, Egle!"),
]
NEUTRAL_GREETINGS = {"en": "Hello,", "de": "Guten Tag,", "ru": "Здравствуйте!", "bg": "Здравейте!",
                     "pl": "Dzień dobry!", "uk": "Добрий день!", "lt": "Sveiki!"}


@pytest.mark.parametrize(("language", "name", "greeting"), NAMED_GREETINGS)
def test_the_customer_is_greeted_by_name_in_the_form_their_language_uses(language, name, greeting):
    text = render_ack(ack(language, customer_name=name))
    assert text.splitlines()[0] == greeting


@pytest.mark.parametrize("language", LANGUAGES)
def test_without_a_name_the_greeting_is_neutral(language):
    text = render_ack(ack(language, customer_name=None))
    assert text.splitlines()[0] == NEUTRAL_GREETINGS[language]


@pytest.mark.parametrize(("language", "name"), [("pl", "Zbyszko z Bogdańca"), ("uk", "Саша"), ("lt", "Thomas")])
def test_a_name_whose_vocative_is_uncertain_is_not_declined_but_still_shown(language, name):
    # A wrong vocative is worse than none: the greeting stays neutral, the name sits by the reference.
    text = render_ack(ack(language, customer_name=name))
    assert text.splitlines()[0] == NEUTRAL_GREETINGS[language]
    assert f"SB-7K2Q ({name})" in text


def test_a_messy_profile_name_is_tidied_before_use():
    text = render_ack(ack("en", customer_name="  Anna \n  Kowalska "))
    assert text.splitlines()[0] == "Hello Anna Kowalska,"


# --- the promise --------------------------------------------------------------------------------

MONDAY_DEADLINE = {
    "en": "by 13:00 on Monday, 23 November",
    "de": "am Montag, dem 23. November, bis 13:00 Uhr",
    "ru": "в понедельник, 23 ноября, до 13:00",
    "bg": "в понеделник, 23 ноември, до 13:00",
    "pl": "w poniedziałek, 23 listopada, do godz. 13:00",
    "uk": "у понеділок, 23 листопада, до 13:00",
    "lt": "pirmadienį, lapkričio 23 d., iki 13:00 val.",
}
MONDAY_NAME = {"en": "Monday", "de": "Montag", "ru": "понедельник", "bg": "понеделник",
               "pl": "poniedziałek", "uk": "понеділок", "lt": "pirmadien"}


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_promise_is_a_concrete_local_weekday_date_and_time(language):
    text = render_ack(ack(language))
    assert MONDAY_DEADLINE[language] in text
    assert MONDAY_NAME[language] in text and "13:00" in text and "23" in text


TODAY_TOMORROW = {
    "en": ("by 15:00 today", "by 10:00 tomorrow"),
    "de": ("heute bis 15:00 Uhr", "morgen bis 10:00 Uhr"),
    "ru": ("сегодня до 15:00", "завтра до 10:00"),
    "bg": ("днес до 15:00", "утре до 10:00"),
    "pl": ("dziś do godz. 15:00", "jutro do godz. 10:00"),
    "uk": ("сьогодні до 15:00", "завтра до 10:00"),
    "lt": ("šiandien iki 15:00 val.", "rytoj iki 10:00 val."),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_promise_today_or_tomorrow_says_so_instead_of_a_date(language):
    tuesday_morning = w(2026, 11, 24, 9, 5)
    today, tomorrow = TODAY_TOMORROW[language]
    same_day = render_ack(ack(language, now=tuesday_morning, is_open=True, next_opening=None,
                              promise_due=w(2026, 11, 24, 15)))
    next_day = render_ack(ack(language, now=tuesday_morning, is_open=True, next_opening=None,
                              promise_due=w(2026, 11, 25, 10)))
    assert today in same_day and "24" not in same_day.split("SB-7K2Q")[0]
    assert tomorrow in next_day and "25" not in next_day.split("SB-7K2Q")[0]


@pytest.mark.parametrize(("language", "expected"), [
    ("en", "today at 15:00"), ("de", "heute um 15:00 Uhr"), ("ru", "сегодня в 15:00"), ("bg", "днес в 15:00"),
    ("pl", "dziś o godz. 15:00"), ("uk", "сьогодні о 15:00"), ("lt", "šiandien 15:00 val."),
])
def test_format_when_says_a_moment_for_reuse_elsewhere(language, expected):
    assert format_when(w(2026, 11, 24, 15), w(2026, 11, 24, 9), language) == expected


def test_ukrainian_uses_ob_before_eleven():
    assert format_when(w(2026, 11, 25, 11), w(2026, 11, 24, 9), "uk") == "завтра об 11:00"
    assert format_when(w(2026, 11, 25, 10), w(2026, 11, 24, 9), "uk") == "завтра о 10:00"


def test_tuesday_takes_the_euphonic_preposition():
    tuesday = w(2026, 11, 24, 9)
    assert format_when(tuesday, FRIDAY_EVENING, "ru").startswith("во вторник, 24 ноября")
    assert format_when(tuesday, FRIDAY_EVENING, "bg").startswith("във вторник, 24 ноември")
    assert format_when(tuesday, FRIDAY_EVENING, "pl").startswith("we wtorek, 24 listopada")


def test_today_is_judged_in_the_zone_of_the_moment_not_of_now():
    # 23:30 UTC on Friday is already Saturday 00:30 in Warsaw.
    now_utc = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)
    assert format_when(w(2026, 11, 21, 10), now_utc, "en") == "today at 10:00"


def test_a_date_far_away_gets_its_year():
    assert format_when(w(2027, 7, 1, 9), FRIDAY_EVENING, "en") == "on Thursday, 1 July 2027, at 09:00"
    assert format_when(w(2027, 7, 1, 9), FRIDAY_EVENING, "ru", mode="by") == "в четверг, 1 июля 2027 г., до 09:00"


def test_naive_datetimes_and_unknown_languages_are_refused():
    with pytest.raises(ValueError):
        format_when(datetime(2026, 11, 23, 13), FRIDAY_EVENING, "en")
    with pytest.raises(ValueError, match="unsupported language"):
        render_ack(ack("fr"))


def test_regional_language_tags_are_understood():
    assert format_when(w(2026, 11, 24, 15), w(2026, 11, 24, 9), "pl-PL") == "dziś o godz. 15:00"


# --- out of hours -------------------------------------------------------------------------------

CLOSED_NOW = {
    "en": "We are closed at the moment",
    "de": "Unser Kundenservice ist gerade nicht besetzt",
    "ru": "Сейчас мы не работаем",
    "bg": "В момента не работим",
    "pl": "W tej chwili jesteśmy poza godzinami pracy",
    "uk": "Зараз ми не працюємо",
    "lt": "Šiuo metu nedirbame",
}
BACK_ON_MONDAY = {
    "en": "and will be back on Monday, 23 November, at 09:00.",
    "de": "und am Montag, dem 23. November, um 09:00 Uhr wieder für Sie da.",
    "ru": "и снова будем на связи в понедельник, 23 ноября, в 09:00.",
    "bg": "и отново ще сме на разположение в понеделник, 23 ноември, в 09:00.",
    "pl": ", wracamy w poniedziałek, 23 listopada, o godz. 09:00.",
    "uk": "і знову будемо на зв’язку у понеділок, 23 листопада, о 09:00.",
    "lt": ", vėl dirbsime pirmadienį, lapkričio 23 d., 09:00 val.",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_out_of_hours_it_says_we_are_closed_and_when_we_reopen(language):
    closed = render_ack(ack(language))
    assert CLOSED_NOW[language] in closed and BACK_ON_MONDAY[language] in closed
    assert MONDAY_DEADLINE[language] in closed
    open_now = render_ack(ack(language, is_open=True, next_opening=None, now=w(2026, 11, 23, 10)))
    assert CLOSED_NOW[language] not in open_now


@pytest.mark.parametrize("language", LANGUAGES)
def test_closed_with_no_known_reopening_still_reads_as_a_sentence(language):
    text = render_ack(ack(language, next_opening=None))
    assert f"{CLOSED_NOW[language]}." in text


# --- what we understood, help, hours ------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_category_line_differs_per_category_and_unknown_ones_are_neutral(language):
    def category_line(category: str) -> str:
        return render_ack(ack(language, category=category, customer_name=None)).split("\n\n")[1].splitlines()[1]

    lines = {c: category_line(c) for c in CATEGORIES}
    assert len(set(lines.values())) == len(CATEGORIES)
    assert category_line("wholesale") == lines["other"]
    assert "wholesale" not in render_ack(ack(language, category="wholesale"))


@pytest.mark.parametrize("language", LANGUAGES)
def test_self_help_links_and_the_urgent_contact_are_included(language):
    links = [("Track your parcel", "https://northwind.example/track"), ("Delivery times", "https://northwind.example/times")]
    text = render_ack(ack(language, self_help=links))
    for title, url in links:
        assert f"{title}: {url}" in text
    assert "+48 22 100 20 30" in text
    bare = render_ack(ack(language, self_help=[], urgent_contact=None))
    assert "https://" not in bare and "+48" not in bare


HOURS = {
    "en": "Mon–Fri 09:00–17:00, Sat 10:00–14:00",
    "de": "Mo–Fr 09:00–17:00, Sa 10:00–14:00",
    "ru": "пн–пт 09:00–17:00, сб 10:00–14:00",
    "bg": "пн–пт 09:00–17:00, сб 10:00–14:00",
    "pl": "pon.–pt. 09:00–17:00, sob. 10:00–14:00",
    "uk": "пн–пт 09:00–17:00, сб 10:00–14:00",
    "lt": "I–V 09:00–17:00, VI 10:00–14:00",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_working_hours_are_compact_and_localised(language):
    assert format_weekly_hours(OFFICE, language) == HOURS[language]
    text = render_ack(ack(language))
    assert HOURS[language] in text and "Europe/Warsaw" in text


def test_weekly_hours_overnight_split_days_gaps_and_midnight():
    assert format_weekly_hours({"fri": [(time(22), time(2))], "sat": [(time(22), time(2))]}, "en") == \
        "Fri–Sat 22:00–02:00"
    split = {d: [(time(14), time(18)), (time(9), time(13))] for d in ("mon", "tue")}
    assert format_weekly_hours({**split, "wed": [(time(9), time(0))]}, "en") == \
        "Mon–Tue 09:00–13:00, 14:00–18:00; Wed 09:00–24:00"
    assert format_weekly_hours({"mon": [(time(9), time(17))], "wed": [(time(9), time(17))]}, "de") == \
        "Mo 09:00–17:00, Mi 09:00–17:00"
    assert format_weekly_hours({d: [] for d in OFFICE}, "en") == ""


def test_a_week_without_hours_leaves_the_hours_line_out():
    text = render_ack(ack("en", weekly_hours={}))
    assert "working hours" not in text and "None" not in text


# --- SMS ----------------------------------------------------------------------------------------

LONG_NAME = "Maximilian-Alexander Wolfeschlegelsteinhausen-Bergerdorff von Habsburg-Lothringen"


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_sms_version_fits_in_320_characters_and_keeps_the_promise(language):
    for name in (None, "Anna", LONG_NAME):
        ctx = ack(language, channel="sms", customer_name=name, next_opening=w(2026, 11, 24, 11),
                  promise_due=w(2026, 11, 25, 13), business_name="Northwind Traders Customer Care Department",
                  urgent_contact="+48 22 100 20 30 (orders in transit, 8:00–20:00)")
        text = render_ack(ctx)
        assert len(text) <= SMS_LIMIT, (language, name, len(text))
        assert "13:00" in text and "SB-7K2Q" in text and "+48 22 100 20 30" in text
        assert not text.endswith("…")
    assert len(render_ack(ack(language, channel="sms"))) < len(render_ack(ack(language)))


CALL_WORDS = {"en": ("call", "call you back"), "pl": ("telefon", "Oddzwonimy"), "ru": ("звонок", "перезвонит"),
              "uk": ("дзвінок", "передзвонить"), "bg": ("обаждането", "се обади"), "lt": ("skambutį", "perskambins"),
              "de": ("Anruf", "zurück")}


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_caller_is_thanked_for_the_call_and_promised_a_call_back(language):
    thanks, call_back = CALL_WORDS[language]
    for name in (None, "Anna"):
        text = render_ack(ack(language, channel="phone", customer_name=name, promise_due=w(2026, 11, 25, 13)))
        assert thanks in text and call_back in text and "13:00" in text, text
        assert len(text) <= SMS_LIMIT  # it leaves by SMS
        sms = render_ack(ack(language, channel="sms", customer_name=name, promise_due=w(2026, 11, 25, 13)))
        assert thanks not in sms  # a text message is thanked as one


# --- overrides ----------------------------------------------------------------------------------


def test_an_override_replaces_the_packaged_template_for_that_call_only():
    overrides = {"ru/ack.txt.j2": "{{ business_name }}: ответим {{ promise_by }}. Номер {{ reference }}."}
    assert render_ack(ack("ru"), overrides) == "Northwind: ответим в понедельник, 23 ноября, до 13:00. Номер SB-7K2Q."
    assert render_ack(ack("ru")).startswith("Здравствуйте!")
    assert render_ack(ack("en"), overrides).startswith("Hello,")


def test_a_broken_override_is_rejected_naming_the_template():
    bad = {"pl/ack.txt.j2": "Dzień dobry{% if address %}, {{ address }}"}
    with pytest.raises(TemplateError, match="pl/ack.txt.j2") as caught:
        validate_overrides(bad)
    assert caught.value.template_name == "pl/ack.txt.j2"
    with pytest.raises(TemplateError, match="pl/ack.txt.j2"):
        render_ack(ack("pl"), bad)


def test_override_checks_catch_misspelt_variables_and_unknown_names():
    with pytest.raises(TemplateError) as caught:
        validate_overrides({"en/ack_sms.txt.j2": "Hi {{ custmer_name }}", "en/ack.txt.j3": "Hi",
                            "de/survey_thanks.txt.j2": "Danke!"})
    names = [name for name, _ in caught.value.problems]
    assert names == ["en/ack.txt.j3", "en/ack_sms.txt.j2"]
    assert "custmer_name" in str(caught.value)


def test_every_packaged_template_passes_the_override_check():
    validate_overrides({name: (TEMPLATES / name).read_text(encoding="utf-8") for name in template_names()})


# --- every template, every combination ----------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("category", [*CATEGORIES, "custom"])
@pytest.mark.parametrize("is_open", [True, False])
@pytest.mark.parametrize("channel", ["sms", "email", "telegram", "whatsapp", "phone"])
def test_every_acknowledgement_renders_cleanly(language, category, is_open, channel):
    for name in ("Anna", None):
        text = render_ack(ack(language, category=category, is_open=is_open, channel=channel, customer_name=name,
                              next_opening=None if is_open else MONDAY_OPENING))
        assert text and "None" not in text and "{" not in text and "  " not in text
        assert not re.search(r"\s[.,!?]|\.\.|\n{3}", text), text
        assert len(text) <= SMS_LIMIT or channel not in ("sms", "phone")


# --- redirect, surveys, agents ------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_redirect_says_where_to_write_instead(language):
    text = render_redirect(language, "instagram", ["https://m.me/northwind", "support@northwind.example"],
                           "Northwind")
    assert "Instagram" in text and "https://m.me/northwind" in text and "support@northwind.example" in text
    assert text.rstrip().endswith("Northwind")


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", ["csat", "nps"])
def test_survey_by_sms_says_how_to_answer_and_how_to_stop(language, kind):
    text = render_survey_question(language, kind, "sms", "Northwind", "Anna")
    low, high = ("1", "5") if kind == "csat" else ("0", "10")
    assert re.search(rf"\b{low}\b.*\b{high}\b", text)
    assert "STOP" in text and len(text) <= SMS_LIMIT
    email = render_survey_question(language, kind, "email", "Northwind", None)
    assert "STOP" not in email and email != text
    chat = render_survey_question(language, kind, "telegram", "Northwind", None)
    assert "STOP" in chat
    assert render_survey_thanks(language, kind)


def test_survey_questions_differ_between_csat_and_nps():
    assert render_survey_question("de", "csat", "sms", "Northwind", None) != \
        render_survey_question("de", "nps", "sms", "Northwind", None)


def agent_fields(kind: str) -> dict:
    fields = {"reference": "SB-7K2Q", "customer_name": "Anna Kowalska", "channel": "sms", "category": "delivery",
              "promise_due": MONDAY_PROMISE, "now": FRIDAY_EVENING,
              "excerpt": "Hello,\n\nwhere is my parcel?\nOrder 1234\nThanks\nAnna", "team_name": "Support",
              "owner_name": "Piotr", "link": "https://inbox.northwind.example/c/1"}
    allowed = {"assigned": "reference customer_name channel category promise_due now excerpt link",
               "customer_message": "reference customer_name channel excerpt link",
               "promise_warning": "reference customer_name channel promise_due now link",
               "promise_breached": "reference customer_name channel promise_due now owner_name link",
               "queued": "reference customer_name channel category team_name promise_due now link"}[kind]
    return {k: v for k, v in fields.items() if k in allowed.split()}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", AGENT_NOTICE_KINDS)
def test_agent_notices_render_in_every_language(language, kind):
    text = render_agent_notice(language, kind, **agent_fields(kind))
    assert "SB-7K2Q" in text and "Anna Kowalska" in text and "None" not in text
    if "promise_due" in agent_fields(kind):
        assert MONDAY_DEADLINE[language] in text
    if kind == "promise_breached":
        assert "Piotr" in text


@pytest.mark.parametrize("language", LANGUAGES)
def test_an_assignment_whose_promise_is_met_says_whose_it_is_without_a_due_line(language):
    # A reassignment after the first human reply: the router sends no due time (it is met).
    promised = render_agent_notice(language, "assigned", **agent_fields("assigned"))
    fields = {k: v for k, v in agent_fields("assigned").items() if k not in ("promise_due", "now")}
    met = render_agent_notice(language, "assigned", **fields)
    assert [line for line in promised.splitlines() if MONDAY_DEADLINE[language] not in line] == met.splitlines()
    assert met.splitlines()[0] == promised.splitlines()[0] and "SB-7K2Q" in met and "None" not in met


def test_an_assignment_notice_shows_the_first_lines_of_the_message():
    text = render_agent_notice(None, "assigned", **agent_fields("assigned"))
    assert text.startswith("New conversation assigned to you: SB-7K2Q")
    assert "Hello,\nwhere is my parcel?\nOrder 1234…" in text
    assert "Category: delivery" in text and "Channel: SMS" in text


def test_agent_notices_name_missing_or_unknown_fields():
    with pytest.raises(TypeError, match="missing promise_due"):
        render_agent_notice("en", "promise_warning", reference="SB-7K2Q", now=FRIDAY_EVENING)
    with pytest.raises(TypeError, match="unknown colour"):
        render_agent_notice("en", "customer_message", reference="SB-7K2Q", channel="sms", excerpt="hi", colour="red")
