"""PII: email and IP addresses become reserved placeholders, and are counted."""

from __future__ import annotations

import pytest

from pipeline.pii import EMAIL_PLACEHOLDER, IPV4_PLACEHOLDER, IPV6_PLACEHOLDER, PIIStage, scrub
from pipeline.records import is_kept, make_document
from tests.helpers import SAMPLE


def test_addresses_are_replaced_and_counted():
    text = (
        "Write to jane.doe+kiln@mail.example.org or press@zeitung.de for details. "
        "The server at 203.0.113.77 and its twin 2001:0db8:85a3::8a2e:0370:7334 answered; "
        "ask admin@intranet.co.uk about 10.0.0.1."
    )
    [doc] = PIIStage().process_batch([make_document("web", "x", text=text)])
    assert is_kept(doc)
    assert "jane.doe" not in doc["text"] and "zeitung.de" not in doc["text"]
    assert "203.0.113.77" not in doc["text"] and "8a2e" not in doc["text"]
    assert doc["text"].count(EMAIL_PLACEHOLDER) == 3
    assert doc["text"].count(IPV4_PLACEHOLDER) == 2
    assert doc["text"].count(IPV6_PLACEHOLDER) == 1
    assert (doc["meta"]["pii_emails"], doc["meta"]["pii_ip_addresses"]) == ("3", "3")


@pytest.mark.parametrize(
    "text",
    [
        "trafilatura 2.3.1 and Python 3.11.7 were released in 2024.",
        "The meeting is at 12:30:45 on 2019.12.31; see section 1.2.3.4.5 of the spec.",
        "std::vector<int> and Abc::Def are C++ names, not addresses.",
        "Retina images are named logo@2x.png by convention.",
        "Follow @kiln on social media and mail us at the usual place.",
    ],
)
def test_things_that_only_look_like_addresses_stay(text):
    assert scrub(text) == (text, 0, 0)


def test_each_kind_can_be_turned_off():
    text = "mail a@b.org from 192.168.1.1"
    assert scrub(text, emails=False)[0] == f"mail a@b.org from {IPV4_PLACEHOLDER}"
    assert scrub(text, ip_addresses=False)[0] == f"mail {EMAIL_PLACEHOLDER} from 192.168.1.1"


def test_a_real_book_has_nothing_to_replace_but_its_licence_email():
    text = (SAMPLE / "books" / "pg11_Alices_Adventures_in_Wonderland.txt").read_text(
        encoding="utf-8-sig"
    )
    scrubbed, n_emails, n_ips = scrub(text)
    assert n_ips == 0
    assert scrubbed.count(EMAIL_PLACEHOLDER) == n_emails
    assert len(scrubbed.split()) == len(text.split())  # nothing else touched
