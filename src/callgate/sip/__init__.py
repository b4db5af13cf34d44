"""The SIP edge: SIP desk phones register here and reach callgate users (docs/sip.md)."""
