"""Handle normalisation: one spelling per account, applied at every boundary (issue 12 item 13).

Handles are stored as 1-64 of `a-z 0-9 . _ -` (`service.HANDLE_RE`; the store has only ever
accepted that form). Whatever a person or a client types — `BOB`, ` Bob ` — is turned into that
form here before it is looked up, compared or stored: surrounding whitespace is removed and ASCII
letters are lowered. Only ASCII is lowered (`str.lower` would turn the Kelvin sign K into `k`):
anything non-ASCII stays as it is and fails the handle check, so no two spellings in different
scripts reach one account.
"""

from __future__ import annotations


def normal_handle(text: str) -> str:
    """`text` stripped and ASCII-lowered; not validated (see `service.check_handle`)."""
    text = text.strip()
    return text.lower() if text.isascii() else text
