//! The reconciler: `reconcile` decides the next step of each VM from the
//! plan and the observed world alone; `run` executes those steps against a
//! [`crate::provider::Provider`], group by group, until every VM reached its
//! declared end state, waits at a gate, or is blocked.

pub mod reconcile;
pub mod run;

pub use reconcile::{Action, Approvals, Blocker, Decision, Gate, decide, remaining_steps};
