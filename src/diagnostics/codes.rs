//! Stable diagnostic codes. A code is API: once published it keeps its
//! meaning, and `docs/diagnostics.md` has one entry for each.

use serde::Serialize;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

macro_rules! codes {
    ($($variant:ident = $code:literal, $sev:ident, $desc:literal;)*) => {
        /// Every diagnostic the validator can report.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $(#[doc = $desc] $variant,)*
        }

        impl Code {
            /// All codes, in order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable `FBnnnn` text of the code.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            /// The severity a diagnostic with this code has.
            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$sev,)* }
            }

            /// One line saying what the code means.
            pub fn description(self) -> &'static str {
                match self { $(Code::$variant => $desc,)* }
            }
        }
    };
}

codes! {
    FileTooLarge = "FB0001", Error, "The file is larger than 4 MiB, the most a plan may be.";
    NotUtf8 = "FB0002", Error, "The file is not UTF-8 text (for example UTF-16 with a byte-order mark, or invalid bytes).";
    ControlCharacter = "FB0003", Error, "The file contains a control character (such as NUL) that has no place in a plan.";
    YamlSyntax = "FB0101", Error, "The text is not well-formed YAML.";
    DuplicateKey = "FB0102", Error, "A mapping has the same key twice.";
    YamlBudget = "FB0103", Error, "The document exceeds a parsing limit: nesting depth, aliases, anchors, nodes or scalar bytes.";
    MultipleDocuments = "FB0104", Error, "The file holds more than one YAML document; a plan is exactly one.";
    EmptyDocument = "FB0105", Error, "The file holds no YAML document (empty, or comments only).";
    ComplexKey = "FB0106", Error, "A mapping key is a mapping or a sequence; plan keys are plain strings.";
    UnknownTag = "FB0107", Error, "A value carries a YAML tag (such as `!Ref` or `!!binary`) that a plan has no use for.";
    DuplicateHost = "FB0201", Error, "Two hosts have the same name.";
    UnknownHost = "FB0202", Error, "A VM names a host that is not declared under spec.primary.hosts.";
    UnknownVSwitch = "FB0203", Error, "A VM network names a vSwitch that its host does not have.";
    DuplicateVSwitch = "FB0204", Error, "A host lists the same vSwitch twice.";
    DuplicateGroup = "FB0205", Error, "Two groups have the same name.";
    DuplicateVm = "FB0206", Error, "Two VMs have the same name (VM names are unique across the whole plan).";
    LiteralSecret = "FB0207", Error, "A secret is written into the plan instead of referenced with `file` or `env`.";
    InvalidDuration = "FB0208", Error, "A duration such as a verify timeout cannot be read, or is zero.";
    DuplicateAdapter = "FB0209", Error, "A VM lists the same network adapter label twice.";
    UnknownKey = "FB0301", Error, "A key that the plan format does not have (a typo, or a key at the wrong level).";
    MissingKey = "FB0302", Error, "A required key is missing.";
    WrongType = "FB0303", Error, "A value has the wrong type (for example a string where a boolean is expected).";
    InvalidValue = "FB0304", Error, "A value is not one of the allowed values.";
    InvalidFormat = "FB0305", Error, "A string does not have the required form (pattern or length).";
    OutOfRange = "FB0306", Error, "A number is outside its allowed range.";
    WrongCount = "FB0307", Error, "A list has too few or too many items.";
    SchemaViolation = "FB0308", Error, "Any other violation of the plan schema.";
    EncryptionRetired = "FB0401", Warning, "`spec.encryption` is accepted but has no effect: Azure retired the data-encryption certificate in April 2022.";
    CompletionIgnored = "FB0402", Warning, "`completion` is set on a VM whose sync mode is `full`, where it has no effect.";
    AutoCommitWithoutVerify = "FB0403", Warning, "`commit: auto` without a `verify` check commits, and deletes the recovery copy, without any health check.";
    RedundantTag = "FB0404", Warning, "A YAML core-schema tag (`!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!map`, `!!seq`) on a value of that type: it has no effect.";
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for code in Code::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} is used twice");
            assert_eq!(text.len(), 6, "{text}");
            assert!(text.starts_with("FB"), "{text}");
            assert!(text[2..].bytes().all(|b| b.is_ascii_digit()), "{text}");
            assert!(!code.description().is_empty());
        }
    }
}
