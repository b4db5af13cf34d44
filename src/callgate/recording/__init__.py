"""Compliance recording: encrypted, chunked, audited storage of what the media anchor forwards
(docs/recording.md)."""
