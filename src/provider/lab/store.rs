//! Where the lab world lives on disk, and how processes share it.
//!
//! ```text
//! LAB/world.json        a whole world (LabWorld) with the number G of its journal
//! LAB/world.journal.G   the saves since: one line per save, each VM it changed
//!                       whole (and the sites, when it changed them)
//! LAB/world.lock        exclusive for a read-modify-write, shared for a read
//! ```
//!
//! The world is `world.json` with the records of its journal applied in
//! order. A save appends one line (the VMs it changed, whole) and fsyncs it,
//! so a step of a 10,000-VM lab writes about a kilobyte instead of
//! rewriting the whole world; once the journal outgrows the world file (at
//! least [`COMPACT_AT`]), the save writes a whole new world instead, with the
//! next journal number (temporary file, fsync, rename, fsync of the
//! directory), and removes the old journal.
//!
//! Guarantees:
//! - a save is atomic and durable: a line counts only when it is whole and
//!   its checksum matches. A torn last line (a crash while appending) is
//!   ignored by readers and cut off by the next writer, before it appends.
//!   A damaged line followed by whole ones is corruption, reported, never
//!   skipped. A whole new world is in place by a rename, and its journal
//!   number makes the old journal (removed after the rename, or left by a
//!   crash) irrelevant;
//! - a writer holds `world.lock` exclusively from its read to its save;
//!   a reader holds it shared, so it never sees a line whose fsync has not
//!   succeeded yet (a failed fsync cuts the line off again);
//! - each process keeps the world it last read ([`Lab`] is shared by its
//!   threads) and reads only the lines appended since, while `world.json`
//!   is the same file (it keeps the file open, so its inode cannot be
//!   reused). A change made under the lock but not saved (an action that
//!   failed halfway, or found nothing to do) is undone in it; a save that
//!   changes nothing writes nothing.
//!
//! Test-only hooks (debug builds only) act on the N-th world write of the
//! process, an append or a whole new world alike: [`TEST_FAIL_WORLD_WRITE_ENV`],
//! [`TEST_FAIL_WORLD_FSYNC_ENV`], [`TEST_ABORT_AT_WORLD_WRITE_ENV`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::LabError;
use super::world::{
    DISKS_DIR, EVENTS_FILE, LOCK_FILE, LabVm, LabWorld, PrimarySite, RecoverySite, WORLD_FILE,
    WORLD_VERSION,
};
use crate::sync::{FileStamp, temp_beside};

/// The journal of world `G` is `world.journal.G`.
pub const JOURNAL_PREFIX: &str = "world.journal.";

/// The journal is folded into a new `world.json` once it would grow past
/// the world file's size, or past this, whichever is larger: reading it
/// then costs at most about as much as reading the world itself.
pub const COMPACT_AT: u64 = 64 * 1024;

/// A lab directory (absolute). Cheap to clone; clones share the world read
/// last (see the [module docs](self)).
#[derive(Clone, Debug)]
pub(crate) struct Lab {
    dir: PathBuf,
    cache: Arc<Mutex<Option<Store>>>,
    /// Whole reads of the world so far (the tests check that a step does
    /// not cause one).
    loads: Arc<AtomicU64>,
}

impl Lab {
    /// The lab in `dir`, which must hold a world.
    pub(crate) fn open(dir: &Path) -> Result<Lab, LabError> {
        if !dir.join(WORLD_FILE).is_file() {
            return Err(LabError::NoWorld {
                dir: dir.to_path_buf(),
            });
        }
        let dir = fs::canonicalize(dir).map_err(LabError::io("resolving", dir))?;
        let lab = Lab::at(dir);
        lab.with_world(|_| ())?;
        Ok(lab)
    }

    /// A lab in `dir` (absolute), which may not hold a world yet.
    pub(crate) fn at(dir: PathBuf) -> Lab {
        Lab {
            dir,
            cache: Arc::new(Mutex::new(None)),
            loads: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many times this lab (and its clones) read the whole world.
    #[cfg(test)]
    pub(crate) fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    pub(crate) fn world_path(&self) -> PathBuf {
        self.dir.join(WORLD_FILE)
    }

    fn journal_path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{JOURNAL_PREFIX}{number}"))
    }

    pub(crate) fn events_path(&self) -> PathBuf {
        self.dir.join(EVENTS_FILE)
    }

    pub(crate) fn disks_dir(&self) -> PathBuf {
        self.dir.join(DISKS_DIR)
    }

    /// Where disk `disk` of the VM stored in `vm_dir` lives on `side`
    /// (`recovery`, `primary` or `replica`).
    pub(crate) fn disk_path(&self, vm_dir: &str, side: &str, disk: &str) -> PathBuf {
        self.disks_dir()
            .join(vm_dir)
            .join(side)
            .join(format!("{disk}.img"))
    }

    /// Runs `f` on the world as it is now (under the shared lock).
    ///
    /// Must not be called while this thread holds a [`Locked`] of the lab:
    /// it would wait for itself.
    pub(crate) fn with_world<T>(&self, f: impl FnOnce(&LabWorld) -> T) -> Result<T, LabError> {
        self.with_store(|store| f(&store.world))
    }

    /// The VM `name` as it is now.
    pub(crate) fn vm(&self, name: &str) -> Result<LabVm, LabError> {
        self.with_store(|store| store.vm(name).cloned())?
    }

    /// Runs `f` with the VMs named (those the world lacks left out), as
    /// they are now.
    pub(crate) fn with_vms<T>(
        &self,
        names: &[String],
        f: impl FnOnce(&LabWorld, Vec<&LabVm>) -> T,
    ) -> Result<T, LabError> {
        self.with_store(|store| {
            let vms = names.iter().filter_map(|n| store.vm(n).ok()).collect();
            f(&store.world, vms)
        })
    }

    /// A copy of the whole world as it is now, as `lab show` prints it.
    pub(crate) fn read(&self) -> Result<LabWorld, LabError> {
        self.with_world(|world| {
            let mut world = world.clone();
            world.journal = 0;
            world
        })
    }

    fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> Result<T, LabError> {
        let _shared = self.lock_file(false)?;
        let mut slot = self.slot();
        let store = refresh(self, &mut slot)?;
        Ok(f(store))
    }

    fn slot(&self) -> MutexGuard<'_, Option<Store>> {
        // A thread that panicked while holding it left nothing half-done
        // on disk; the world is read again.
        self.cache.lock().unwrap_or_else(|poisoned| {
            let mut slot = poisoned.into_inner();
            *slot = None;
            slot
        })
    }

    /// Opens `world.lock` and locks it, exclusively or shared (blocking
    /// until other processes and threads release it).
    pub(crate) fn lock_file(&self, exclusive: bool) -> Result<File, LabError> {
        let path = self.dir.join(LOCK_FILE);
        let create = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        };
        // A reader needs no write access to the lab (a `status` run by
        // another user): an existing lock file is opened read-only.
        let opened = if exclusive {
            create()
        } else {
            File::open(&path).or_else(|_| create())
        };
        let file = opened.map_err(LabError::io("opening the lock", &path))?;
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.map_err(LabError::io("locking", &path))?;
        Ok(file)
    }

    /// Takes the world lock and reads the world: the start of every
    /// read-modify-write. The lock is released when the result is dropped.
    pub(crate) fn lock(&self) -> Result<Locked<'_>, LabError> {
        let lock = self.lock_file(true)?;
        let store = {
            let mut slot = self.slot();
            refresh(self, &mut slot)?;
            slot.take()
        };
        let Some(store) = store else {
            return Err(LabError::NoWorld {
                dir: self.dir.clone(),
            });
        };
        Ok(Locked {
            lab: self,
            store: Some(store),
            changed: Changed::default(),
            forget: false,
            _lock: lock,
        })
    }

    /// Checks what this build cannot use in a world: another version, or a
    /// disk path outside the lab's `disks/` directory (the lab writes and
    /// deletes them).
    fn check(&self, path: &Path, world: &LabWorld) -> Result<(), LabError> {
        if world.version != WORLD_VERSION {
            return Err(LabError::Invalid {
                path: path.to_path_buf(),
                reason: format!(
                    "its version is {}, this build reads version {WORLD_VERSION}",
                    world.version
                ),
            });
        }
        world.vms.iter().try_for_each(|vm| self.check_vm(path, vm))
    }

    fn check_vm(&self, path: &Path, vm: &LabVm) -> Result<(), LabError> {
        let disks_dir = self.disks_dir();
        let replica = vm.replica.iter().flat_map(|r| &r.disks);
        for disk in vm
            .recovery
            .disks
            .iter()
            .chain(&vm.primary.disks)
            .chain(replica)
        {
            let inside = disk.path.starts_with(&disks_dir)
                && !disk
                    .path
                    .components()
                    .any(|c| matches!(c, Component::ParentDir));
            if !inside {
                return Err(LabError::Invalid {
                    path: path.to_path_buf(),
                    reason: format!(
                        "disk '{}' of VM '{}' is at {}, outside {}",
                        disk.name,
                        vm.name,
                        disk.path.display(),
                        disks_dir.display()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// What a [`Locked`] may have changed, with the parts as they were.
#[derive(Debug, Default)]
struct Changed {
    /// Index into `world.vms`, and the VM before.
    vms: Vec<(usize, LabVm)>,
    /// The sites before, if they may have changed.
    sites: Option<Sites>,
}

impl Changed {
    fn any(&self) -> bool {
        self.sites.is_some() || !self.vms.is_empty()
    }

    /// Forgets what did not change in the end.
    fn settle(&mut self, world: &LabWorld) {
        self.vms.retain(|(at, before)| world.vms[*at] != *before);
        if self.sites.as_ref() == Some(&Sites::of(world)) {
            self.sites = None;
        }
    }

    /// Puts `world` back as it was.
    fn undo(self, world: &mut LabWorld) {
        for (at, before) in self.vms {
            world.vms[at] = before;
        }
        if let Some(sites) = self.sites {
            sites.put(world);
        }
    }
}

/// The world, read under the exclusive lock. Changes go through
/// [`Locked::vm_mut`], [`Locked::primary_mut`] or
/// [`Locked::count_guest_write`]; [`Locked::save`] persists them. Dropped
/// unsaved, its changes are undone.
pub(crate) struct Locked<'a> {
    lab: &'a Lab,
    store: Option<Store>,
    changed: Changed,
    /// A save failed: the world this process holds may not be the disk's.
    forget: bool,
    // Declared last: released after `drop` has put the world back.
    _lock: File,
}

impl Locked<'_> {
    fn store(&self) -> &Store {
        // Only `drop` takes it out.
        self.store.as_ref().unwrap_or_else(|| unreachable!())
    }

    fn store_mut(&mut self) -> &mut Store {
        self.store.as_mut().unwrap_or_else(|| unreachable!())
    }

    pub(crate) fn world(&self) -> &LabWorld {
        &self.store().world
    }

    pub(crate) fn vm(&self, name: &str) -> Result<&LabVm, LabError> {
        self.store().vm(name)
    }

    /// VM `name`, to change (recorded for [`Locked::save`]).
    pub(crate) fn vm_mut(&mut self, name: &str) -> Result<&mut LabVm, LabError> {
        let at = self.store().position(name)?;
        if !self.changed.vms.iter().any(|(i, _)| *i == at) {
            let before = self.store().world.vms[at].clone();
            self.changed.vms.push((at, before));
        }
        Ok(&mut self.store_mut().world.vms[at])
    }

    /// Fails unless the primary site and `host` are connected.
    pub(crate) fn require_reachable(&self, host: &str) -> Result<(), LabError> {
        self.world().require_reachable(host)
    }

    /// Counts one `lab write` without a seed.
    pub(crate) fn count_guest_write(&mut self) {
        self.keep_sites();
        let world = &mut self.store_mut().world;
        world.guest_writes = world.guest_writes.saturating_add(1);
    }

    /// The primary site, to change (recorded for [`Locked::save`]).
    pub(crate) fn primary_mut(&mut self) -> &mut PrimarySite {
        self.keep_sites();
        &mut self.store_mut().world.primary
    }

    fn keep_sites(&mut self) {
        if self.changed.sites.is_none() {
            self.changed.sites = Some(Sites::of(&self.store().world));
        }
    }

    /// Persists the changes, atomically and durably (see the [module
    /// docs](self)).
    /// Nothing is written when nothing differs from the world as read.
    pub(crate) fn save(&mut self) -> Result<(), LabError> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.settle(self.world());
        if !changed.any() {
            return Ok(());
        }
        let lab = self.lab;
        let saved = self.store_mut().save(lab, &changed);
        if saved.is_err() {
            // The disk has the world before, or (a failure after the
            // rename) the new one: read it again.
            self.forget = true;
        }
        saved
    }

    /// Appends one record to `events.jsonl` (under the lock, so records of
    /// concurrent processes never interleave), durably.
    pub(crate) fn append_event(&self, record: &serde_json::Value) -> Result<(), LabError> {
        append_event(self.lab, record)
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let Some(mut store) = self.store.take() else {
            return;
        };
        if self.forget {
            return;
        }
        std::mem::take(&mut self.changed).undo(&mut store.world);
        *self.lab.slot() = Some(store);
    }
}

/// The world as this process read it, and how far it read.
#[derive(Debug)]
struct Store {
    world: LabWorld,
    /// VM name to its index in `world.vms`.
    index: HashMap<String, usize>,
    /// `world.json` as read, kept open so that its inode is not reused.
    base: File,
    /// Its stamp when read: a world file with another stamp (replaced, or
    /// edited in place) is read again.
    base_stamp: FileStamp,
    base_len: u64,
    /// `world.journal.G` as read, if it existed.
    journal: Option<File>,
    /// The bytes of the journal read so far: whole, valid records.
    journal_len: u64,
}

impl Store {
    fn position(&self, name: &str) -> Result<usize, LabError> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| LabError::UnknownVm {
                vm: name.to_owned(),
            })
    }

    fn vm(&self, name: &str) -> Result<&LabVm, LabError> {
        Ok(&self.world.vms[self.position(name)?])
    }

    /// Reads `world.json` and its journal.
    fn load(lab: &Lab) -> Result<Store, LabError> {
        lab.loads.fetch_add(1, Ordering::Relaxed);
        let path = lab.world_path();
        let mut base = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LabError::NoWorld {
                    dir: lab.dir.clone(),
                });
            }
            Err(e) => return Err(LabError::io("reading", &path)(e)),
        };
        let base_stamp = base
            .metadata()
            .map(|meta| FileStamp::from_metadata(&meta))
            .map_err(LabError::io("reading", &path))?;
        let mut bytes = Vec::new();
        base.read_to_end(&mut bytes)
            .map_err(LabError::io("reading", &path))?;
        let world: LabWorld =
            serde_json::from_slice(&bytes).map_err(|source| LabError::Corrupt {
                path: path.clone(),
                source,
            })?;
        lab.check(&path, &world)?;
        let index = world
            .vms
            .iter()
            .enumerate()
            .map(|(i, vm)| (vm.name.clone(), i))
            .collect();
        let mut store = Store {
            world,
            index,
            base,
            base_stamp,
            base_len: bytes.len() as u64,
            journal: None,
            journal_len: 0,
        };
        if !store.catch_up(lab)? {
            return Err(LabError::Invalid {
                path: lab.journal_path(store.world.journal),
                reason: "the journal changed while it was being read".into(),
            });
        }
        Ok(store)
    }

    /// Applies the journal's lines appended since the last call. `false`:
    /// the journal is not the file read before (the world must be read
    /// again).
    fn catch_up(&mut self, lab: &Lab) -> Result<bool, LabError> {
        let path = lab.journal_path(self.world.journal);
        let on_disk = match fs::metadata(&path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(LabError::io("reading", &path)(e)),
        };
        let Some(meta) = on_disk else {
            // No journal: nothing to read, unless one was read before.
            return Ok(self.journal.is_none());
        };
        let file = match self.journal.take() {
            Some(file) => {
                let held = file.metadata().map_err(LabError::io("reading", &path))?;
                if !same_file(&held, &meta) || meta.len() < self.journal_len {
                    return Ok(false);
                }
                file
            }
            // Opened for writing too: a save under the lock appends to it.
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(LabError::io("reading", &path))?,
        };
        let file = self.journal.insert(file);
        let tail = read_from(file, &path, self.journal_len)?;
        let (records, valid) = parse_journal(&tail, &path, self.journal_len)?;
        for record in records {
            self.apply(lab, &path, record)?;
        }
        self.journal_len += valid;
        Ok(true)
    }

    fn apply(&mut self, lab: &Lab, path: &Path, record: Record) -> Result<(), LabError> {
        if let Some(sites) = record.sites {
            sites.put(&mut self.world);
        }
        for vm in record.vms {
            lab.check_vm(path, &vm)?;
            match self.index.get(&vm.name) {
                Some(&at) => self.world.vms[at] = vm,
                None => {
                    self.index.insert(vm.name.clone(), self.world.vms.len());
                    self.world.vms.push(vm);
                }
            }
        }
        Ok(())
    }

    /// Persists `changed`: one journal line, or a whole new world when the
    /// journal has grown enough.
    fn save(&mut self, lab: &Lab, changed: &Changed) -> Result<(), LabError> {
        let fault = next_write_fault();
        let line = self.record_line(lab, changed)?;
        if self.journal_len + line.len() as u64 <= compact_at(self.base_len) {
            self.append(lab, &line, fault)
        } else {
            self.compact(lab, fault)
        }
    }

    fn record_line(&self, lab: &Lab, changed: &Changed) -> Result<Vec<u8>, LabError> {
        let world = &self.world;
        let record = RecordRef {
            sites: changed.sites.is_some().then(|| Sites::of(world)),
            vms: changed.vms.iter().map(|(at, _)| &world.vms[*at]).collect(),
        };
        let json = serde_json::to_vec(&record).map_err(|source| LabError::Corrupt {
            path: lab.journal_path(world.journal),
            source,
        })?;
        let mut line = Vec::with_capacity(json.len() + 34);
        line.extend_from_slice(checksum(&json).as_bytes());
        line.push(b' ');
        line.extend_from_slice(&json);
        line.push(b'\n');
        Ok(line)
    }

    /// Appends `line` to the journal and fsyncs it; on failure the journal
    /// is cut back to what it was.
    fn append(&mut self, lab: &Lab, line: &[u8], fault: WriteFault) -> Result<(), LabError> {
        let path = lab.journal_path(self.world.journal);
        let failed = |source| LabError::WorldWrite {
            path: lab.world_path(),
            file: path.clone(),
            source,
        };
        if self.journal.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(failed)?;
            sync_dir(&lab.dir)?;
            self.journal = Some(file);
        }
        let Some(file) = &self.journal else {
            return Ok(());
        };
        let start = self.journal_len;
        let written = (|| {
            // A torn line left by a crash ends the journal: cut it off.
            if file.metadata()?.len() != start {
                file.set_len(start)?;
            }
            fault.before_write()?;
            if fault == WriteFault::AbortBeforeRename {
                // A crash halfway through the line.
                write_all_at(file, &line[..line.len() / 2], start)?;
                std::process::abort();
            }
            write_all_at(file, line, start)?;
            fault.before_sync()?;
            file.sync_data()
        })();
        if let Err(e) = written {
            // Best effort: the write error is the one worth reporting. A
            // line whose fsync failed is cut off (its pages may be lost);
            // were the cut to fail, the line would be whole on disk, which
            // is a save, never a torn world.
            let _ = file.set_len(start).and_then(|()| file.sync_data());
            return Err(failed(e));
        }
        if fault == WriteFault::AbortAfterRename {
            std::process::abort();
        }
        self.journal_len = start + line.len() as u64;
        Ok(())
    }

    /// Writes the whole world, with the next journal number, in place of
    /// `world.json`, then removes the journals it makes irrelevant.
    fn compact(&mut self, lab: &Lab, fault: WriteFault) -> Result<(), LabError> {
        let old = self.world.journal;
        self.world.journal = old.wrapping_add(1);
        let path = lab.world_path();
        let written = serde_json::to_vec_pretty(&self.world)
            .map_err(|source| LabError::Corrupt {
                path: path.clone(),
                source,
            })
            .and_then(|mut bytes| {
                bytes.push(b'\n');
                atomic_write(&path, &bytes, fault).map(|()| bytes.len())
            });
        let len = match written {
            Ok(len) => len,
            Err(e) => {
                self.world.journal = old;
                return Err(e);
            }
        };
        self.base = File::open(&path).map_err(LabError::io("reading", &path))?;
        self.base_stamp = self
            .base
            .metadata()
            .map(|meta| FileStamp::from_metadata(&meta))
            .map_err(LabError::io("reading", &path))?;
        self.base_len = len as u64;
        self.journal = None;
        self.journal_len = 0;
        // The new world is saved; an old journal left behind is never read.
        if let Err(e) = remove_journals(lab, Some(self.world.journal)) {
            tracing::warn!("{e}");
        }
        Ok(())
    }
}

/// Writes `world` as a new `world.json` with no journal (`lab init`),
/// atomically and durably, and removes every journal. Call it under the
/// exclusive lock.
pub(crate) fn create_world(lab: &Lab, world: &LabWorld) -> Result<(), LabError> {
    remove_journals(lab, None)?;
    let mut world = world.clone();
    world.journal = 0;
    let path = lab.world_path();
    let mut bytes = serde_json::to_vec_pretty(&world).map_err(|source| LabError::Corrupt {
        path: path.clone(),
        source,
    })?;
    bytes.push(b'\n');
    atomic_write(&path, &bytes, next_write_fault())
}

/// Removes every journal but number `keep`.
fn remove_journals(lab: &Lab, keep: Option<u64>) -> Result<(), LabError> {
    let entries = fs::read_dir(&lab.dir).map_err(LabError::io("reading", &lab.dir))?;
    let mut removed = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(number) = name.to_str().and_then(|n| n.strip_prefix(JOURNAL_PREFIX)) else {
            continue;
        };
        if keep.is_some_and(|keep| number == keep.to_string()) {
            continue;
        }
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LabError::io("removing", &path)(e)),
        }
    }
    if removed {
        sync_dir(&lab.dir)?;
    }
    Ok(())
}

/// Brings `slot` up to date with the disk, reading only what changed.
fn refresh<'s>(lab: &Lab, slot: &'s mut Option<Store>) -> Result<&'s mut Store, LabError> {
    if let Some(store) = slot.as_mut() {
        let current = fs::metadata(lab.world_path())
            .is_ok_and(|meta| FileStamp::from_metadata(&meta) == store.base_stamp)
            && cfg!(unix);
        let caught_up = current && store.catch_up(lab).unwrap_or(false);
        if !caught_up {
            *slot = None;
        }
    }
    match slot {
        Some(store) => Ok(store),
        None => Ok(slot.insert(Store::load(lab)?)),
    }
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &fs::Metadata, _: &fs::Metadata) -> bool {
    // No file identity here: always read the world again.
    false
}

fn read_from(file: &File, path: &Path, offset: u64) -> Result<Vec<u8>, LabError> {
    let mut bytes = Vec::new();
    let mut reader = file;
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(offset))
        .and_then(|_| reader.read_to_end(&mut bytes))
        .map_err(LabError::io("reading", path))?;
    Ok(bytes)
}

/// One save, as a journal line holds it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Record {
    #[serde(default)]
    sites: Option<Sites>,
    #[serde(default)]
    vms: Vec<LabVm>,
}

/// Everything of the world but its VMs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sites {
    primary: PrimarySite,
    recovery: RecoverySite,
    latency_ms: u64,
    seed: u64,
    guest_writes: u64,
}

impl Sites {
    fn of(world: &LabWorld) -> Sites {
        Sites {
            primary: world.primary.clone(),
            recovery: world.recovery.clone(),
            latency_ms: world.latency_ms,
            seed: world.seed,
            guest_writes: world.guest_writes,
        }
    }

    fn put(self, world: &mut LabWorld) {
        world.primary = self.primary;
        world.recovery = self.recovery;
        world.latency_ms = self.latency_ms;
        world.seed = self.seed;
        world.guest_writes = self.guest_writes;
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    sites: Option<Sites>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    vms: Vec<&'a LabVm>,
}

/// The checksum of a journal line's JSON: BLAKE3, 128 bits, hex.
fn checksum(json: &[u8]) -> String {
    let hash = blake3::hash(json);
    hash.to_hex().as_str()[..32].to_owned()
}

/// The whole, valid records of `bytes` (the journal from byte `offset`),
/// and how many bytes they take. A torn last line ends them; a damaged line
/// followed by more is an error.
fn parse_journal(bytes: &[u8], path: &Path, offset: u64) -> Result<(Vec<Record>, u64), LabError> {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            break; // torn: no end of line yet
        };
        match parse_line(&rest[..end]) {
            Some(record) => records.push(record),
            None if at + end + 1 == bytes.len() => break, // torn last line
            None => {
                return Err(LabError::Invalid {
                    path: path.to_path_buf(),
                    reason: format!(
                        "the record at byte {} is damaged and later ones follow it",
                        offset + at as u64
                    ),
                });
            }
        }
        at += end + 1;
    }
    Ok((records, at as u64))
}

fn parse_line(line: &[u8]) -> Option<Record> {
    let (sum, json) = (line.get(..32)?, line.get(33..)?);
    if line.get(32) != Some(&b' ') || checksum(json).as_bytes() != sum {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Test-only fault point (debug builds only; release builds ignore it):
/// `FAILBACK_TEST_FAIL_WORLD_WRITE=N` makes the N-th world write of the
/// process fail as a full disk would (ENOSPC before a byte is written).
/// Never set it otherwise.
pub const TEST_FAIL_WORLD_WRITE_ENV: &str = "FAILBACK_TEST_FAIL_WORLD_WRITE";
/// Test-only fault point (debug builds only): `FAILBACK_TEST_FAIL_WORLD_FSYNC=N`
/// makes the fsync of the N-th world write fail with EIO, once its bytes
/// are written.
pub const TEST_FAIL_WORLD_FSYNC_ENV: &str = "FAILBACK_TEST_FAIL_WORLD_FSYNC";
/// Test-only crash point (debug builds only): `FAILBACK_TEST_ABORT_AT_WORLD_WRITE=N`
/// aborts the process (as `kill -9` would) at the N-th world write before
/// it takes effect: halfway through its journal line, or, for a whole new
/// world, with its temporary file written and fsynced, before the rename.
/// `N:after-rename` aborts once the write is durable instead.
pub const TEST_ABORT_AT_WORLD_WRITE_ENV: &str = "FAILBACK_TEST_ABORT_AT_WORLD_WRITE";

/// Test-only knob (debug builds only): `FAILBACK_TEST_COMPACT_AT=BYTES`
/// folds the journal into a new world once it would grow past `BYTES`
/// (instead of the world file's size or [`COMPACT_AT`]), so that the crash
/// tests meet whole-world writes among journal appends.
pub const TEST_COMPACT_AT_ENV: &str = "FAILBACK_TEST_COMPACT_AT";

/// How long the journal may grow beside a world file of `base_len` bytes.
fn compact_at(base_len: u64) -> u64 {
    let knob = cfg!(debug_assertions)
        .then(|| std::env::var(TEST_COMPACT_AT_ENV).ok()?.trim().parse().ok())
        .flatten();
    knob.unwrap_or(base_len.max(COMPACT_AT))
}

/// What a test fault point does to one world write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteFault {
    None,
    Enospc,
    FsyncEio,
    AbortBeforeRename,
    AbortAfterRename,
}

/// Counts a world write of this process and returns the fault, if any, the
/// test hooks put on it. Always `None` in release builds.
fn next_write_fault() -> WriteFault {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
    if !cfg!(debug_assertions) {
        return WriteFault::None;
    }
    let at = |var: &str| -> Option<(u64, String)> {
        let text = std::env::var(var).ok()?;
        let (count, suffix) = text.trim().split_once(':').unwrap_or((text.trim(), ""));
        Some((count.parse().ok()?, suffix.to_owned()))
    };
    if at(TEST_FAIL_WORLD_WRITE_ENV).is_some_and(|(at, _)| at == n) {
        return WriteFault::Enospc;
    }
    if at(TEST_FAIL_WORLD_FSYNC_ENV).is_some_and(|(at, _)| at == n) {
        return WriteFault::FsyncEio;
    }
    match at(TEST_ABORT_AT_WORLD_WRITE_ENV) {
        Some((at, suffix)) if at == n && suffix == "after-rename" => WriteFault::AbortAfterRename,
        Some((at, _)) if at == n => WriteFault::AbortBeforeRename,
        _ => WriteFault::None,
    }
}

impl WriteFault {
    /// The injected failure of a write, before its first byte.
    fn before_write(self) -> std::io::Result<()> {
        match self {
            WriteFault::Enospc => Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("no space left on device (injected by {TEST_FAIL_WORLD_WRITE_ENV})"),
            )),
            _ => Ok(()),
        }
    }

    /// The injected failure of the fsync of a write's bytes.
    fn before_sync(self) -> std::io::Result<()> {
        match self {
            WriteFault::FsyncEio => Err(std::io::Error::other(format!(
                "input/output error on fsync (injected by {TEST_FAIL_WORLD_FSYNC_ENV})"
            ))),
            _ => Ok(()),
        }
    }
}

/// Temporary file, fsync, rename, fsync of the directory: a crash leaves
/// the old file or the new one.
fn atomic_write(path: &Path, bytes: &[u8], fault: WriteFault) -> Result<(), LabError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_beside(path);
    let written = File::create(&tmp).and_then(|mut file| {
        fault.before_write()?;
        file.write_all(bytes)?;
        fault.before_sync()?;
        file.sync_all()
    });
    if let Err(e) = written {
        // Best effort: the write error is the one worth reporting. After a
        // failed fsync the temporary file is abandoned, never fsynced again
        // (its pages may already be lost); the old world stays in place.
        let _ = fs::remove_file(&tmp);
        return Err(LabError::WorldWrite {
            path: path.to_path_buf(),
            file: tmp,
            source: e,
        });
    }
    if fault == WriteFault::AbortBeforeRename {
        std::process::abort();
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(LabError::io("replacing", path)(e));
    }
    sync_dir(dir)?;
    if fault == WriteFault::AbortAfterRename {
        std::process::abort();
    }
    Ok(())
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(not(unix))]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    let mut writer = file;
    std::io::Seek::seek(&mut writer, std::io::SeekFrom::Start(offset))?;
    writer.write_all(buf)
}

/// Makes the entries of `dir` (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LabError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(LabError::io("flushing the directory", dir))
    }
    #[cfg(not(unix))]
    {
        // std cannot fsync a directory here; NTFS journals its entries.
        let _ = dir;
        Ok(())
    }
}

fn append_event(lab: &Lab, record: &serde_json::Value) -> Result<(), LabError> {
    let path = lab.events_path();
    let mut line = record.to_string();
    line.push('\n');
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| {
            file.write_all(line.as_bytes())?;
            file.sync_data()
        })
        .map_err(LabError::io("appending to", &path))
}
