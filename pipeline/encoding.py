"""Turning the bytes of a web page (or any text payload) into a str, the same way every time.

Order of evidence, strongest first:

1. a byte-order mark;
2. the declared charset (the HTTP ``Content-Type`` header, else a ``<meta charset>``,
   ``<meta http-equiv="Content-Type">`` or XML declaration near the top), when the bytes decode
   cleanly with it. One exception: a page declared in a single-byte legacy charset whose bytes
   are valid UTF-8 with non-ASCII characters is UTF-8 mislabelled (valid multi-byte UTF-8 is
   vanishingly rare in legacy text), so UTF-8 wins;
3. valid UTF-8;
4. mostly UTF-8: pages assembled from a UTF-8 template and a few Latin-1 snippets (seen in the
   shared corpus: 1-4 stray bytes among 150-220 UTF-8 characters) are decoded as UTF-8 with the
   stray bytes read as windows-1252, rather than handed to a detector that would mis-decode
   every good character;
5. detection (charset_normalizer);
6. UTF-8 with stray bytes read as windows-1252, so nothing is ever lost silently.

The same page gives the same text whether it arrives as bytes or as str: a str only loses a
leading byte-order mark, exactly as decoded bytes do. Readers store HTML payloads re-encoded as
UTF-8 (which trafilatura decodes without guessing) and record the original charset and how it
was found in ``meta``.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["Decoded", "charset_from_content_type", "decode_text", "to_utf8"]

# (BOM, codec), longest first so UTF-32 is not mistaken for UTF-16.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# The HTML standard's prescan looks at the first 1024 bytes for a meta charset; real pages put
# it later often enough (long <head> comments, inline scripts) that 4 KiB finds more of them.
_PRESCAN_BYTES = 4096
_META_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE | re.DOTALL
)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""")
_CT_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
# Labels browsers treat as a superset (WHATWG Encoding Standard, "Encodings" table): pages
# labelled Latin-1 or ASCII are decoded as windows-1252, GB2312 as GB18030, and so on.
_SUPERSETS = {
    "latin-1": "cp1252",
    "iso8859-1": "cp1252",
    "ascii": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    "big5": "big5hkscs",
}
# Stray bytes allowed per well-formed multi-byte UTF-8 character for "mostly UTF-8" (step 4):
# the corpus pages of that kind have at most 1 per 25; real legacy pages have none at all.
_MOSTLY_UTF8_RATIO = 10
_STRAY_BYTES = "kiln-cp1252-stray-bytes"


def _stray_bytes_as_cp1252(err: UnicodeDecodeError) -> tuple[str, int]:
    # Each undecodable byte is read as windows-1252 (a Latin-1 superset), the usual culprit.
    chunk = err.object[err.start : err.end]
    return chunk.decode("cp1252", errors="replace"), err.end


codecs.register_error(_STRAY_BYTES, _stray_bytes_as_cp1252)


@dataclass(frozen=True)
class Decoded:
    """Text and where its charset came from: bom, declared, utf-8, mostly-utf-8, detected,
    fallback or str (the payload was text already)."""

    text: str
    encoding: str
    method: str


def charset_from_content_type(content_type: str | None) -> str | None:
    """The charset parameter of a Content-Type header value, if any."""
    if not content_type:
        return None
    m = _CT_CHARSET.search(content_type)
    return m.group(1) if m else None


def _codec(label: str | bytes | None) -> str | None:
    """Python's codec name for a charset label, browser supersets applied; None if unknown."""
    if not label:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", errors="ignore")
    try:
        name = codecs.lookup(label.strip().lower()).name
    except LookupError:
        return None
    return _SUPERSETS.get(name, name)


def _declared(data: bytes, content_type: str | None) -> str | None:
    header = _codec(charset_from_content_type(content_type))
    if header:
        return header
    head = data[:_PRESCAN_BYTES]
    for pattern in (_XML_ENCODING, _META_CHARSET):
        m = pattern.search(head)
        if m and _codec(m.group(1)):
            return _codec(m.group(1))
    return None


def _is_unicode(codec: str) -> bool:
    return codec.startswith(("utf-8", "utf-16", "utf-32", "utf_8", "utf_16", "utf_32"))


def _strict(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _mostly_utf8(data: bytes) -> str | None:
    lenient = data.decode("utf-8", errors="replace")
    stray = lenient.count("\ufffd")
    multibyte = sum(1 for ch in lenient if ord(ch) > 127) - stray
    if multibyte and multibyte >= _MOSTLY_UTF8_RATIO * stray:
        return data.decode("utf-8", errors=_STRAY_BYTES)
    return None


def _detect(data: bytes) -> Decoded | None:
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None or best.encoding is None:
        return None
    text = _strict(data, best.encoding)
    return Decoded(text, best.encoding, "detected") if text is not None else None


def decode_text(payload: bytes | str, content_type: str | None = None) -> Decoded:
    """Decode a payload by the order in the module docstring; a str passes through unchanged
    but for a leading byte-order mark."""
    if isinstance(payload, str):
        return Decoded(payload.removeprefix("\ufeff"), "utf-8", "str")
    data = bytes(payload)
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return Decoded(
                data[len(bom) :].decode(codec, errors="replace").removeprefix("\ufeff"),
                codec,
                "bom",
            )
    utf8 = _strict(data, "utf-8")
    declared = _declared(data, content_type)
    if declared:
        if utf8 is not None and (_is_unicode(declared) or not utf8.isascii()):
            return Decoded(utf8, "utf-8", "declared" if _is_unicode(declared) else "utf-8")
        text = _strict(data, declared)
        if text is not None:
            return Decoded(text, declared, "declared")
    if utf8 is not None:
        return Decoded(utf8, "utf-8", "utf-8")
    text = _mostly_utf8(data)
    if text is not None:
        return Decoded(text, "utf-8", "mostly-utf-8")
    detected = _detect(data)
    if detected is not None:
        return detected
    return Decoded(data.decode("utf-8", errors=_STRAY_BYTES), "utf-8", "fallback")


def to_utf8(payload: bytes | str, content_type: str | None = None) -> tuple[bytes, Decoded]:
    """A payload as UTF-8 bytes (what readers store for HTML) and how it was decoded."""
    decoded = decode_text(payload, content_type)
    return decoded.text.encode("utf-8", errors="surrogatepass"), decoded
