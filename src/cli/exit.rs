//! Every exit code of the binary, in one place (cli.md, "Exit codes").

/// A process exit status with a meaning scripts rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Valid, converged, nothing to do.
    Success,
    /// A step or the provider failed.
    Failed,
    /// `plan --detailed-exitcode`: changes are pending.
    ChangesPending,
    /// `apply` stopped at a gate that waits for approval.
    AtGate,
    /// A bad flag or argument.
    Usage,
    /// The plan, or another input file, is invalid.
    Invalid,
    /// An input path does not exist or cannot be read.
    NoInput,
    /// Another run holds this plan's lock.
    Locked,
}

impl Exit {
    pub fn as_u8(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::ChangesPending => 2,
            Exit::AtGate => 3,
            Exit::Usage => 64,
            Exit::Invalid => 65,
            Exit::NoInput => 66,
            Exit::Locked => 75,
        }
    }
}
