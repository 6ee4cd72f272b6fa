//! failback: declarative, idempotent failback of Hyper-V VMs protected by
//! Azure Site Recovery.

pub mod cli;
pub mod diagnostics;
pub mod engine;
pub mod plan;
pub mod provider;
pub mod sync;
pub mod validate;
