"""Records kept about what the system did: call detail records, call quality, relay sessions and
the audit log, with their retention, queries and exports.

`call_recorder` turns a call's life into CDR, audit and quality writes (on `writer`'s thread);
`cdr` and `cdr_types` are the CDR, `quality` (pure: E-model MOS, poor-call rule) and
`quality_store` the quality reports, `relay_sessions` records relay allocations from TURN events;
`audit`, `audit_chain`, `audit_verify` and `audit_purge` are the tamper-evident audit log
(docs/audit.md); `retention`, `query`, `export` and `export_rows` serve the admin API and CLI.
"""
