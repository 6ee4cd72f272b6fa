//! The semantic rules of the plan format, beyond what the schema can say
//! (plan-format.md, "Rules the validator enforces"). They read the JSON form
//! leniently: a part with the wrong shape is the schema's to report, and is
//! skipped here, so that both kinds of problems are reported in one run.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde_json::Value;

use super::suggest::{did_you_mean, list, place, quote, shorten};
use crate::diagnostics::{Code, Diagnostic};

/// Where a node is, for help that points at another node than its own
/// diagnostic: the line of a JSON pointer, when the caller knows it.
pub type LineOf<'a> = &'a dyn Fn(&str) -> Option<u32>;

/// Every rule violation in the document.
pub fn check(root: &Value, line_of: LineOf<'_>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let hosts = hosts(root, line_of, &mut out);
    groups_and_vms(root, &hosts, line_of, &mut out);
    encryption(root, &mut out);
    out
}

fn items(v: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

fn name_of(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

/// Reports the second and later uses of a name. A use is remembered by
/// its indices (`P`), so that a pointer is only written for a diagnostic.
struct Unique<'a, P> {
    first: HashMap<&'a str, P>,
}

impl<'a, P: Copy> Unique<'a, P> {
    fn new() -> Self {
        Unique {
            first: HashMap::new(),
        }
    }

    /// Where the first use was, when `name` was seen before.
    fn seen(&mut self, name: &'a str, at: P) -> Option<P> {
        match self.first.entry(name) {
            Entry::Occupied(first) => Some(*first.get()),
            Entry::Vacant(slot) => {
                slot.insert(at);
                None
            }
        }
    }
}

/// A VM entry: where it is and how messages name it, both written only
/// for a diagnostic.
struct VmAt<'a> {
    group: usize,
    index: usize,
    name: Option<&'a str>,
    root: &'a Value,
}

impl VmAt<'_> {
    /// Its JSON pointer.
    fn base(&self) -> String {
        format!("/spec/groups/{}/vms/{}", self.group, self.index)
    }

    /// `VM 'name'`, or its place when it has no name.
    fn label(&self) -> String {
        self.name.map_or_else(
            || place(&self.base(), self.root),
            |n| format!("VM '{}'", shorten(n)),
        )
    }
}

/// host name -> its vSwitches; checks both are unique.
/// The first declaration of a repeated name, as help shows it: its line
/// (two entries with the same name have the same path).
fn first_declaration(first: &str, root: &Value, line_of: LineOf<'_>) -> String {
    match line_of(first) {
        Some(line) => format!("line {line}"),
        None => place(first, root),
    }
}

fn hosts<'a>(
    root: &'a Value,
    line_of: LineOf<'_>,
    out: &mut Vec<Diagnostic>,
) -> HashMap<&'a str, Vec<&'a str>> {
    let mut map = HashMap::new();
    let mut unique = Unique::new();
    for (i, host) in items(root.pointer("/spec/primary/hosts")) {
        let Some(name) = name_of(host) else { continue };
        if let Some(first) = unique.seen(name, i) {
            let first = format!("/spec/primary/hosts/{first}/name");
            let pointer = format!("/spec/primary/hosts/{i}/name");
            out.push(
                Diagnostic::new(Code::DuplicateHost, format!("host '{}' is declared more than once", shorten(name)))
                    .with_help(format!("host names are unique: rename it, or merge its vSwitches into the first declaration (at {})", first_declaration(&first, root, line_of)))
                    .with_pointer(pointer),
            );
            continue;
        }
        let mut switches = Vec::new();
        let mut seen = Unique::new();
        for (j, sw) in items(host.get("vswitches")) {
            let Some(sw) = sw.as_str() else { continue };
            if seen.seen(sw, ()).is_some() {
                out.push(
                    Diagnostic::new(
                        Code::DuplicateVSwitch,
                        format!(
                            "vSwitch '{}' is listed twice on host '{}'",
                            shorten(sw),
                            shorten(name)
                        ),
                    )
                    .with_help("remove the repeated entry")
                    .with_pointer(format!("/spec/primary/hosts/{i}/vswitches/{j}")),
                );
            } else {
                switches.push(sw);
            }
        }
        map.insert(name, switches);
    }
    map
}

fn groups_and_vms(
    root: &Value,
    hosts: &HashMap<&str, Vec<&str>>,
    line_of: LineOf<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let mut groups = Unique::new();
    let mut vms = Unique::new();
    let defaults = root.pointer("/spec/defaults");
    let default = |key: &str| defaults.and_then(|d| d.get(key)).and_then(Value::as_str);
    let mut host_names: Vec<&str> = hosts.keys().copied().collect();
    host_names.sort_unstable();
    for (g, group) in items(root.pointer("/spec/groups")) {
        if let Some(name) = name_of(group)
            && let Some(first) = groups.seen(name, g)
        {
            let first = format!("/spec/groups/{first}/name");
            let pointer = format!("/spec/groups/{g}/name");
            out.push(
                Diagnostic::new(Code::DuplicateGroup, format!("group '{}' is declared more than once", shorten(name)))
                    .with_help(format!("group names are unique: rename it, or move its VMs into the first group (at {})", first_declaration(&first, root, line_of)))
                    .with_pointer(pointer),
            );
        }
        for (v, vm) in items(group.get("vms")) {
            let at = VmAt {
                group: g,
                index: v,
                name: name_of(vm),
                root,
            };
            if let Some(name) = at.name
                && let Some((first_group, first_index)) = vms.seen(name, (g, v))
            {
                let first = format!("/spec/groups/{first_group}/vms/{first_index}/name");
                let pointer = format!("{}/name", at.base());
                out.push(
                    Diagnostic::new(
                        Code::DuplicateVm,
                        format!("VM '{}' is declared more than once", shorten(name)),
                    )
                    .with_help(format!(
                        "a VM fails back once: remove this entry or the first one (at {})",
                        first_declaration(&first, root, line_of)
                    ))
                    .with_pointer(pointer),
                );
            }
            let host = vm.get("host").and_then(Value::as_str);
            let switches = host.and_then(|h| hosts.get(h));
            if let (Some(h), None) = (host, switches) {
                let help = format!(
                    "{}declare it under spec.primary.hosts, or use one of: {}",
                    did_you_mean(h, host_names.iter().copied()),
                    list(&host_names, 10)
                );
                out.push(
                    Diagnostic::new(
                        Code::UnknownHost,
                        format!(
                            "{} names host '{}', which is not declared",
                            at.label(),
                            shorten(h)
                        ),
                    )
                    .with_help(help)
                    .with_pointer(format!("{}/host", at.base())),
                );
            }
            networks(vm, &at, host, switches, out);
            vm_settings(vm, &at, &default, out);
        }
    }
}

fn networks(
    vm: &Value,
    at: &VmAt<'_>,
    host: Option<&str>,
    switches: Option<&Vec<&str>>,
    out: &mut Vec<Diagnostic>,
) {
    let mut adapters = Unique::new();
    for (n, net) in items(vm.get("networks")) {
        if let Some(adapter) = net.get("adapter").and_then(Value::as_str)
            && adapters.seen(adapter, ()).is_some()
        {
            out.push(
                Diagnostic::new(
                    Code::DuplicateAdapter,
                    format!("{} lists adapter '{}' twice", at.label(), shorten(adapter)),
                )
                .with_help("give each network adapter its own label, or remove the repeated entry")
                .with_pointer(format!("{}/networks/{n}/adapter", at.base())),
            );
        }
        let (Some(sw), Some(host), Some(switches)) =
            (net.get("vswitch").and_then(Value::as_str), host, switches)
        else {
            continue;
        };
        if !switches.contains(&sw) {
            out.push(
                Diagnostic::new(
                    Code::UnknownVSwitch,
                    format!(
                        "vSwitch '{}' is not declared on host '{}'",
                        shorten(sw),
                        shorten(host)
                    ),
                )
                .with_help(format!(
                    "{}declare it under spec.primary.hosts[{}].vswitches, or use one of: {}",
                    did_you_mean(sw, switches.iter().copied()),
                    shorten(host),
                    list(switches, 10)
                ))
                .with_pointer(format!("{}/networks/{n}/vswitch", at.base())),
            );
        }
    }
}

fn vm_settings<'a>(
    vm: &'a Value,
    at: &VmAt<'_>,
    default: &dyn Fn(&str) -> Option<&'a str>,
    out: &mut Vec<Diagnostic>,
) {
    let own = |key: &str| vm.get(key).and_then(Value::as_str);
    let sync = own("sync").or_else(|| default("sync")).unwrap_or("delta");
    if sync == "full" && own("completion").is_some() {
        let (base, label) = (at.base(), at.label());
        out.push(
            Diagnostic::new(Code::CompletionIgnored, format!("{label} sets `completion`, which has no effect with `sync: full`"))
                .with_help("a full sync has no phase to pause after; remove `completion`, or use `sync: delta`")
                .with_pointer(format!("{base}/completion")),
        );
    }
    let commit = own("commit")
        .or_else(|| default("commit"))
        .unwrap_or("manual");
    if commit == "auto" && vm.get("verify").is_none() {
        let (base, label) = (at.base(), at.label());
        let pointer = if own("commit").is_some() {
            format!("{base}/commit")
        } else {
            format!("{base}/name")
        };
        out.push(
            Diagnostic::new(
                Code::AutoCommitWithoutVerify,
                format!(
                    "{label} commits automatically{} without a `verify` check; commit deletes the recovery copy",
                    if own("commit").is_some() { "" } else { " (spec.defaults.commit: auto)" }
                ),
            )
            .with_help("add `verify: { command: [...], timeout: 5m }` to check the VM before commit, or use `commit: manual`")
            .with_pointer(pointer),
        );
    }
    if let Some(timeout) = vm
        .get("verify")
        .and_then(|v| v.get("timeout"))
        .and_then(Value::as_str)
    {
        let pointer = || format!("{}/verify/timeout", at.base());
        match humantime::parse_duration(timeout) {
            Ok(d) if d.is_zero() => out.push(
                Diagnostic::new(
                    Code::InvalidDuration,
                    format!("{} has a verify timeout of zero", at.label()),
                )
                .with_help("give the check time to run, for example `timeout: 5m`")
                .with_pointer(pointer()),
            ),
            Ok(_) => {}
            Err(e) => out.push(
                Diagnostic::new(
                    Code::InvalidDuration,
                    format!(
                        "{} is not a duration: {}",
                        quote(&Value::String(timeout.to_owned())),
                        duration_problem(timeout, &e)
                    ),
                )
                .with_help("write a duration such as `90s`, `5m` or `1h 30m` (units: s, m, h, d)")
                .with_pointer(pointer()),
            ),
        }
    }
}

/// What is wrong with a duration, in words (humantime's own messages give
/// byte offsets).
fn duration_problem(text: &str, e: &humantime::DurationError) -> String {
    use humantime::DurationError as E;
    let at = |i: &usize| {
        text.get(*i..)
            .and_then(|rest| rest.chars().next())
            .map_or_else(String::new, |c| format!(" '{}'", shorten(&c.to_string())))
    };
    match e {
        E::InvalidCharacter(i) => format!("unexpected character{}", at(i)),
        E::NumberExpected(i) if text.trim().is_empty() => "it is empty".to_owned(),
        E::NumberExpected(0) => "it must start with a number".to_owned(),
        E::NumberExpected(i) => format!("a number is expected before{}", at(i)),
        E::UnknownUnit { unit, .. } => format!("unknown unit '{}'", shorten(unit)),
        E::NumberOverflow => "the number is too large".to_owned(),
        E::Empty => "it is empty".to_owned(),
    }
}

fn encryption(root: &Value, out: &mut Vec<Diagnostic>) {
    if root.pointer("/spec/encryption").is_some() {
        out.push(
            Diagnostic::new(Code::EncryptionRetired, "`spec.encryption` has no effect: Azure retired the data-encryption certificate in April 2022")
                .with_help("remove `spec.encryption`; the setting is accepted only so that older plans still load")
                .with_pointer("/spec/encryption"),
        );
    }
}
