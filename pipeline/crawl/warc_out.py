"""Writing fetched pages as WARC files (warcio), so later runs re-extract without re-fetching.

Each fetched page becomes a ``response`` record (the HTTP status line, headers and body as
received, except that a body the server compressed is stored decoded and its
``Content-Encoding`` header renamed ``X-Kiln-Decoded-Content-Encoding``) followed by the
``request`` record that asked for it. A file opens with a ``warcinfo`` record naming the crawler.
Files are written under a temporary name; the crawler renames them into place only once the
frontier that accounts for them is saved (pipeline/crawl/crawler.py).
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

__all__ = ["WarcSegment"]

GZIP_LEVEL = 6
_REASONS = {200: "OK", 203: "Non-Authoritative Information", 206: "Partial Content"}


class WarcSegment:
    """One gzip WARC file being written; :meth:`close` leaves it complete at ``tmp_path``."""

    def __init__(self, final_path: Path, software: str):
        self.final_path = Path(final_path)
        self.tmp_path = self.final_path.with_name(f".{self.final_path.name}.tmp")
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.tmp_path, "wb")  # noqa: SIM115 - open until close() or discard()
        # Records are built uncompressed and gzipped one member each here: warcio's own gzip
        # writer uses level 9, which cost more than fetching in bench/bench_crawl.py; level 6 (zlib's
        # default) makes files about 2% larger at a third of the time.
        self._buffer = io.BytesIO()
        self._writer = WARCWriter(self._buffer, gzip=False)
        self.records = 0
        info = self._writer.create_warcinfo_record(
            self.final_path.name,
            {"software": software, "format": "WARC File Format 1.0", "description": "kiln crawl"},
        )
        self._write(info)

    def _write(self, record) -> None:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.write_record(record)
        self._fh.write(gzip.compress(self._buffer.getvalue(), compresslevel=GZIP_LEVEL))

    def write_page(self, result: dict, user_agent: str) -> None:
        """A fetched page (a FetchResult dict) as response and request records."""
        url = result["final_url"] or result["url"]
        status = int(result["status"])
        headers = [(k, v) for k, v in result["headers"] if k.lower() != "transfer-encoding"]
        if not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Content-Length", str(len(result["body"]))))
        http = StatusAndHeaders(
            f"{status} {_REASONS.get(status, 'OK')}", headers, protocol="HTTP/1.1"
        )
        warc_headers = {"WARC-Date": result["fetched_at"]}
        if result.get("address"):
            warc_headers["WARC-IP-Address"] = result["address"]
        response = self._writer.create_warc_record(
            url,
            "response",
            payload=io.BytesIO(result["body"]),
            http_headers=http,
            warc_headers_dict=warc_headers,
        )
        self._write(response)
        path = url.split("://", 1)[-1].partition("/")[2]
        request_http = StatusAndHeaders(
            f"GET /{path} HTTP/1.1",
            [("Host", url.split("://", 1)[-1].split("/", 1)[0]), ("User-Agent", user_agent)],
            is_http_request=True,
        )
        request = self._writer.create_warc_record(
            url,
            "request",
            http_headers=request_http,
            warc_headers_dict={
                "WARC-Date": result["fetched_at"],
                "WARC-Concurrent-To": response.rec_headers.get_header("WARC-Record-ID"),
            },
        )
        self._write(request)
        self.records += 1

    def close(self) -> None:
        """Flush the file to disk under its temporary name."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def discard(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.tmp_path.unlink(missing_ok=True)
