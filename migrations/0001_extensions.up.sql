-- pgvector gives us the `vector` type, cosine distance (<=>) and the IVFFlat index.
--
-- pgvector is not a "trusted" extension, so creating it needs a superuser. In most deployments
-- a DBA installs it once (scripts/services.sh does so in template1 and in the app database);
-- then this statement is a no-op that needs no privilege. Where the app role is a superuser
-- (e.g. the docker-compose stack) it creates the extension itself.
create extension if not exists vector;
