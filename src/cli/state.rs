//! The state directory: one run lock per plan (with its owner), recorded
//! gate approvals, and the run journal.
//!
//! Layout: `<state-dir>/<plan>/run.lock`, `approvals.json`, `journal.jsonl`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::{Approvals, Gate};

pub fn plan_dir(state_dir: &Path, plan: &str) -> PathBuf {
    state_dir.join(plan)
}

/// Who holds a run lock.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub host: String,
    /// RFC 3339.
    pub since: String,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {} since {}", self.pid, self.host, self.since)
    }
}

/// Held for the whole run; released when dropped or when the process dies
/// (an OS file lock, so a killed holder frees it at once).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

pub enum LockError {
    Held(Option<Owner>),
    Io(String),
}

impl RunLock {
    pub fn acquire(state_dir: &Path, plan: &str) -> Result<RunLock, LockError> {
        let dir = plan_dir(state_dir, plan);
        std::fs::create_dir_all(&dir)
            .map_err(|e| LockError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("run.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LockError::Io(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Held(read_owner(&mut file)));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(LockError::Io(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )));
            }
        }
        let owner = Owner {
            pid: std::process::id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(serde_json::to_string(&owner).unwrap_or_default().as_bytes());
        let _ = file.sync_data();
        Ok(RunLock { _file: file })
    }
}

/// The record of the process holding the lock. The holder writes it just
/// after taking the lock, so a process that lost the race may find it
/// empty, half-written, or still naming an earlier holder that was killed:
/// it re-reads it for a moment (it never waits for the lock itself) until
/// it names a live process. Found by `tests/concurrency.rs`.
fn read_owner(file: &mut File) -> Option<Owner> {
    let this_host = gethostname::gethostname().to_string_lossy().into_owned();
    let mut last = None;
    for _ in 0..100 {
        let mut text = String::new();
        let _ = file.rewind();
        let _ = file.read_to_string(&mut text);
        if let Ok(owner) = serde_json::from_str::<Owner>(&text) {
            if owner.host != this_host || process_alive(owner.pid) != Some(false) {
                return Some(owner);
            }
            last = Some(owner);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    last
}

/// Whether process `pid` exists on this machine; `None` where that cannot
/// be told (no `/proc`).
fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return None;
    }
    Some(proc.join(pid.to_string()).exists())
}

/// Approvals recorded by `failback approve`, per gate and VM.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RecordedApprovals {
    #[serde(default)]
    pub completion: Vec<String>,
    #[serde(default)]
    pub commit: Vec<String>,
}

impl RecordedApprovals {
    pub fn load(state_dir: &Path, plan: &str) -> Result<Self, String> {
        let path = plan_dir(state_dir, plan).join("approvals.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is corrupt: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes atomically and durably.
    pub fn save(&self, state_dir: &Path, plan: &str) -> Result<(), String> {
        let dir = plan_dir(state_dir, plan);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("approvals.json");
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        tmp.write_all(&text)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        tmp.persist(&path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    pub fn add(&mut self, gate: Gate, vm: &str) {
        let list = match gate {
            Gate::Completion => &mut self.completion,
            Gate::Commit => &mut self.commit,
        };
        if !list.iter().any(|v| v == vm) {
            list.push(vm.to_owned());
        }
    }

    pub fn to_approvals(&self) -> Approvals {
        let mut a = Approvals::default();
        a.vms.extend(
            self.completion
                .iter()
                .map(|v| (Gate::Completion, v.clone())),
        );
        a.vms
            .extend(self.commit.iter().map(|v| (Gate::Commit, v.clone())));
        a
    }
}

/// Appends run events to `journal.jsonl`.
pub struct Journal {
    file: std::sync::Mutex<Option<File>>,
}

impl Journal {
    pub fn open(state_dir: &Path, plan: &str) -> Journal {
        let dir = plan_dir(state_dir, plan);
        let file = std::fs::create_dir_all(&dir)
            .and_then(|()| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("journal.jsonl"))
            })
            .ok();
        Journal {
            file: std::sync::Mutex::new(file),
        }
    }

    pub fn append(&self, line: &str) {
        if let Ok(mut guard) = self.file.lock()
            && let Some(f) = guard.as_mut()
        {
            let _ = writeln!(f, "{line}");
        }
    }

    /// The last step each VM started or finished, from the journal.
    pub fn last_steps(state_dir: &Path, plan: &str) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        let path = plan_dir(state_dir, plan).join("journal.jsonl");
        let Ok(text) = std::fs::read_to_string(path) else {
            return out;
        };
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let event = v.get("event").and_then(|e| e.as_str()).unwrap_or_default();
            if let (Some(vm), Some(step)) = (
                v.get("vm").and_then(|x| x.as_str()),
                v.get("step").and_then(|x| x.as_str()),
            ) {
                let suffix = match event {
                    "step-failed" => " (failed)",
                    "step-started" => " (started)",
                    _ => "",
                };
                out.insert(vm.to_owned(), format!("{step}{suffix}"));
            }
        }
        out
    }
}
