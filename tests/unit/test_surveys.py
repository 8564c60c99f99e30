"""The survey's pure rules: eligibility, CSAT/NPS sampling, the message per channel, signed links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import pytest

from services.notifier.surveys import compose, skip_reason, survey_kind, whatsapp_survey_options
from shared.config import WhatsAppTemplate
from shared.settings import load_settings
from shared.survey_links import (
    LinkExpired,
    LinkInvalid,
    SurveyLinks,
    callback_data,
    parse_callback_data,
    read_link,
    sign_link,
    survey_secret,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
COOLDOWN = timedelta(days=30)
SECRET = "unit-secret-0123456789abcdef"


@pytest.mark.parametrize("human,opted_out,last,expected", [
    (True, False, None, None),
    (False, False, None, "no human replied"),
    (True, True, None, "opted out"),
    (True, False, NOW - timedelta(days=29), "cooldown"),
    (True, False, NOW - timedelta(days=30), None),  # the cooldown is over exactly at its end
    (True, False, NOW - timedelta(days=90), None),
    (False, True, NOW - timedelta(days=1), "no human replied"),  # the first reason is given
])
def test_eligibility(human, opted_out, last, expected) -> None:
    reason = skip_reason(human_replied=human, opted_out=opted_out, last_survey_at=last, now=NOW, cooldown=COOLDOWN)
    assert (reason is None) if expected is None else (expected in reason)


@pytest.mark.parametrize("sample", [0.0, 0.2, 0.5, 1.0])
def test_nps_goes_to_about_the_configured_share_and_always_the_same_conversations(sample) -> None:
    kinds = [survey_kind(f"conversation-{i}", sample) for i in range(4000)]
    assert kinds == [survey_kind(f"conversation-{i}", sample) for i in range(4000)]  # deterministic
    assert abs(kinds.count("nps") / len(kinds) - sample) < 0.03
    if sample == 0.0:
        assert set(kinds) == {"csat"}
    if sample == 1.0:
        assert set(kinds) == {"nps"}


def test_a_larger_sample_only_adds_conversations_to_nps() -> None:
    small = {i for i in range(1000) if survey_kind(f"c{i}", 0.1) == "nps"}
    large = {i for i in range(1000) if survey_kind(f"c{i}", 0.3) == "nps"}
    assert small < large


LINKS = SurveyLinks(SECRET, "https://support.example")


def message(kind: str, channel: str, links: SurveyLinks | None = LINKS):
    return compose(kind=kind, channel=channel, token="Tok3nTok3nTok3nX", language="pl", question="Q?",
                   business_name="Northwind", links=links, now=NOW)


def test_telegram_gets_inline_buttons_within_64_bytes() -> None:
    _, csat = message("csat", "telegram")
    assert csat["buttons"] == [[(str(i), f"sv:Tok3nTok3nTok3nX:{i}") for i in range(1, 6)]]
    _, nps = message("nps", "telegram")
    assert [len(row) for row in nps["buttons"]] == [6, 5]
    assert all(len(data.encode()) <= 64 for row in nps["buttons"] for _, data in row)


def test_messenger_quick_replies_whatsapp_list_sms_and_email() -> None:
    assert len(message("nps", "messenger")[1]["quick_replies"]) == 11
    assert message("csat", "whatsapp")[1] == {"buttons": [(str(i), f"sv:Tok3nTok3nTok3nX:{i}") for i in range(1, 6)],
                                              "list_button": "Oceń"}
    assert message("nps", "whatsapp")[1] == {}  # eleven do not fit a list: answered by a number
    assert message("csat", "sms") == ("Q?", {})
    body, options = message("csat", "email")
    urls = [word for word in body.split() if word.startswith("https://")]
    assert len(urls) == 6  # five ratings and the unsubscribe link
    # The unsubscribe link is also the mail's one-click List-Unsubscribe (RFC 8058).
    assert options == {"subject": "Jak nam poszło? — Northwind", "automatic": True, "list_unsubscribe": urls[5]}
    actions = [read_link(SECRET, urlparse(u).path.removeprefix("/survey/"), now=NOW) for u in urls]
    assert [a.score for a in actions[:5]] == [1, 2, 3, 4, 5] and actions[5].unsubscribe
    assert {a.kind for a in actions[:5]} == {"csat"}  # the page offers the whole scale, this score preselected
    assert {a.token for a in actions} == {"Tok3nTok3nTok3nX"} and {a.language for a in actions} == {"pl"}


def test_an_email_survey_without_a_secret_cannot_be_composed() -> None:
    with pytest.raises(ValueError, match="SURVEY_SECRET"):
        message("csat", "email", links=None)


TEMPLATE = WhatsAppTemplate(name="csat_survey", language="pl")
CSAT_TEMPLATE = {"name": "csat_survey", "language": "pl", "components": [
    {"type": "button", "sub_type": "quick_reply", "index": str(i - 1),
     "parameters": [{"type": "payload", "payload": f"sv:Tok3nTok3nTok3nX:{i}"}]} for i in range(1, 6)]}


NPS_TEMPLATE = WhatsAppTemplate(name="nps_survey", language="pl")


def whatsapp(kind: str, last: datetime | None, template: WhatsAppTemplate | None = TEMPLATE,
             nps_template: WhatsAppTemplate | None = NPS_TEMPLATE, links: SurveyLinks | None = LINKS) -> dict:
    return whatsapp_survey_options(message(kind, "whatsapp")[1], kind=kind, token="Tok3nTok3nTok3nX",
                                   last_customer_message_at=last, now=NOW, template=template,
                                   nps_template=nps_template, links=links, language="uk")


def nps_suffix(template: dict) -> str:
    """The signed link the NPS template's one URL button carries, checking the Cloud API shape."""
    assert template["name"] == "nps_survey" and template["language"] == "pl"
    [button] = template["components"]
    assert {k: v for k, v in button.items() if k != "parameters"} == {"type": "button", "sub_type": "url", "index": "0"}
    [parameter] = button["parameters"]
    assert parameter["type"] == "text"
    return parameter["text"]


def test_whatsapp_inside_the_window_is_the_list_with_the_template_should_it_close_before_a_retry() -> None:
    last = NOW - timedelta(hours=23, minutes=59)
    assert whatsapp("csat", last) == {**message("csat", "whatsapp")[1], "last_customer_message_at": last.isoformat(),
                                      "fallback_template": CSAT_TEMPLATE}
    assert whatsapp("csat", last, template=None) == {**message("csat", "whatsapp")[1],
                                                     "last_customer_message_at": last.isoformat()}
    # NPS in the window: a number in reply; its template (the score page's link) waits in reserve.
    nps = whatsapp("nps", last)
    assert nps == {"last_customer_message_at": last.isoformat(), "fallback_template": nps["fallback_template"]}
    nps_suffix(nps["fallback_template"])
    assert whatsapp("nps", last, nps_template=None) == {"last_customer_message_at": last.isoformat()}


@pytest.mark.parametrize("last", [NOW - timedelta(hours=24), NOW - timedelta(days=9), None])
def test_an_nps_survey_after_the_window_is_the_template_whose_url_opens_the_score_page(last) -> None:
    [(key, template)] = whatsapp("nps", last).items()
    assert key == "template"
    signed = nps_suffix(template)
    # The suffix (after PUBLIC_BASE_URL/survey/) is a signed link without a score, in the customer's
    # language, that says it is an NPS survey; it fits a URL path as it is.
    action = read_link(SECRET, signed, now=NOW + timedelta(days=29))
    assert (action.token, action.kind, action.score, action.unsubscribe, action.language) == (
        "Tok3nTok3nTok3nX", "nps", None, False, "uk")
    assert urlparse(f"https://support.example/survey/{signed}").path == f"/survey/{signed}"


@pytest.mark.parametrize("last", [NOW - timedelta(hours=24), NOW - timedelta(days=9), None])
def test_whatsapp_after_the_window_is_the_template_alone(last) -> None:
    # The button payloads are the in-window ones: a press is recorded the same way.
    assert whatsapp("csat", last) == {"template": CSAT_TEMPLATE}


@pytest.mark.parametrize("kind,template,nps_template,links,why", [
    ("csat", None, NPS_TEMPLATE, LINKS, "survey_template is not configured"),
    ("nps", TEMPLATE, None, LINKS, "nps_template is not configured (the NPS scale has 11 answers"),
    ("nps", TEMPLATE, NPS_TEMPLATE, None, "SURVEY_SECRET is not set"),
])
def test_whatsapp_after_the_window_without_a_fitting_template_says_why(kind, template, nps_template, links,
                                                                       why) -> None:
    with pytest.raises(ValueError, match="outside WhatsApp's 24-hour window") as info:
        whatsapp(kind, NOW - timedelta(days=2), template=template, nps_template=nps_template, links=links)
    assert why in str(info.value)


def test_callback_data_round_trip_and_foreign_data() -> None:
    assert parse_callback_data(callback_data("Tok3nTok3nTok3nX", 10)) == ("Tok3nTok3nTok3nX", 10)
    for foreign in ("csat:5", "sv:short:5", "sv:Tok3nTok3nTok3nX:100", "sv:Tok3n/Tok3nTok3nX:5", None, 5):
        assert parse_callback_data(foreign) is None


def test_a_signed_link_reads_back_until_it_expires() -> None:
    signed = sign_link(SECRET, token="Tok3nTok3nTok3nX", language="uk", score=3, now=NOW)
    action = read_link(SECRET, signed, now=NOW + timedelta(days=29))
    assert (action.token, action.score, action.language, action.unsubscribe) == ("Tok3nTok3nTok3nX", 3, "uk", False)
    with pytest.raises(LinkExpired) as expired:
        read_link(SECRET, signed, now=NOW + timedelta(days=31))
    assert expired.value.language == "uk"


@pytest.mark.parametrize("mangle", [
    lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # the signature
    lambda s: "e" + s[1:],  # the payload
    lambda s: s.split(".")[0],  # no signature at all
    lambda s: "",
])
def test_a_tampered_link_is_refused(mangle) -> None:
    signed = sign_link(SECRET, token="Tok3nTok3nTok3nX", language="en", score=5, now=NOW)
    with pytest.raises(LinkInvalid):
        read_link(SECRET, mangle(signed), now=NOW)


def test_a_link_may_say_its_survey_kind_and_older_links_without_one_still_work() -> None:
    page = read_link(SECRET, sign_link(SECRET, token="Tok3nTok3nTok3nX", language="de", kind="nps", now=NOW), now=NOW)
    assert (page.kind, page.score, page.signed_at) == ("nps", None, NOW)
    old = read_link(SECRET, sign_link(SECRET, token="Tok3nTok3nTok3nX", language="de", score=9, now=NOW), now=NOW)
    assert (old.kind, old.score) == (None, 9)
    # A score outside the kind's scale is no answer, even when signed.
    with pytest.raises(LinkInvalid):
        read_link(SECRET, sign_link(SECRET, token="Tok3nTok3nTok3nX", language="de", kind="csat", score=9, now=NOW),
                  now=NOW)


def test_a_link_signed_with_another_secret_is_refused() -> None:
    signed = sign_link("another-secret-0123456789", token="Tok3nTok3nTok3nX", language="en", score=5, now=NOW)
    with pytest.raises(LinkInvalid):
        read_link(SECRET, signed, now=NOW)


def test_the_secret_is_derived_in_the_embedded_mode_only() -> None:
    settings = load_settings({})
    assert survey_secret(settings, embedded=False) is None
    derived = survey_secret(settings, embedded=True)
    assert derived and derived == survey_secret(load_settings({}), embedded=True)
    explicit = load_settings({"SURVEY_SECRET": "s" * 20})
    assert survey_secret(explicit, embedded=False) == "s" * 20


def test_after_the_window_a_survey_template_goes_in_the_customers_language_when_approved_in_it() -> None:
    both = WhatsAppTemplate(name="csat_survey", language="en", languages=("uk", "pl"))
    nps = WhatsAppTemplate(name="nps_survey", language="en", languages=("uk",))
    csat = whatsapp("csat", None, template=both)["template"]  # the customer's language is uk
    assert (csat["name"], csat["language"]) == ("csat_survey", "uk")
    assert whatsapp("nps", None, nps_template=nps)["template"]["language"] == "uk"
    assert whatsapp("nps", None, nps_template=WhatsAppTemplate(name="nps_survey", language="en"))[
        "template"]["language"] == "en"  # not approved in Ukrainian: its fallback
