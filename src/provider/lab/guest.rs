//! `lab write`: a guest writing into the disks of a VM running in the
//! recovery site, safe to run while a failback of that VM is in progress.

use std::fs::OpenOptions;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::store::Lab;
use super::{LabError, write_at};
use crate::sync::{BLOCK, ChangeMap};

/// What a guest write did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestWrite {
    pub vm: String,
    /// Blocks written (some may be the same block written twice).
    pub blocks: u64,
    pub bytes: u64,
    /// Blocks written per disk.
    pub disks: Vec<DiskWrite>,
    /// The writes were recorded in the disks' change maps (a delta failback
    /// is in progress).
    pub tracked: bool,
}

/// Blocks written into one disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskWrite {
    pub disk: String,
    pub blocks: u64,
}

/// Writes `blocks` random 4 KiB blocks at random block offsets into the
/// recovery disks of `vm`, as its guest would.
///
/// Guarantees: runs under the world lock, so the recovery VM cannot be shut
/// down halfway through; when change tracking is on, every block is marked
/// in its disk's change map, and the map saved, before any data is written;
/// the data is fsynced before the lock is released. Without `seed`, each
/// call draws new blocks (from the world's seed and a counter).
///
/// Errors: the VM is unknown or not running in the recovery site; a change
/// map cannot be read or saved; a disk cannot be written.
pub fn write_guest_blocks(
    dir: &std::path::Path,
    vm: &str,
    blocks: u64,
    seed: Option<u64>,
) -> Result<GuestWrite, LabError> {
    let lab = Lab::open(dir)?;
    let mut locked = lab.lock()?;
    let record = locked.vm(vm)?;
    if !record.recovery.exists || !record.recovery.running {
        let reason = if record.recovery.exists {
            format!("its recovery VM is off (state {})", record.state)
        } else {
            format!("it has no recovery VM (state {})", record.state)
        };
        return Err(LabError::NotRunning {
            vm: vm.to_owned(),
            reason,
        });
    }
    let disks: Vec<_> = record
        .recovery
        .disks
        .iter()
        .filter(|d| d.size > 0)
        .cloned()
        .collect();
    let tracked = record.change_tracking;

    let mut hasher = blake3::Hasher::new_derive_key("failback lab guest write v1");
    match seed {
        Some(seed) => hasher.update(&[1]).update(&seed.to_le_bytes()),
        None => hasher
            .update(&[0])
            .update(&locked.world().seed.to_le_bytes())
            .update(&locked.world().guest_writes.to_le_bytes()),
    };
    hasher.update(vm.as_bytes());
    let mut rng = ChaCha8Rng::from_seed(*hasher.finalize().as_bytes());

    let mut writes: Vec<(usize, u64)> = Vec::new();
    if !disks.is_empty() {
        for _ in 0..blocks {
            let disk = rng.random_range(0..disks.len());
            let count = disks[disk].size.div_ceil(BLOCK as u64);
            writes.push((disk, rng.random_range(0..count)));
        }
    }

    if tracked {
        for (i, disk) in disks.iter().enumerate() {
            if !writes.iter().any(|(d, _)| *d == i) {
                continue;
            }
            let path = disk.change_map_path();
            let mut map = ChangeMap::load(&path)?;
            for (_, block) in writes.iter().filter(|(d, _)| *d == i) {
                map.mark(*block);
            }
            map.save(&path)?;
        }
    }

    let mut per_disk = vec![0u64; disks.len()];
    let mut bytes = 0u64;
    let mut data = [0u8; BLOCK];
    for (i, disk) in disks.iter().enumerate() {
        let mine: Vec<u64> = writes
            .iter()
            .filter(|(d, _)| *d == i)
            .map(|(_, b)| *b)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&disk.path)
            .map_err(LabError::io("opening", &disk.path))?;
        for block in mine {
            let offset = block * BLOCK as u64;
            let len = (disk.size - offset).min(BLOCK as u64) as usize;
            rng.fill_bytes(&mut data[..len]);
            write_at(&file, &disk.path, &data[..len], offset)?;
            per_disk[i] += 1;
            bytes += len as u64;
        }
        file.sync_data()
            .map_err(LabError::io("flushing", &disk.path))?;
    }

    if seed.is_none() {
        locked.count_guest_write();
        locked.save()?;
    }
    Ok(GuestWrite {
        vm: vm.to_owned(),
        blocks: writes.len() as u64,
        bytes,
        disks: disks
            .iter()
            .zip(per_disk)
            .map(|(d, blocks)| DiskWrite {
                disk: d.name.clone(),
                blocks,
            })
            .collect(),
        tracked,
    })
}
