//! Newtypes for the names a plan declares, so that a host name is never
//! passed where a VM name is expected. Each carries its own pattern in the
//! schema.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident $(, $attr:meta)?) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name($(#[$attr])? pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A plan name: lowercase letters, digits and `-`, at most 63 characters.
    PlanName,
    schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))
);
name_type!(
    /// A site name.
    SiteName,
    schemars(length(min = 1, max = 128), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))
);
name_type!(
    /// A Hyper-V host name (a NetBIOS or DNS name).
    HostName,
    schemars(regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"))
);
name_type!(
    /// A Hyper-V virtual switch name.
    VSwitchName,
    schemars(length(min = 1, max = 100), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))
);
name_type!(
    /// A group name.
    GroupName,
    schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"))
);
name_type!(
    /// A VM name, as Hyper-V and Site Recovery show it.
    VmName,
    schemars(length(min = 1, max = 100), regex(pattern = r"^[^\x00-\x1f\x7f/\\]+$"))
);
name_type!(
    /// Path of a file holding a secret.
    SecretPath,
    schemars(length(min = 1, max = 4096), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))
);
name_type!(
    /// Name of an environment variable.
    EnvVarName,
    schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))
);
