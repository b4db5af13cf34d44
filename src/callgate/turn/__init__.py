"""The TURN relay (RFC 8656) and STUN server role (RFC 8489)."""
