//! Everything that talks to PostgreSQL, S3 and Redis.

pub mod cache;
pub mod catalog;
pub mod db;
pub mod identities;
pub mod keys;
pub mod maintenance;
pub mod migrations;
pub mod photos;
