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
   every good character. That holds when well-formed multi-byte characters outnumber the stray
   bytes ten to one, or when there is only a handful of stray bytes (at most 4, and no more than
   the multi-byte characters or 1 in 1000 bytes); legacy pages have stray bytes by the hundred.
   ``Decoded.stray_bytes`` counts them;
5. detection (charset_normalizer), among the encodings browsers support (the WHATWG Encoding
   Standard), so no page is read as a DOS or HP code page. windows-1252 is the web's default
   for undeclared Western text (the HTML standard's fallback), and the detector cannot tell it
   from other Latin-script code pages on French or German text, where they differ only in which
   accented letter a byte stands for. So when the best guess is a Latin-script single-byte code
   page, windows-1252 is read unless another candidate reads letters inside words where
   windows-1252 reads symbols ("zwi¹zki", "Mê¿czyzna" are Polish in cp1250), or, with no such
   evidence either way, the guess found a language windows-1252 cannot write that the code page
   is for (Czech in cp1250) and windows-1252 does not read the text as well. Non-Latin guesses
   (Cyrillic, Greek, CJK...) stand;
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
# ... or a handful of stray bytes, as many multi-byte characters or at most 1 per 1000 bytes.
_STRAY_HANDFUL = 4
_STRAY_PER_BYTES = 1000
_STRAY_BYTES = "kiln-cp1252-stray-bytes"
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_C1_CONTROLS = re.compile("[\u0080-\u009f]")
_WORD_COMPANIONS = "’‘“”„‚–—…·•«»‹›\u00ad®©™°´`"


def _stray_bytes_as_cp1252(err: UnicodeDecodeError) -> tuple[str, int]:
    # Each undecodable byte is read as windows-1252 (a Latin-1 superset), the usual culprit.
    chunk = err.object[err.start : err.end]
    return chunk.decode("cp1252", errors="replace"), err.end


codecs.register_error(_STRAY_BYTES, _stray_bytes_as_cp1252)

# What the detector may choose from: the WHATWG Encoding Standard's encodings (what a browser
# would ever use for a page), as charset_normalizer names them. Without this it picks cp775,
# cp850, cp852 or hp_roman8 for Latin-1 text, code pages no web page is written in.
_WEB_CODECS = (
    "utf_8", "utf_16_le", "utf_16_be", "cp866", "iso8859_2", "iso8859_3", "iso8859_4",
    "iso8859_5", "iso8859_6", "iso8859_7", "iso8859_8", "iso8859_10", "iso8859_13",
    "iso8859_14", "iso8859_15", "iso8859_16", "koi8_r", "koi8_u", "mac_roman", "mac_cyrillic",
    "cp874", "cp1250", "cp1251", "cp1252", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257",
    "cp1258", "gb18030", "big5", "euc_jp", "iso2022_jp", "shift_jis", "cp932", "euc_kr", "cp949",
)  # fmt: skip
# Names under which the detector reports windows-1252 or a code page reading the same bytes
# the same way wherever both are defined.
_WESTERN = frozenset({"cp1252", "latin_1", "iso8859_15"})
# Latin-script single-byte code pages: on Western text their decodings differ from
# windows-1252's only in which accented letter a byte stands for.
_LATIN_SINGLE_BYTE = _WESTERN | {
    "cp1250", "cp1254", "cp1257", "cp1258", "iso8859_2", "iso8859_3", "iso8859_4",
    "iso8859_10", "iso8859_13", "iso8859_14", "iso8859_16", "mac_roman",
}  # fmt: skip
# The languages (as charset_normalizer names them) each non-Western Latin code page is for, with
# letters windows-1252 lacks: evidence for that code page when the detector finds one of them.
_CENTRAL = frozenset(
    {"Croatian", "Czech", "Hungarian", "Polish", "Romanian", "Serbian", "Slovak", "Slovene"}
)
_BALTIC = frozenset({"Estonian", "Lithuanian"})
_CODE_PAGE_LANGUAGES = {
    "cp1250": _CENTRAL,
    "iso8859_2": _CENTRAL,
    "iso8859_16": _CENTRAL,
    "cp1257": _BALTIC,
    "iso8859_4": _BALTIC,
    "iso8859_13": _BALTIC,
    "iso8859_10": _BALTIC,
    "cp1254": frozenset({"Turkish"}),
    "iso8859_3": frozenset({"Turkish"}),
    "cp1258": frozenset({"Vietnamese"}),
}


@dataclass(frozen=True)
class Decoded:
    """Text and where its charset came from: bom, declared, utf-8, mostly-utf-8, detected,
    fallback or str (the payload was text already); ``stray_bytes`` counts the bytes that were
    not valid UTF-8 in a page decoded as UTF-8 (mostly-utf-8, fallback), read as windows-1252."""

    text: str
    encoding: str
    method: str
    stray_bytes: int = 0


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


def _utf8_census(data: bytes) -> tuple[int, int]:
    """(stray bytes, well-formed multi-byte characters) when the bytes are read as UTF-8."""
    # surrogateescape turns each byte that is not valid UTF-8 into one lone surrogate.
    text = data.decode("utf-8", errors="surrogateescape")
    stray = sum(1 for ch in text if "\udc80" <= ch <= "\udcff")
    return stray, sum(1 for ch in text if ord(ch) > 127) - stray


def _mostly_utf8(data: bytes) -> Decoded | None:
    stray, multibyte = _utf8_census(data)
    handful = stray <= _STRAY_HANDFUL and (
        multibyte >= stray or stray * _STRAY_PER_BYTES <= len(data)
    )
    if handful or (multibyte and multibyte >= _MOSTLY_UTF8_RATIO * stray):
        text = data.decode("utf-8", errors=_STRAY_BYTES)
        return Decoded(text, "utf-8", "mostly-utf-8", stray)
    return None


def _is_letter(ch: str) -> bool:
    return ch.isalpha() and ch not in "ªºµ"  # Unicode letters, but symbols in running text


def _is_symbol(ch: str) -> bool:
    """Neither a letter nor what Western text puts inside or after words ("don’t", "«oui»",
    "Kiln®", "20°", "it´s")."""
    return not (_is_letter(ch) or ch.isspace() or ch in _WORD_COMPANIONS)


def _letter_evidence(data: bytes, western: str, other: str) -> tuple[int, int]:
    """(for windows-1252, for the other code page): where two single-byte decodings differ
    inside a word, the one reading a letter where the other reads a symbol is right. Polish read
    as windows-1252 gives "zwi¹zki", "Mê¿czyzna", "by³"; French read as cp1257 gives "lą" for
    "là", a letter for a letter, which is no evidence either way."""
    for_western = for_other = 0
    for m in _NON_ASCII.finditer(data):
        i = m.start()
        w, o = western[i], other[i]
        if w == o or not i or not _is_letter(western[i - 1]):
            continue  # word-initial (Spanish "¿Qué") or standalone ("£5"): no evidence
        after = western[i + 1 : i + 2]
        # A superscript or ordinal ends short words in Western text ("m³", "km²", "Nº"), a
        # Polish or Romanian letter ends longer ones ("był", "rują").
        inside = (after and _is_letter(after)) or western[max(0, i - 3) : i].isalpha()
        if _is_letter(o) and _is_symbol(w) and (inside or w not in "¹²³ªº"):
            for_other += 1
        elif _is_letter(w) and _is_symbol(o) and (inside or o not in "¹²³ªº"):
            for_western += 1
    return for_western, for_other


def _latin_rival(data: bytes, western: str, results) -> Decoded | None:
    """The Latin-script code page among the detector's candidates that the letter evidence
    prefers to windows-1252, if any."""
    rival, margin = None, 0
    for match in results:
        if match.encoding not in _LATIN_SINGLE_BYTE or match.encoding in _WESTERN:
            continue
        other = _strict(data, match.encoding)
        if other is None or other == western or _C1_CONTROLS.search(other):
            continue  # C1 controls are where windows-1252 has punctuation: never the text
        for_western, for_other = _letter_evidence(data, western, other)
        if for_other - for_western > margin:
            rival, margin = Decoded(other, match.encoding, "detected"), for_other - for_western
    return rival


def _western_unless_outvoted(best, results) -> bool:
    """With no letter evidence either way: windows-1252 unless the detector found a language it
    cannot write and does not read windows-1252 as well."""
    if best is None or best.language not in _CODE_PAGE_LANGUAGES.get(best.encoding, ()):
        return True
    match = next((m for m in results if m.encoding in _WESTERN), None)
    return (
        match is not None
        and match.language == best.language
        and match.coherence >= best.coherence
        and match.chaos <= best.chaos
    )


def _detect(data: bytes) -> Decoded | None:
    from charset_normalizer import from_bytes

    results = from_bytes(data, cp_isolation=list(_WEB_CODECS))
    best = results.best()
    western = _strict(data, "cp1252")
    if western is not None and (best is None or best.encoding in _LATIN_SINGLE_BYTE):
        rival = _latin_rival(data, western, results)
        if rival is not None:
            return rival
        if (
            best is None
            or _WESTERN & set(best.could_be_from_charset)  # the same text: name it as browsers do
            or _western_unless_outvoted(best, results)
        ):
            return Decoded(western, "cp1252", "detected")
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
    mostly = _mostly_utf8(data)
    if mostly is not None:
        return mostly
    detected = _detect(data)
    if detected is not None:
        return detected
    stray, _ = _utf8_census(data)
    return Decoded(data.decode("utf-8", errors=_STRAY_BYTES), "utf-8", "fallback", stray)


def to_utf8(payload: bytes | str, content_type: str | None = None) -> tuple[bytes, Decoded]:
    """A payload as UTF-8 bytes (what readers store for HTML) and how it was decoded."""
    decoded = decode_text(payload, content_type)
    return decoded.text.encode("utf-8", errors="surrogatepass"), decoded
