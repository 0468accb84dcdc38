//! FacePass: a self-hosted face search server. See README.md, whose layout section says what
//! each folder holds and what it may import.

// No unwrap/expect on any code path outside tests; the few true invariants carry an allow with
// the reason next to them.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod workflows;

// The fuzz-style tests of the upload parser measure what a thread holds at its peak.
#[cfg(test)]
#[global_allocator]
static METER: facepass_face::fuzzing::PeakMeter = facepass_face::fuzzing::PeakMeter;
