//! FacePass: a self-hosted face search server. See README.md.

// No unwrap/expect on any code path outside tests; the few true invariants carry an allow with
// the reason next to them.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod bulk;
pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod error;
pub mod eval;
pub mod face;
#[cfg(test)]
mod fuzzing;
pub mod gc;
pub mod identity;
pub mod indexing;
pub mod limits;
pub mod loadtest;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod remodel;
pub mod routes;
pub mod smoke;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tenant_search;
