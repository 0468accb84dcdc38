//! API tests: one binary, so the crate links once. Each test gets a fresh, migrated database
//! from `#[sqlx::test]` and a server on a random port talking to the real PostgreSQL, Redis and
//! S3 started by scripts/services.sh.

mod auth;
mod hardening;
mod health;
mod helpers;
mod identities;
mod index;
mod migrations;
mod openapi;
mod operations;
mod search;
mod sessions;
mod shutdown;
mod v1;
