//! The integration tests: one binary, one module per area.

// Test code may abort on a broken expectation; that is how it reports.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod docs;
mod examples;
mod lab_cases;
mod schema;
