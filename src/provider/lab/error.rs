//! Errors of the lab provider. Every message names the VM, file or option
//! concerned, the cause, and (where there is one) the fix.

use std::io;
use std::path::PathBuf;

use crate::provider::{Lifecycle, ProviderError};
use crate::sync::SyncError;

/// Why a lab operation failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LabError {
    #[error("no lab world in {}: create one with `failback lab init PLAN`", dir.display())]
    NoWorld { dir: PathBuf },

    #[error("a lab world already exists in {}; pass --force to replace it", dir.display())]
    AlreadyExists { dir: PathBuf },

    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "writing", "creating the directory".
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error(
        "cannot save the lab world {}: writing {} failed: {source}; the previous world is kept \
         unchanged: free space or fix the disk, then run the same command again",
        path.display(),
        file.display()
    )]
    WorldWrite {
        /// `world.json`.
        path: PathBuf,
        /// The file being written: the world's journal, or the temporary
        /// file of a whole new world.
        file: PathBuf,
        source: io::Error,
    },

    #[error(
        "{} is not a valid lab world: {source}; recreate it with `failback lab init PLAN --force`",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error(
        "{} is not a valid lab world: {reason}; recreate it with `failback lab init PLAN --force`",
        path.display()
    )]
    Invalid { path: PathBuf, reason: String },

    #[error(transparent)]
    Sync(#[from] SyncError),

    #[error("invalid option: {0}")]
    InvalidOption(String),

    #[error("VM '{vm}' is not in the lab world")]
    UnknownVm { vm: String },

    #[error("host '{host}' is not in the lab world")]
    UnknownHost { host: String },

    #[error("host '{host}' has no vSwitch '{vswitch}'")]
    UnknownVswitch { host: String, vswitch: String },

    #[error(
        "{what} is disconnected; reconnect it (lab: `failback lab fault connect`) and run again"
    )]
    Disconnected { what: String },

    #[error("cannot {action} VM '{vm}': it is {state}, {expected}")]
    WrongState {
        vm: String,
        action: &'static str,
        state: Lifecycle,
        expected: &'static str,
    },

    #[error("VM '{vm}': {reason}")]
    Precondition { vm: String, reason: String },

    #[error("VM '{vm}' is not running in the recovery site: {reason}")]
    NotRunning { vm: String, reason: String },

    #[error(
        "recovery VM '{vm}' did not confirm it is off; nothing was changed and it keeps running in the \
         recovery site (a planned failback loses no data, so the final sync waits for a confirmed \
         shutdown). Shut it down there (lab: `failback lab fault clear`), then run again"
    )]
    StuckShutdown { vm: String },

    #[error(
        "VM '{vm}': primary disk '{disk}' does not match the recovery disk as it was at shutdown \
         (expected image digest {expected}, found {found}) even after a full delta re-sync; the \
         primary VM was not started"
    )]
    VerificationFailed {
        vm: String,
        disk: String,
        expected: String,
        found: String,
    },

    #[error(
        "refusing to start primary VM '{vm}': disk '{disk}' is not verified equal to the recovery \
         disk at shutdown ({reason}); run the failback again to complete the sync"
    )]
    Unverified {
        vm: String,
        disk: String,
        reason: String,
    },

    #[error("a lab task stopped before it finished: {0}")]
    Task(String),
}

impl LabError {
    /// An I/O error on `path` while doing `what`.
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> LabError {
        let path = path.into();
        move |source| LabError::Io { what, path, source }
    }
}

/// How a provider caller should treat each failure (see the `Provider`
/// contract): a disconnected site may come back (transient); a VM or state
/// that does not fit the action is a conflict (re-observe and decide again);
/// everything else stops that VM.
impl From<LabError> for ProviderError {
    fn from(e: LabError) -> Self {
        let message = e.to_string();
        match e {
            LabError::Disconnected { .. } => ProviderError::Transient(message),
            LabError::UnknownVm { .. }
            | LabError::UnknownHost { .. }
            | LabError::UnknownVswitch { .. }
            | LabError::WrongState { .. }
            | LabError::Precondition { .. }
            | LabError::NotRunning { .. } => ProviderError::Conflict(message),
            LabError::NoWorld { .. }
            | LabError::AlreadyExists { .. }
            | LabError::Io { .. }
            | LabError::WorldWrite { .. }
            | LabError::Corrupt { .. }
            | LabError::Invalid { .. }
            | LabError::Sync(_)
            | LabError::InvalidOption(_)
            | LabError::StuckShutdown { .. }
            | LabError::VerificationFailed { .. }
            | LabError::Unverified { .. }
            | LabError::Task(_) => ProviderError::Failed(message),
        }
    }
}
