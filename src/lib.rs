//! failback: declarative, idempotent failback of Hyper-V VMs protected by
//! Azure Site Recovery.

pub mod cli;
pub mod diagnostics;
pub mod plan;
pub mod sync;
pub mod validate;
