"""Records kept about what the system did: relay sessions, call detail records, call quality.

`cdr` (CdrRepository, CallOpen) and `quality_store` (QualityRepository) write the database;
`quality` is pure (E-model MOS, poor-call rule). Audit comes later.
"""
