"""PII stage: email and IP addresses in kept text are replaced by reserved placeholders.

Placeholders are addresses reserved for documentation, so the text still reads naturally and
no real address survives: ``email@example.com`` (RFC 2606 reserves example.com), ``192.0.2.1``
(RFC 5737, TEST-NET-1) and ``2001:db8::1`` (RFC 3849). The stage drops nothing; it counts
replacements per document in ``meta['pii_emails']`` and ``meta['pii_ip_addresses']``, which the
data job sums into its stats.

Known limits: addresses written to dodge scrapers ("name at example dot com") are not found,
and version strings shaped like IPv4 addresses ("1.2.3.4") are replaced too.
"""

from __future__ import annotations

import ipaddress
import re

from pipeline.records import Document
from pipeline.stage import Stage

__all__ = ["EMAIL_PLACEHOLDER", "IPV4_PLACEHOLDER", "IPV6_PLACEHOLDER", "PIIStage", "scrub"]

EMAIL_PLACEHOLDER = "email@example.com"
IPV4_PLACEHOLDER = "192.0.2.1"
IPV6_PLACEHOLDER = "2001:db8::1"

# Local part and domain as mail actually uses them (RFC 5322's quoted forms are too rare to
# matter); a "TLD" that is an image suffix is a file name like logo@2x.png, not an address.
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
    r"(?!(?:png|jpe?g|gif|svg|webp)\b)[A-Za-z]{2,24}\b"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Not part of a longer dotted number (a fifth group, or a date like 2019.12.31.1).
_IPV4 = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\d)")
# Candidates only; ipaddress.ip_address decides. Hex groups joined by colons, with "::" allowed.
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


def _is_ipv6(candidate: str) -> bool:
    # A digit is required: C++'s Abc::Def and times like 12:30:45 are not addresses.
    if not any(c.isdigit() for c in candidate) or candidate.count(":") < 2:
        return False
    try:
        return ipaddress.ip_address(candidate).version == 6
    except ValueError:
        return False


def scrub(text: str, *, emails: bool = True, ip_addresses: bool = True) -> tuple[str, int, int]:
    """Replace addresses; returns the new text, emails replaced, IP addresses replaced."""
    n_emails = n_ips = 0
    if emails and "@" in text:
        text, n_emails = _EMAIL.subn(EMAIL_PLACEHOLDER, text)
    if ip_addresses:
        text, n_ips = _IPV4.subn(IPV4_PLACEHOLDER, text)
        if "::" in text or text.count(":") >= 7:
            n6 = 0

            def replace(m: re.Match) -> str:
                nonlocal n6
                if _is_ipv6(m.group(0)):
                    n6 += 1
                    return IPV6_PLACEHOLDER
                return m.group(0)

            text = _IPV6.sub(replace, text)
            n_ips += n6
    return text, n_emails, n_ips


class PIIStage(Stage):
    """Replace email and IP addresses in each kept document's text; never drops."""

    name = "pii"

    def __init__(self, *, emails: bool = True, ip_addresses: bool = True):
        self.emails = emails
        self.ip_addresses = ip_addresses

    def process(self, doc: Document) -> str | None:
        text, n_emails, n_ips = scrub(
            doc["text"], emails=self.emails, ip_addresses=self.ip_addresses
        )
        doc["text"] = text
        if n_emails:
            doc["meta"]["pii_emails"] = str(n_emails)
        if n_ips:
            doc["meta"]["pii_ip_addresses"] = str(n_ips)
        return None
