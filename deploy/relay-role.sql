-- A least-privilege PostgreSQL login for registered relays (docs/scaling.md, "What a relay's
-- database login can do"). Run it as the database's owner (the nodes' login), after the nodes
-- have migrated the schema, with CHANGE-ME replaced by a long random password:
--   psql -v ON_ERROR_STOP=1 -d callgate -f relay-role.sql
-- then give the relays CALLGATE_DATABASE_URL=postgresql+psycopg://callgate_relay:PASSWORD@…
-- A migration that adds what a relay writes says so in its release note: run this file again.
CREATE ROLE callgate_relay LOGIN PASSWORD 'CHANGE-ME';
GRANT CONNECT ON DATABASE callgate TO callgate_relay;
GRANT USAGE ON SCHEMA public TO callgate_relay;
-- the schema revision it checks at start (a relay never migrates)
GRANT SELECT ON alembic_version TO callgate_relay;
-- its sessions: inserted, counters updated, closed after a crash
GRANT SELECT, INSERT, UPDATE ON relay_sessions TO callgate_relay;
GRANT USAGE ON SEQUENCE relay_sessions_id_seq TO callgate_relay;
-- relay.session and turn.auth_throttled audit entries: appended after the chain's head, under the
-- appenders' table lock (SHARE ROW EXCLUSIVE needs UPDATE); no entry is changed or deleted
-- through the application, and `callgate audit verify` notices any that is
GRANT SELECT, INSERT, UPDATE ON audit_entries TO callgate_relay;
-- the storage write probe (its row only: one row in the table)
GRANT SELECT, UPDATE ON storage_probe TO callgate_relay;
