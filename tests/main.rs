//! The integration tests: one binary, one module per area.

// Test code may abort on a broken expectation; that is how it reports.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod azure;
mod concurrency;
mod docs;
mod examples;
mod hostile;
mod lab_cases;
mod positions;
mod reliability;
mod schema;
mod secrets;
mod support;
mod validate;
