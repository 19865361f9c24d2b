"""Parse SIPp 3.6.1 message logs (`-trace_msg -message_file FILE`).

Each logged message is one entry:

    ----------------------------------------------- 2026-11-26 07:04:45.367207
    UDP message received [468] bytes :
    <blank>
    <the SIP message>

or ``UDP message sent (511 bytes):``. The timestamp is local wall-clock time
with microseconds, written (and flushed) when SIPp sends or reads the
datagram. SIPp also logs some messages a second time in entries without a
timestamp ("Unexpected UDP message received:", "Dead call ... received a UDP
message:", "Ignoring ..."); those repeat an entry already logged, and are
skipped here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

_SEP = "-----------------------------------------------"
_SEP_RE = re.compile(r"^-{47}(?: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6})[^\n]*)?$", re.M)
_RECV_RE = re.compile(r"^\w+ message received \[\d+\] bytes :$")
_SENT_RE = re.compile(r"^\w+ message sent \(\d+ bytes\):$")

# Compact header forms (RFC 3261 7.3.3) to their full names.
_COMPACT = {"i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
            "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via"}


class Headers(dict):
    """Header name → value of its first occurrence; lookups ignore case.
    `all(name)` gives every value (e.g. several Via)."""

    def __init__(self, pairs: list[tuple[str, str]] = ()):
        super().__init__()
        self._pairs = list(pairs)
        for name, value in self._pairs:
            if not any(k.lower() == name.lower() for k in self):
                super().__setitem__(name, value)

    def _key(self, name: str):
        low = name.lower()
        for k in self:
            if k.lower() == low:
                return k
        return None

    def __getitem__(self, name: str) -> str:
        key = self._key(name)
        if key is None:
            raise KeyError(name)
        return super().__getitem__(key)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) is not None

    def get(self, name: str, default=None):
        key = self._key(name)
        return default if key is None else super().__getitem__(key)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self._pairs if k.lower() == name.lower()]


@dataclass(frozen=True)
class SipMessage:
    """One message as SIPp logged it."""

    time: datetime              # local wall clock, microseconds
    direction: str              # "in" (received by the agent) or "out" (sent)
    start_line: str
    headers: Headers = field(repr=False)
    body: str = field(default="", repr=False)

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> str | None:
        return self.start_line.split(" ", 1)[0] if self.is_request else None

    @property
    def request_uri(self) -> str | None:
        if not self.is_request:
            return None
        parts = self.start_line.split(" ")
        return parts[1] if len(parts) > 1 else None

    @property
    def status(self) -> int | None:
        if self.is_request:
            return None
        try:
            return int(self.start_line.split(" ")[1])
        except (IndexError, ValueError):
            return None

    @property
    def cseq_method(self) -> str | None:
        cseq = self.headers.get("CSeq")
        if not cseq:
            return None
        parts = cseq.split()
        return parts[1].upper() if len(parts) > 1 else None

    @property
    def call_id(self) -> str | None:
        return self.headers.get("Call-ID")

    @property
    def label(self) -> str:
        """Method of a request, status code of a response ("INVITE", "180")."""
        return self.method if self.is_request else str(self.status)


def parse_message(text: str) -> tuple[str, Headers, str]:
    """Split one SIP message into start line, headers and body."""
    text = text.replace("\r\n", "\n")
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    start = lines[0].strip() if lines else ""
    pairs: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and pairs:  # folded header line
            name, value = pairs[-1]
            pairs[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        name = _COMPACT.get(name.lower(), name) if len(name) == 1 else name
        pairs.append((name, value.strip()))
    return start, Headers(pairs), body.rstrip("\n")


def parse_trace(text: str) -> list[SipMessage]:
    """Every timestamped message of a SIPp message log, in log order."""
    messages: list[SipMessage] = []
    matches = list(_SEP_RE.finditer(text))
    for i, match in enumerate(matches):
        stamp = match.group(1)
        if not stamp:
            continue  # a repeat ("Unexpected ... received", "Dead call ..."), no timestamp
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        chunk = text[match.end():end].lstrip("\n")
        kind, _, rest = chunk.partition("\n")
        kind = kind.strip()
        if _RECV_RE.match(kind):
            direction = "in"
        elif _SENT_RE.match(kind):
            direction = "out"
        else:
            continue
        start, headers, body = parse_message(rest)
        if not start:
            continue
        messages.append(SipMessage(time=datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f"),
                                   direction=direction, start_line=start, headers=headers, body=body))
    return messages


def read_trace(path, offset: int = 0) -> list[SipMessage]:
    """Parse a message log from byte `offset` on (missing file → [])."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return []
    return parse_trace(data.decode("utf-8", errors="replace"))


def display_name(value: str | None) -> str | None:
    """Display name of a From/To value: '"Alice" <sip:...>' → 'Alice'; none → None."""
    if not value:
        return None
    value = value.strip()
    if value.startswith('"'):
        out, i = [], 1
        while i < len(value):
            ch = value[i]
            if ch == "\\" and i + 1 < len(value):
                out.append(value[i + 1])
                i += 2
                continue
            if ch == '"':
                return "".join(out)
            out.append(ch)
            i += 1
        return "".join(out)
    if "<" in value:
        name = value.split("<", 1)[0].strip()
        return name or None
    return None


def uri_user(uri: str | None) -> str | None:
    """User part of a SIP URI (also inside <...>): 'sip:0912@10.87.0.1:5060' → '0912'."""
    if not uri:
        return None
    m = re.search(r"<([^>]*)>", uri)
    if m:
        uri = m.group(1)
    m = re.match(r"\s*sips?:([^@;>]*)@", uri)
    return m.group(1) if m else None
