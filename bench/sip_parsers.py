"""Python SIP stacks against RFC 4475 torture messages (docs/sip.md, "Choosing the stack").

Not a speed benchmark: the evaluation behind the choice of SIP stack, kept so it can be re-run.
Each message is handed to each parser; a valid one must parse with the right Call-ID and CSeq,
an invalid one must be refused (an exception) so a server can answer 400 instead of acting on it.

The libraries are not callgate dependencies: install them into a scratch environment
(`python3 -m venv /tmp/sipeval && /tmp/sipeval/bin/pip install aiosipua rfcvoip pyVoIP sippy
-e .`) and run `/tmp/sipeval/bin/python bench/sip_parsers.py`. A library that is not installed
is reported as such. Messages are written from the RFC's descriptions of each case (§3.1.1,
§3.1.2), on the same skeleton, so each differs from a valid INVITE in the one fault it tests.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

H = (
    "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw\r\nMax-Forwards: 70\r\n"
    "From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: x@y\r\n"
)
START = "INVITE sip:b@example.com SIP/2.0"


def invite(
    extra: str = "Content-Length: 0\r\n", cseq: str = "1 INVITE", start: str = START
) -> bytes:
    return f"{start}\r\n{H}CSeq: {cseq}\r\n{extra}\r\n".encode()


WSINV = (
    b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n"
    b"TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n"
    b'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n'
    b"MaX-fOrWaRdS: 0068\r\nCall-ID\r\n\t:\r\n 0ha0isndaksdj@192.0.2.1\r\n"
    b"cseq: 0009\r\n  INVITE\r\nVia  : SIP  /   2.0\r\n  /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n"
    b"s :\r\nl: 0\r\n\r\n"
)

# (name, message, expected Call-ID when valid / None when it must be refused)
CASES: list[tuple[str, bytes, str | None]] = [
    ("3.1.1.1 wsinv (valid: folding, compact forms)", WSINV, "0ha0isndaksdj@192.0.2.1"),
    ("plain valid INVITE", invite(), "x@y"),
    ("3.1.2.1 badinv01 header line without colon", invite("Garbage line\r\nl: 0\r\n"), None),
    ("3.1.2.2 clerr Content-Length past the datagram", invite("l: 9999\r\n") + b"v=0\r\n", None),
    ("3.1.2.3 ncl negative Content-Length", invite("Content-Length: -999\r\n"), None),
    ("3.1.2.4 scalar02 CSeq over 2**31", invite(cseq="36893488147419103232 INVITE"), None),
    (
        "3.1.2.11 ltgtruri <> around the Request-URI",
        invite(start="INVITE <sip:b@e.com> SIP/2.0"),
        None,
    ),
    (
        "3.1.2.10 lwsruri extra spaces in request line",
        invite(start="INVITE  sip:b@e.com SIP/2.0"),
        None,
    ),
    ("3.1.2.16 badvers SIP/7.0", invite(start="INVITE sip:b@example.com SIP/7.0"), None),
    ("3.1.2.17 mismatch01 CSeq method", invite(cseq="1 OPTIONS"), None),
    ("3.1.2.6 missing Call-ID", invite().replace(b"Call-ID: x@y\r\n", b""), None),
    ("unknown URI scheme", invite(start="INVITE http://example.com/ SIP/2.0"), None),
    ("bare LF inside the head", invite().replace(b"Call-ID: x@y\r\n", b"Call-ID: x@y\n"), None),
    ("Max-Forwards 300", invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 300"), None),
]


def _callgate(data: bytes) -> str:
    from callgate.sip.message import parse_datagram

    return parse_datagram(data).headers.get("call-id") or ""


def _aiosipua(data: bytes) -> str:
    from aiosipua.message import SipMessage

    message: Any = SipMessage.parse(data)
    return str(message.call_id)


def _sippy(data: bytes) -> str:
    from sippy.SipRequest import SipRequest

    message: Any = SipRequest(data.decode("utf-8"))
    message.init_body()
    return str(message.getHFBody("call-id"))


def _pyvoip(data: bytes, module: str) -> str:
    sip: Any = __import__(module + ".SIP", fromlist=["SIPMessage"])
    message = sip.SIPMessage(data)
    return str(message.headers.get("Call-ID"))


PARSERS: dict[str, Callable[[bytes], str]] = {
    "callgate": _callgate,
    "aiosipua": _aiosipua,
    "sippy": _sippy,
    "pyVoIP": lambda data: _pyvoip(data, "pyVoIP"),
    "rfcvoip": lambda data: _pyvoip(data, "rfcvoip"),
}


def verdict(parse: Callable[[bytes], str], data: bytes, expected: str | None) -> str:
    try:
        call_id = parse(data)
    except ImportError:
        return "not installed"
    except Exception as exc:  # the libraries raise all kinds: that is what is measured
        return "ok (refused)" if expected is None else f"WRONG: refused ({type(exc).__name__})"
    if expected is None:
        return "WRONG: accepted"
    return "ok" if call_id.strip() == expected else f"WRONG: Call-ID {call_id!r}"


def main() -> int:
    names = list(PARSERS)
    print("| case | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    right = dict.fromkeys(names, 0)
    for case, data, expected in CASES:
        row = []
        for name in names:
            result = verdict(PARSERS[name], data, expected)
            right[name] += result.startswith("ok")
            row.append(result)
        print(f"| {case} | " + " | ".join(row) + " |")
    print("| **right** | " + " | ".join(f"{right[n]}/{len(CASES)}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
