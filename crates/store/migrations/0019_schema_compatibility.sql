-- Which builds may run on this schema (carrier_store::schema_status). A build refuses to start
-- on a schema with a migration it does not know only when that migration is listed here with an
-- `oldest_compatible` newer than the build's own newest migration. Migrations are additive by
-- default (a column or table an older build ignores): they add no row, and the previous version
-- keeps running during a rolling upgrade and after a rollback. A migration that breaks older
-- builds (drops or renames what they use) adds its row in the same file:
--   INSERT INTO schema_compatibility (version, oldest_compatible) VALUES (<its version>, <its version>);
CREATE TABLE schema_compatibility (
    version BIGINT PRIMARY KEY,
    oldest_compatible BIGINT NOT NULL
);
