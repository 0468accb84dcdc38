//! Everything that talks to PostgreSQL, S3 and Redis, and all the SQL. Every PostgreSQL call
//! goes through `db::Db` (a deadline and a timing metric), as every S3 and Redis call goes
//! through `photos` and `cache`. Imports `config`, `domain`, `metrics` and the engine's types,
//! nothing above them.

pub mod cache;
pub mod catalog;
pub mod db;
pub mod identities;
pub mod keys;
pub mod maintenance;
pub mod migrations;
pub mod photos;
