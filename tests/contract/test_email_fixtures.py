"""E-mail: one test per fixture — the raw message in, the exact InboundMessage out; the relay
webhook's secret check; quote/signature stripping and HTML conversion on the shapes clients send."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.gateway.channels import Malformed, RawRequest, Unauthenticated
from services.gateway.channels.email import SECRET_HEADER, EmailRelayAdapter, parse_mime
from services.gateway.channels.mail_html import html_to_text
from shared.contracts import Attachment, Envelope, Identity, InboundMessage, decode, derive_id, encode
from shared.text import strip_quotes_and_signature

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "email"
RECEIVED = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)  # when the poller or relay got it
OURS = {"support.northwind.example"}
TO_US = ["help@support.northwind.example"]
DIAGNOSTIC = "550 5.1.1 <jan.kowalsky@exmaple.pl>: Recipient address rejected: User unknown"


def load(name: str) -> bytes:
    return (FIXTURES / f"{name}.eml").read_bytes()


def at(hour: int, minute: int, second: int) -> datetime:
    return datetime(2026, 3, 10, hour, minute, second, tzinfo=UTC)


EXPECTED: dict[str, InboundMessage] = {
    # Plain text; the address is lower-cased; "Thanks,\nMark" is a sign-off, cut for categorisation.
    "plain_question_en": InboundMessage(
        channel="email", external_id="CAF7x3Qk2p9zrV1mE8d0hYb+Jd3=Q@mail.example.com",
        sender=Identity("email", "mark.evans@example.com"), sender_name="Mark Evans",
        reply_to="mark.evans@example.com", received_at=RECEIVED, sent_at=at(8, 12, 44), subject="Where is my order #48213?",
        text='Hi,\n\nI ordered a rain jacket on March 2 (order #48213) and the tracking page\n'
             'still says "label created". Could you check where it is?',
        meta={"full_text": 'Hi,\n\nI ordered a rain jacket on March 2 (order #48213) and the tracking page\n'
                           'still says "label created". Could you check where it is?\n\nThanks,\nMark',
              "to": TO_US},
    ),
    # koi8-r body, koi8-r encoded words in From and Subject.
    "koi8r_encoded_subject_ru": InboundMessage(
        channel="email", external_id="1741590000.123456.olga@mail.example.ru",
        sender=Identity("email", "olga.smirnova@mail.example.ru"), sender_name="Ольга Смирнова",
        reply_to="olga.smirnova@mail.example.ru", received_at=RECEIVED, sent_at=at(7, 57, 58), subject="Не пришёл возврат денег",
        text="Здравствуйте!\n\nВернула куртку 20 февраля, а деньги на карту так и не пришли.\nНомер заказа 47790.",
        meta={"full_text": "Здравствуйте!\n\nВернула куртку 20 февраля, а деньги на карту так и не пришли.\n"
                           "Номер заказа 47790.\n\nС уважением,\nОльга Смирнова", "to": TO_US},
    ),
    # windows-1251; Reply-To differs from From: answers go to Reply-To, the identity stays From.
    "windows1251_uk": InboundMessage(
        channel="email", external_id="20260310084011.GA4411@post.example.ua",
        sender=Identity("email", "olena.k@post.example.ua"), sender_name="Олена Коваленко",
        reply_to="olena.kovalenko@work.example.ua", received_at=RECEIVED, sent_at=at(8, 40, 11), subject="Пошкоджена посилка",
        text="Добрий день!\n\nПосилка прийшла пошкоджена: коробка розірвана, одна чашка розбита.\n"
             "Що робити далі? Фото можу надіслати.",
        meta={"full_text": "Добрий день!\n\nПосилка прийшла пошкоджена: коробка розірвана, одна чашка розбита.\n"
                           "Що робити далі? Фото можу надіслати.\n\nЗ повагою,\nОлена Коваленко\n+380 67 123 4567",
              "to": TO_US},
    ),
    # iso-8859-2 quoted-printable; Gmail's attribution wrapped over two lines, then the ">" quote.
    "iso8859_2_qp_gmail_reply_pl": InboundMessage(
        channel="email", external_id="CAJ8pLw0vX4n2Q+r5Tq9mD1uZ7yK@mail.example.com",
        sender=Identity("email", "anna.wisniewska@example.pl"), sender_name="Anna Wiśniewska",
        reply_to="anna.wisniewska@example.pl", received_at=RECEIVED, sent_at=at(8, 5, 27), subject="Re: Zwrot pieniędzy",
        text="Dzień dobry,\n\ndziękuję za odpowiedź, ale nadal nie dostałam zwrotu pieniędzy za\n"
             "zamówienie 47712. Minęły już dwa tygodnie.",
        thread_refs=("174100231.77.ack@support.northwind.example",),
        meta={"full_text": "Dzień dobry,\n\ndziękuję za odpowiedź, ale nadal nie dostałam zwrotu pieniędzy za\n"
                           "zamówienie 47712. Minęły już dwa tygodnie.\n\nPozdrawiam\nAnna Wiśniewska\n\n"
                           "W dniu wt., 3 mar 2026 o 14:05 Northwind Support <\n"
                           "help@support.northwind.example> napisał(a):\n\n> Dzień dobry,\n>\n"
                           "> zwrot został zlecony i powinien dotrzeć w ciągu 5 dni roboczych.\n>\n"
                           "> Pozdrawiamy,\n> Zespół Northwind\n>",
              "to": TO_US},
    ),
    # UTF-8 base64 body; the signature after "--" goes.
    "utf8_base64_signature_lt": InboundMessage(
        channel="email", external_id="a3c9e1f0-5b7d-4e2a-9c41-lt48001@example.lt",
        sender=Identity("email", "jonas.petraitis@example.lt"), sender_name="Jonas Petraitis",
        reply_to="jonas.petraitis@example.lt", received_at=RECEIVED, sent_at=at(7, 31, 2), subject="Pristatymo adreso pakeitimas",
        text="Laba diena,\n\nnorėčiau pakeisti užsakymo 48001 pristatymo adresą į Vilniaus g. 12, Kaunas.\n"
             "Ar dar įmanoma?",
        meta={"full_text": "Laba diena,\n\nnorėčiau pakeisti užsakymo 48001 pristatymo adresą į Vilniaus g. 12, "
                           "Kaunas.\nAr dar įmanoma?\n\n--\nJonas Petraitis\nUAB „Medžio namai“\nTel. +370 612 34567",
              "to": TO_US},
    ),
    # HTML only: paragraphs and <br> kept, the link kept as "text (url)", style and tags gone.
    "html_only_de": InboundMessage(
        channel="email", external_id="trinity-4f1c2a9e-0d5b-4b8e-a7c3-48150@3c-app-webde-bap12",
        sender=Identity("email", "hans.mueller@example.de"), sender_name="Hans Müller",
        reply_to="hans.mueller@example.de", received_at=RECEIVED, sent_at=at(6, 50, 40),
        subject="Doppelte Abbuchung für Bestellung 48150",
        text="Guten Tag,\n\ndie Zahlung für meine Bestellung 48150 wurde zweimal abgebucht.\n"
             "Bitte erstatten Sie den doppelten Betrag.\n\n"
             "Den Kontoauszug finden Sie hier (https://files.example.de/kontoauszug-48150.pdf).",
        meta={"full_text": "Guten Tag,\n\ndie Zahlung für meine Bestellung 48150 wurde zweimal abgebucht.\n"
                           "Bitte erstatten Sie den doppelten Betrag.\n\n"
                           "Den Kontoauszug finden Sie hier (https://files.example.de/kontoauszug-48150.pdf).\n\n"
                           "Mit freundlichen Grüßen\nHans Müller",
              "to": TO_US},
    ),
    # text/plain preferred over its HTML alternative; the PDF as metadata with its decoded size.
    "alternative_with_pdf_attachment": InboundMessage(
        channel="email", external_id="CAM5kR2x+Yh7T0b9q3Lp8Wd4Zs6@mail.example.com",
        sender=Identity("email", "maria.ivanova@example.bg"), sender_name="Мария Иванова",
        reply_to="maria.ivanova@example.bg", received_at=RECEIVED, sent_at=at(8, 20, 11), subject="Грешна фактура 48213",
        text="Здравейте,\n\nвъв фактурата за поръчка 48213 ЕИК-то на фирмата е грешно.\n"
             "Прилагам фактурата. Моля, издайте нова.",
        attachments=(Attachment(content_type="application/pdf", name="faktura-48213.pdf", size=142),),
        meta={"full_text": "Здравейте,\n\nвъв фактурата за поръчка 48213 ЕИК-то на фирмата е грешно.\n"
                           "Прилагам фактурата. Моля, издайте нова.\n\nПоздрави,\nМария Иванова", "to": TO_US},
    ),
    # Outlook: the old thread is not ">"-quoted, it follows "-----Original Message-----".
    "outlook_reply_original_message": InboundMessage(
        channel="email",
        external_id="AM7PR03MB6551C2D1E0A3F1B2C4D5E6F7A8B9C@AM7PR03MB6551.eurprd03.prod.outlook.example",
        sender=Identity("email", "p.novak@acme-retail.example"), sender_name="Peter Novak",
        reply_to="p.novak@acme-retail.example", received_at=RECEIVED, sent_at=at(8, 44, 48),
        subject="RE: Wrong size delivered [SB-KQ7M2X4PZA]",
        text="Hello,\n\nThe replacement arrived but it is the wrong size again (M instead of L).\n"
             "Can you send an L, please?",
        thread_refs=("177281232.4411.reply@support.northwind.example",),
        meta={"full_text": "Hello,\n\nThe replacement arrived but it is the wrong size again (M instead of L).\n"
                           "Can you send an L, please?\n\nRegards,\nPeter Novak\nPurchasing | Acme Retail s.r.o.\n\n"
                           "-----Original Message-----\nFrom: Northwind Support <help@support.northwind.example>\n"
                           "Sent: Friday, March 6, 2026 4:12 PM\nTo: Peter Novak <p.novak@acme-retail.example>\n"
                           "Subject: RE: Wrong size delivered [SB-KQ7M2X4PZA]\n\nDear Peter,\n\n"
                           "we have shipped a replacement today. You will receive it within two days.\n\n"
                           "Best regards,\nAnna\nNorthwind Outfitters",
              "to": TO_US, "reference": "SB-KQ7M2X4PZA"},
    ),
    # Threading: In-Reply-To first, then the rest of References; the subject's token; format=flowed
    # joined back into one line.
    "reply_to_our_message_with_reference": InboundMessage(
        channel="email", external_id="5e0d7c1a-3f9b-4d62-8a1e-0c4b2f7d9e13@example.com",
        sender=Identity("email", "maria.garcia@example.com"), sender_name="Maria Garcia",
        reply_to="maria.garcia@example.com", received_at=RECEIVED, sent_at=at(9, 2, 33),
        subject="Re: We have received your message [SB-ABCDEFGHJK]",
        text="Thank you, but the parcel is still not here. The courier says the address label is unreadable.",
        thread_refs=("177305111.2.ack@support.northwind.example", "177305000.1.first@example.com"),
        meta={"full_text": "Thank you, but the parcel is still not here. The courier says the address label is "
                           "unreadable.\n\nOn 09.03.2026 11:02, Northwind Support wrote:\n> Hello Maria,\n>\n"
                           "> thank you for your message. We will answer by Tuesday 10:00.\n>\n> Northwind Outfitters",
              "to": TO_US, "reference": "SB-ABCDEFGHJK"},
    ),
    # Thunderbird in Bulgarian: "На … написа:" then ">" lines.
    "thunderbird_reply_bg": InboundMessage(
        channel="email", external_id="9b1f2e3d-7a6c-4b5e-8d9f-0a1b2c3d4e5f@example.bg",
        sender=Identity("email", "maria.ivanova@example.bg"), sender_name="Мария Иванова",
        reply_to="maria.ivanova@example.bg", received_at=RECEIVED, sent_at=at(9, 10, 1), subject="Re: Поръчката ви е изпратена",
        text="Здравейте,\n\nпоръчката дойде, но липсва коланът към роклята. Можете ли да го изпратите?",
        thread_refs=("177304000.5.reply@support.northwind.example",),
        meta={"full_text": "Здравейте,\n\nпоръчката дойде, но липсва коланът към роклята. Можете ли да го "
                           "изпратите?\n\nПоздрави,\nМария Иванова\n\nНа 09.03.2026 в 17:40, Northwind Support "
                           "написа:\n> Здравейте, Мария,\n>\n> поръчката ви е изпратена.", "to": TO_US},
    ),
    # Raw windows-1251 bytes in From and Subject (no encoded words): read with the body's charset.
    "raw_8bit_headers_ru": InboundMessage(
        channel="email", external_id="000a01dc9f3e$1b2c3d40$51667ac0$@old-isp.example.ru",
        sender=Identity("email", "ivan.petrov@old-isp.example.ru"), sender_name="Иван Петров",
        reply_to="ivan.petrov@old-isp.example.ru", received_at=RECEIVED, sent_at=at(8, 25, 40), subject="Оплата картой",
        text='Добрый день. Пытаюсь оплатить заказ 48230 картой, но оплата не проходит,\nпишет "ошибка 3DS". '
             "Что делать?",
        meta={"full_text": 'Добрый день. Пытаюсь оплатить заказ 48230 картой, но оплата не проходит,\n'
                           'пишет "ошибка 3DS". Что делать?', "to": TO_US},
    ),
    # --- automatic mail: routed, never acknowledged -------------------------------------------------
    "auto_reply_out_of_office": InboundMessage(
        channel="email", external_id="oof-20260310-0800-ks@example.de",
        sender=Identity("email", "k.schmidt@example.de"), sender_name="Karin Schmidt",
        reply_to="k.schmidt@example.de", received_at=RECEIVED, sent_at=at(8, 0, 2),
        subject="Out of office: We have received your message [SB-ABCDEFGHJK]",
        text="Vielen Dank für Ihre Nachricht. Ich bin bis einschließlich 16.03. nicht im Büro\n"
             "und habe keinen Zugriff auf meine E-Mails.\n\n"
             "I am out of the office until 16 March with no access to e-mail.",
        automatic=True, thread_refs=("177305200.3.ack@support.northwind.example",),
        meta={"full_text": "Vielen Dank für Ihre Nachricht. Ich bin bis einschließlich 16.03. nicht im Büro\n"
                           "und habe keinen Zugriff auf meine E-Mails.\n\n"
                           "I am out of the office until 16 March with no access to e-mail.",
              "to": TO_US, "reference": "SB-ABCDEFGHJK", "automatic_reason": "Auto-Submitted: auto-replied",
              "automatic_kind": "vacation"},
    ),
    "x_auto_response_suppress": InboundMessage(
        channel="email", external_id="po-2026-0311.1741590920@crm.acme-retail.example",
        sender=Identity("email", "orders@acme-retail.example"), sender_name="Acme Retail Purchasing",
        reply_to="orders@acme-retail.example", received_at=RECEIVED, sent_at=at(7, 15, 20),
        subject="Purchase order PO-2026-0311 confirmation needed",
        text="Please confirm purchase order PO-2026-0311 (40 x rain jacket, size L)\nby replying to this message.",
        automatic=True,
        meta={"full_text": "Please confirm purchase order PO-2026-0311 (40 x rain jacket, size L)\n"
                           "by replying to this message.",
              "to": TO_US, "automatic_reason": "X-Auto-Response-Suppress: autoreply, oof",
              "automatic_kind": "auto"},
    ),
    # A DSN: the human-readable part is the text; the report and our returned mail are not attachments;
    # the failed recipient is named for the notifier to block.
    "bounce_delivery_status": InboundMessage(
        channel="email", external_id="20260310081503.0E2B1C0A1B@mx.northwind.example",
        sender=Identity("email", "mailer-daemon@mx.northwind.example"), sender_name="Mail Delivery System",  # the comment form names the sender
        reply_to="mailer-daemon@mx.northwind.example", received_at=RECEIVED, sent_at=at(8, 15, 3),
        subject="Undelivered Mail Returned to Sender",
        text="This is the mail system at host mx.northwind.example.\n\n"
             "I'm sorry to have to inform you that your message could not\n"
             "be delivered to one or more recipients. It's attached below.\n\n"
             "                   The mail system\n\n"
             "<jan.kowalsky@exmaple.pl>: host mx.exmaple.pl[192.0.2.200] said: 550 5.1.1\n"
             "    <jan.kowalsky@exmaple.pl>: Recipient address rejected: User unknown (in\n"
             "    reply to RCPT TO command)",
        automatic=True,
        meta={"full_text": "This is the mail system at host mx.northwind.example.\n\n"
                           "I'm sorry to have to inform you that your message could not\n"
                           "be delivered to one or more recipients. It's attached below.\n\n"
                           "                   The mail system\n\n"
                           "<jan.kowalsky@exmaple.pl>: host mx.exmaple.pl[192.0.2.200] said: 550 5.1.1\n"
                           "    <jan.kowalsky@exmaple.pl>: Recipient address rejected: User unknown (in\n"
                           "    reply to RCPT TO command)",
              "to": TO_US, "automatic_reason": "delivery-status report (bounce)",
              "automatic_kind": "bounce", "bounced_recipient": "jan.kowalsky@exmaple.pl",
              "report": {"kind": "bounce", "original_message_id": "177313050.9.ack@support.northwind.example",
                         "recipient": "jan.kowalsky@exmaple.pl", "permanent": True, "status": "5.1.1",
                         "diagnostic": DIAGNOSTIC, "failed": True}},
    ),
    "mailing_list": InboundMessage(
        channel="email", external_id="20260310060007.9f3a1c@mail.newsletters.example",
        sender=Identity("email", "news@outdoor-trade.example"), sender_name="Outdoor Trade News",
        reply_to="news@outdoor-trade.example", received_at=RECEIVED, sent_at=at(6, 0, 7),
        subject="Spring trade fair: last chance to book a stand",
        text="Book your stand at the Spring Outdoor Trade Fair before 20 March.", automatic=True,
        meta={"full_text": "Book your stand at the Spring Outdoor Trade Fair before 20 March.", "to": TO_US,
              "automatic_reason": "Precedence: list", "automatic_kind": "list"},
    ),
    "noreply_sender": InboundMessage(
        channel="email", external_id="px4821300.delay.1741592738@parcels.example",
        sender=Identity("email", "no-reply@parcels.example"), sender_name="Parcel Express",
        reply_to="no-reply@parcels.example", received_at=RECEIVED, sent_at=at(7, 45, 38), subject="Shipment PX4821300 is delayed",
        text="Your shipment PX4821300 is delayed because of weather conditions.\nNew estimated delivery: 12 March 2026.",
        automatic=True,
        meta={"full_text": "Your shipment PX4821300 is delayed because of weather conditions.\n"
                           "New estimated delivery: 12 March 2026.", "to": TO_US,
              "automatic_reason": "automated sender no-reply@parcels.example",
              "automatic_kind": "auto"},
    ),
    # Our own acknowledgement come back (a redirect kept the Message-ID, dropped Auto-Submitted).
    "own_message_id_loop": InboundMessage(
        channel="email", external_id="177313020.12.ack@support.northwind.example",
        sender=Identity("email", "help@support.northwind.example"), sender_name="Northwind Support",
        reply_to="help@support.northwind.example", received_at=RECEIVED, sent_at=at(8, 30, 2),
        subject="We have received your message [SB-ABCDEFGHJK]",
        text="Thank you for your message. We will answer by Tuesday 12:00.", automatic=True,
        meta={"full_text": "Thank you for your message. We will answer by Tuesday 12:00.", "to": TO_US,
              "reference": "SB-ABCDEFGHJK",
              "automatic_reason": "our own Message-ID (support.northwind.example): our mail came back",
              "automatic_kind": "loop"},
    ),
    # No Message-ID: a stable hash of the bytes is the dedupe key; the 1970 Date is not believed.
    "no_message_id": InboundMessage(
        channel="email", external_id="sha256-" + hashlib.sha256(load("no_message_id")).hexdigest(),
        sender=Identity("email", "lukas.weber@example.at"), sender_name="Lukas Weber",
        reply_to="lukas.weber@example.at", received_at=RECEIVED, subject="Contact form: exchange",
        text="Can I exchange the boots (order 48190) for one size bigger?",
        meta={"full_text": "Can I exchange the boots (order 48190) for one size bigger?", "to": TO_US},
    ),
}

MALFORMED = {
    "malformed_no_headers": "no header fields",
}


#: No authserv-id configured: nothing vouches for any sender (tests/unit/test_mail_auth.py has the verdicts).
UNVERIFIED = {"verified": False, "method": None,
              "reason": "no trusted mail server is configured (channels.email.authserv_ids)"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_to_exact_message(name: str) -> None:
    expected = EXPECTED[name]
    expected = dataclasses.replace(expected, meta={**expected.meta, "sender_auth": UNVERIFIED})
    assert parse_mime(load(name), received_at=RECEIVED, our_domains=OURS) == expected


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_fixture_names_the_problem(name: str) -> None:
    with pytest.raises(Malformed, match=MALFORMED[name]):
        parse_mime(load(name), received_at=RECEIVED, our_domains=OURS)


def test_every_fixture_is_used() -> None:
    on_disk = {p.stem for p in FIXTURES.glob("*.eml")}
    assert on_disk == set(EXPECTED) | set(MALFORMED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_message_survives_the_bus_contract(name: str) -> None:
    msg = EXPECTED[name]
    envelope = Envelope.wrap(msg, message_id=derive_id("email", msg.external_id), correlation_id="c",
                             occurred_at=RECEIVED)
    assert decode(encode(envelope)).payload == msg


def test_the_same_bytes_always_give_the_same_external_id() -> None:
    """A mail fetched twice (crash between accept and move) or relayed twice must dedupe downstream."""
    later = datetime(2026, 3, 11, tzinfo=UTC)
    for name in ("plain_question_en", "no_message_id"):
        first = parse_mime(load(name), received_at=RECEIVED, our_domains=OURS)
        again = parse_mime(load(name), received_at=later, our_domains=OURS)
        assert first.external_id == again.external_id


def test_a_date_after_receipt_is_not_believed() -> None:
    early = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)  # before the mail says it was written (08:12:44)
    msg = parse_mime(load("plain_question_en"), received_at=early, our_domains=OURS)
    assert msg.received_at == early and msg.sent_at is None


def test_without_our_domain_our_own_mail_is_not_recognised() -> None:
    msg = parse_mime(load("own_message_id_loop"), received_at=RECEIVED, our_domains={"other.example"})
    assert not msg.automatic


# --- the relay webhook ----------------------------------------------------------------------------

def relay_request(body: bytes, secret: str | None) -> RawRequest:
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    return RawRequest(url="https://sb.example/webhooks/email", headers=headers, body=body, form={},
                      received_at=RECEIVED)


def test_relay_with_the_right_secret_parses_the_mime() -> None:
    adapter = EmailRelayAdapter("relay-s3cret", OURS)
    request = relay_request(load("plain_question_en"), "relay-s3cret")
    adapter.verify(request)
    [msg] = adapter.parse(request)
    assert msg == dataclasses.replace(EXPECTED["plain_question_en"],
                                      meta={**EXPECTED["plain_question_en"].meta, "sender_auth": UNVERIFIED})


@pytest.mark.parametrize("given", [None, "", "wrong", "relay-s3cret "])
def test_relay_with_a_missing_or_wrong_secret_is_refused(given: str | None) -> None:
    with pytest.raises(Unauthenticated, match=SECRET_HEADER):
        EmailRelayAdapter("relay-s3cret", OURS).verify(relay_request(load("plain_question_en"), given))


@pytest.mark.parametrize("configured", [None, ""])
def test_relay_without_a_configured_secret_refuses_everything(configured: str | None) -> None:
    with pytest.raises(Unauthenticated):
        EmailRelayAdapter(configured, OURS).verify(relay_request(load("plain_question_en"), ""))


@pytest.mark.parametrize(("body", "problem"), [
    (b"", "empty"),
    (b" \r\n\r\n", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "no header fields"),
    (b"Subject: hello\r\n\r\nno sender here\r\n", "no sender address"),
    (b"From: not an address\r\nSubject: x\r\n\r\nbody\r\n", "no sender address"),
])
def test_relay_garbage_is_malformed_and_named(body: bytes, problem: str) -> None:
    adapter = EmailRelayAdapter("relay-s3cret", OURS)
    request = relay_request(body, "relay-s3cret")
    adapter.verify(request)
    with pytest.raises(Malformed, match=problem):
        adapter.parse(request)


# --- quotes, signatures, HTML: shapes the fixtures do not cover ---------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    # Bottom-posting: the answer below the quote is kept.
    ("On Mon, 9 Mar 2026 at 11:02, Northwind <help@support.northwind.example> wrote:\n> Which size?\n\nSize L, please.",
     "Size L, please."),
    # Inline answers between quotes.
    ("> Which size?\nL\n> Which colour?\nBlue", "L\nBlue"),
    # German Gmail puts the name after "schrieb".
    ("Danke, angekommen.\n\nAm Mo., 9. März 2026 um 11:02 Uhr schrieb Northwind <help@support.northwind.example>:\n"
     "> Ihr Paket ist unterwegs.", "Danke, angekommen."),
    # Russian Gmail has no verb at all: a date-and-address line ending in ":" followed by quotes.
    ("Спасибо!\n\nпн, 9 мар. 2026 г. в 11:02, Northwind <help@support.northwind.example>:\n> Посылка в пути.",
     "Спасибо!"),
    # Ukrainian and Lithuanian attributions without ">" (a client that indents instead): cut there.
    ("Дякую.\n\n09.03.2026 11:02, Northwind написав:\n    Посилка в дорозі.", "Дякую."),
    ("Ačiū.\n\n2026-03-09 11:02, Northwind rašė:\n    Siunta pakeliui.", "Ačiū."),
    # Outlook in Polish, HTML turned to text: the From:/Sent: block ends the new text.
    ("Proszę o fakturę.\n\n________________________________\nOd: Northwind <help@support.northwind.example>\n"
     "Wysłano: poniedziałek, 9 marca 2026 11:02\nDo: Jan\nTemat: Zamówienie\n\nDzień dobry...",
     "Proszę o fakturę."),
    # A sentence that merely ends in "wrote:" without a date or address is the customer's text.
    ("My friend wrote:\nthe zip is broken", "My friend wrote:\nthe zip is broken"),
    # Mobile footers.
    ("Where is my parcel?\n\nSent from my iPhone", "Where is my parcel?"),
    ("Gdzie jest paczka?\n\nWysłane z iPhone'a", "Gdzie jest paczka?"),
    # ... but a place is not an app.
    ("The parcel never came.\nSent from Berlin on 2 March.", "The parcel never came.\nSent from Berlin on 2 March."),
    # A sign-off followed by a long paragraph is not a signature.
    ("Thanks\nbut the jacket you sent is not the one I ordered, it is a completely different model and colour.",
     "Thanks\nbut the jacket you sent is not the one I ordered, it is a completely different model and colour."),
    # Two sign-offs: the signature starts at the first.
    ("Please cancel order 48213.\n\nThanks,\nJan\n\nBest regards\nJan Kowalski\n+48 601 234 567",
     "Please cancel order 48213."),
    # A message that is only a sign-off stays as it is.
    ("Thank you!", "Thank you!"),
    # Nothing but a forwarded thread: keep it all rather than nothing.
    ("-----Original Message-----\nFrom: shop@example.com\nSent: today\n\nYour order 48213 is cancelled.",
     "-----Original Message-----\nFrom: shop@example.com\nSent: today\n\nYour order 48213 is cancelled."),
])
def test_strip_quotes_and_signature(text: str, expected: str) -> None:
    assert strip_quotes_and_signature(text) == expected


def test_html_with_an_unclosed_head_keeps_its_body() -> None:
    assert html_to_text("<html><head><title>Order<meta charset=utf-8><body><p>Where is order 48213?</p>") == (
        "Where is order 48213?")


def test_html_to_text_keeps_structure_and_drops_markup() -> None:
    # &nbsp; becomes a plain space: categorisation should not see two kinds of space.
    html = """<html><head><title>x</title><style>.a{color:red}</style><script>alert(1)</script></head><body>
      <div>Hello&nbsp;team,</div><div><br></div>
      <ol><li>First   item</li><li>Second <a href="https://example.com/x">link</a></li></ol>
      <ul><li><a href="mailto:help@example.com">help@example.com</a></li></ul>
      <table><tr><td>Order</td><td>48213</td></tr></table>
      <div class="gmail_quote">On Mon, 9 Mar 2026 Northwind &lt;help@example.com&gt; wrote:<br>
      <blockquote>Old text<br>more old text</blockquote></div>
    </body></html>"""
    text = html_to_text(html)
    assert text == ("Hello team,\n\n1. First item\n2. Second link (https://example.com/x)\n\n"
                    "- help@example.com\n\nOrder 48213\n\n"
                    "On Mon, 9 Mar 2026 Northwind <help@example.com> wrote:\n\n> Old text\n> more old text")
    assert strip_quotes_and_signature(text) == ("Hello team,\n\n1. First item\n2. Second link "
                                                "(https://example.com/x)\n\n- help@example.com\n\nOrder 48213")


# --- bad input never becomes a 500 -------------------------------------------------------------------

_SPLICES = [b"=?utf-8?B?zzz?=", b"=?x-unknown?Q?abc?=", b"\r\n\r\n", b"<", b">", b"\r\n ", b"\x00", b"\xff\xfe",
            b"Content-Type: multipart/mixed; boundary=x\r\n", b"--x\r\n", b"charset=foo",
            b"Date: 99 Foo 99999 99:99\r\n", b"Content-Transfer-Encoding: base64\r\n"]


def _mutate(rng, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(len(out)) if out else 0
        op = rng.random()
        if op < 0.4 and out:
            out[pos] = rng.randrange(256)
        elif op < 0.6:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        elif op < 0.8 and out:
            del out[pos:pos + rng.randint(1, 200)]
        else:
            out[pos:pos] = rng.choice(_SPLICES)
    return bytes(out)


def test_mangled_mail_is_malformed_or_a_valid_message() -> None:
    """Flipped, cut and spliced fixtures: either Malformed (→ 400 / quarantine) or a message the bus
    contract accepts, as UTF-8 JSON without NUL (PostgreSQL text refuses it) — never another exception."""
    import json
    import random

    rng = random.Random(20260310)
    originals = [p.read_bytes() for p in sorted(FIXTURES.glob("*.eml"))]
    parsed = 0
    for _ in range(1500):
        raw = _mutate(rng, rng.choice(originals))
        try:
            msg = parse_mime(raw, received_at=RECEIVED, our_domains=OURS)
        except Malformed:
            continue
        body = encode(Envelope.wrap(msg, message_id=derive_id("email", msg.external_id), correlation_id="c",
                                    occurred_at=RECEIVED))
        wire = json.dumps(body)
        assert "\\u0000" not in wire
        wire.encode("utf-8")  # no lone surrogates from undecodable header bytes
        parsed += 1
    # Most mangling leaves a readable mail: the parser degrades rather than gives up. (A mangled line in
    # the header block ends it, and a mail whose From is lost that way is rightly quarantined.)
    assert parsed > 750


def test_hostile_sizes_stay_linear() -> None:
    """Shapes that made an earlier version quadratic (minutes of CPU on one request)."""
    import time

    head = b"From: a@example.com\r\nSubject: x\r\n"
    hostile = [
        head + b"Content-Type: text/html\r\n\r\n<div>" + b"<span>word</span> " * 100_000 + b"</div>",
        head + b"\r\n" + b"--\r\n" * 30_000 + b"text\r\n" * 20_000,
        head + b"References: " + b" ".join(b"<%d@example.com>" % i for i in range(50_000)) + b"\r\n\r\nx",
        head.replace(b"Subject: x", b"To: " + b", ".join(b"u%d@example.com" % i for i in range(50_000))) + b"\r\nx",
    ]
    started = time.monotonic()
    for raw in hostile:
        parse_mime(raw, received_at=RECEIVED, our_domains=OURS)
    assert time.monotonic() - started < 15  # about 2 s on the 2-core machine; minutes when quadratic
