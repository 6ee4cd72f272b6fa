//! `failback schema`: prints the plan JSON Schema.

use super::{Exit, output};

pub fn run() -> Exit {
    output::out(&crate::plan::plan_schema_json());
    Exit::Success
}
