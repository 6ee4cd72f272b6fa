//! Tests of the sync engine, on real (sparse) files in temporary directories.
#![cfg(unix)]

use std::cell::RefCell;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::digest::hash_blocks;
use super::pipeline::{Extent, Run, block_runs, run_extents, whole_file};
use super::*;

const MIB: u64 = 1024 * 1024;
const B: u64 = BLOCK as u64;

/// Deterministic pseudo-random bytes (splitmix64).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        Lab {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, bytes).unwrap();
        path
    }
}

/// Overwrites block `block` of `path` with fresh noise.
fn scribble(path: &Path, block: u64, seed: u64) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&noise(BLOCK, seed), block * B).unwrap();
}

/// Byte-compares two files, a chunk at a time (no 64 MiB allocations).
fn assert_same(a: &Path, b: &Path) {
    let (a, b) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let len = a.metadata().unwrap().len();
    assert_eq!(len, b.metadata().unwrap().len(), "lengths differ");
    let (mut x, mut y) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    for offset in (0..len).step_by(CHUNK) {
        let n = (len - offset).min(CHUNK as u64) as usize;
        a.read_exact_at(&mut x[..n], offset).unwrap();
        b.read_exact_at(&mut y[..n], offset).unwrap();
        assert!(
            x[..n] == y[..n],
            "contents differ in [{offset}, {})",
            offset + n as u64
        );
    }
}

fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn delta_copies_exactly_the_differing_blocks() {
    let lab = Lab::new();
    let data = noise(4 * MIB as usize, 1);
    let source = lab.file("recovery.img", &data);
    let target = lab.file("primary.img", &data);
    // Scattered, adjacent, first, last, and across a chunk boundary.
    let changed = [0, 1, 2, 17, 255, 256, 257, 600, 1000, 1023];
    for (i, &block) in changed.iter().enumerate() {
        scribble(&target, block, 100 + i as u64);
    }

    let outcome = delta_sync(&source, &target, &SyncOptions::default()).unwrap();

    assert_eq!(outcome.stats.blocks_total, 1024);
    assert_eq!(outcome.stats.blocks_copied, changed.len() as u64);
    assert_eq!(outcome.stats.bytes_copied, changed.len() as u64 * B);
    assert_eq!(outcome.stats.bytes_read, 8 * MIB);
    assert_same(&source, &target);
    assert_eq!(outcome.source_digests, digest_blocks(&source).unwrap());

    let again = delta_sync(&source, &target, &SyncOptions::default()).unwrap();
    assert_eq!(
        again.stats.blocks_copied, 0,
        "a second run has nothing to do"
    );
}

#[test]
fn delta_creates_a_missing_target() {
    let lab = Lab::new();
    let source = lab.file("recovery.img", &noise(MIB as usize + 100, 2));
    let target = lab.path("primary.img");

    let stats = delta_sync(&source, &target, &SyncOptions::default())
        .unwrap()
        .stats;

    assert_eq!(stats.blocks_total, 257);
    assert_eq!(stats.blocks_copied, 257);
    assert_same(&source, &target);
}

#[test]
fn delta_extends_a_shorter_target() {
    let lab = Lab::new();
    let data = noise(2 * MIB as usize, 3);
    let source = lab.file("recovery.img", &data);
    // Ends 100 bytes into block 256: that block straddles the old end.
    let target = lab.file("primary.img", &data[..MIB as usize + 100]);

    let stats = delta_sync(&source, &target, &SyncOptions::default())
        .unwrap()
        .stats;

    assert_eq!(stats.blocks_copied, 512 - 256);
    assert_same(&source, &target);
}

#[test]
fn delta_truncates_a_longer_target() {
    let lab = Lab::new();
    let data = noise(MIB as usize, 4);
    let source = lab.file("recovery.img", &data);
    let mut longer = data.clone();
    longer.extend_from_slice(&noise(MIB as usize, 5));
    let target = lab.file("primary.img", &longer);

    let stats = delta_sync(&source, &target, &SyncOptions::default())
        .unwrap()
        .stats;

    assert_eq!(stats.blocks_copied, 0);
    assert_same(&source, &target);
}

#[test]
fn delta_handles_a_partial_last_block() {
    let lab = Lab::new();
    let data = noise(3 * BLOCK + 123, 6);
    let source = lab.file("recovery.img", &data);
    let mut other = data.clone();
    *other.last_mut().unwrap() ^= 0xFF;
    let target = lab.file("primary.img", &other);

    let stats = delta_sync(&source, &target, &SyncOptions::default())
        .unwrap()
        .stats;

    assert_eq!(
        (stats.blocks_total, stats.blocks_copied, stats.bytes_copied),
        (4, 1, 123)
    );
    assert_same(&source, &target);
}

#[test]
fn a_zero_length_source_empties_the_target() {
    let lab = Lab::new();
    let source = lab.file("recovery.img", &[]);
    let target = lab.file("primary.img", &noise(3 * BLOCK + 5, 60));

    let outcome = delta_sync(&source, &target, &SyncOptions::default()).unwrap();
    assert_eq!(outcome.stats, SyncStats::default());
    assert_eq!(outcome.source_digests.block_count(), 0);
    assert_eq!(outcome.source_digests, digest_blocks(&source).unwrap());
    assert_eq!(fs::metadata(&target).unwrap().len(), 0);

    let known = outcome.source_digests;
    let options = SyncOptions::new().with_known_target(&known);
    assert_eq!(
        delta_sync(&source, &target, &options)
            .unwrap()
            .source_digests,
        known
    );
    fs::write(&target, b"stale").unwrap();
    full_sync(&source, &target, &SyncOptions::default()).unwrap();
    assert_eq!(fs::metadata(&target).unwrap().len(), 0);
}

/// The source of phase 1 is a running VM's disk: a hypervisor may resize it
/// while it is read (Hyper-V shrinks a VHDX online). A shrink is an error
/// that names the source, never a crash, and a re-run completes; growth is
/// left to phase 2 (a resize is a write, in the change map).
#[test]
fn a_source_resized_during_phase_one_fails_cleanly_or_is_left_to_phase_two() {
    let lab = Lab::new();
    let len = 12 * MIB as usize + 123;
    let source = lab.file("recovery.img", &noise(len, 61));
    let target = lab.file("primary.img", &noise(len, 62));
    // In a one-thread pool the calling thread takes every extent in order,
    // and its progress callback runs after the 4th: 9 extents are left.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let err = pool
        .install(|| {
            let shrink = |_, _| {
                let file = OpenOptions::new().write(true).open(&source).unwrap();
                file.set_len(MIB + 7).unwrap();
            };
            delta_sync(&source, &target, &SyncOptions::new().with_progress(&shrink))
        })
        .unwrap_err();
    assert!(
        matches!(&err, SyncError::ShortRead { path, offset, .. }
            if path == &source && *offset == 4 * MIB),
        "{err}"
    );
    let outcome = delta_sync(&source, &target, &SyncOptions::default()).unwrap();
    assert_eq!(outcome.source_digests, digest_blocks(&source).unwrap());
    assert_same(&source, &target);

    // Growth: the sync copies the length it found when it opened the source.
    let source = lab.file("growing.img", &noise(len, 63));
    let outcome = pool
        .install(|| {
            let grow = |_, _| {
                let file = OpenOptions::new().write(true).open(&source).unwrap();
                file.write_all_at(&noise(5 * BLOCK, 64), len as u64)
                    .unwrap();
            };
            delta_sync(&source, &target, &SyncOptions::new().with_progress(&grow))
        })
        .unwrap();
    assert_eq!(outcome.source_digests.file_len(), len as u64);
    assert_eq!(fs::metadata(&target).unwrap().len(), len as u64);
    assert_eq!(
        fs::metadata(&source).unwrap().len(),
        (len + 5 * BLOCK) as u64
    );
    delta_sync(&source, &target, &SyncOptions::default()).unwrap();
    assert_same(&source, &target);
}

/// `hash_blocks` computes 16 blocks at a time through BLAKE3's SIMD
/// internals; every lane, a partial group, a partial block and nothing at
/// all give exactly `block_digest` of each block.
#[test]
fn hash_blocks_equals_block_digest() {
    let mut data = noise(40 * BLOCK + 100, 64);
    data[3 * BLOCK..4 * BLOCK].fill(0);
    for len in [
        0,
        1,
        BLOCK - 1,
        BLOCK,
        BLOCK + 1,
        15 * BLOCK,
        16 * BLOCK,
        16 * BLOCK + 1,
        17 * BLOCK + 77,
        33 * BLOCK,
        40 * BLOCK + 100,
    ] {
        let expected: Vec<BlockDigest> = data[..len].chunks(BLOCK).map(block_digest).collect();
        assert!(hash_blocks(&data[..len]) == expected, "length {len}");
    }
    // Known answer: BLAKE3 of 4 KiB of zeros, its first 16 bytes.
    assert_eq!(
        hash_blocks(&[0; BLOCK])[0][..],
        blake3::hash(&[0; BLOCK]).as_bytes()[..16]
    );
}

#[test]
fn delta_writes_zeros_over_data() {
    let lab = Lab::new();
    let mut data = noise(MIB as usize, 7);
    data[5 * BLOCK..7 * BLOCK].fill(0);
    let source = lab.file("recovery.img", &data);
    let target = lab.file("primary.img", &noise(MIB as usize, 7));

    let stats = delta_sync(&source, &target, &SyncOptions::default())
        .unwrap()
        .stats;

    assert_eq!(stats.blocks_copied, 2);
    assert_same(&source, &target);
}

/// A 64 MiB image holding 16 blocks of data.
fn sparse_image(lab: &Lab, name: &str) -> PathBuf {
    let path = lab.path(name);
    let file = fs::File::create(&path).unwrap();
    file.set_len(64 * MIB).unwrap();
    for i in 0..16u64 {
        file.write_all_at(&noise(BLOCK, i), i * 4 * MIB + 8 * B)
            .unwrap();
    }
    path
}

#[test]
fn sparse_images_stay_sparse() {
    let lab = Lab::new();
    let source = sparse_image(&lab, "recovery.img");
    let limit = MIB; // 16 data blocks are 64 KiB; allow filesystem metadata.
    assert!(
        allocated(&source) < limit,
        "the test filesystem must support sparse files"
    );

    let delta_target = lab.path("delta.img");
    let stats = delta_sync(&source, &delta_target, &SyncOptions::default())
        .unwrap()
        .stats;
    assert_eq!(stats.blocks_copied, 16, "holes over holes are not written");
    assert_same(&source, &delta_target);
    assert!(
        allocated(&delta_target) < limit,
        "delta target: {}",
        allocated(&delta_target)
    );

    scribble(&source, 3, 99);
    let stats = delta_sync(&source, &delta_target, &SyncOptions::default())
        .unwrap()
        .stats;
    assert_eq!(stats.blocks_copied, 1);
    assert!(allocated(&delta_target) < limit);

    let full_target = lab.file("full.img", &noise(MIB as usize, 8));
    let stats = full_sync(&source, &full_target, &SyncOptions::default()).unwrap();
    assert_eq!(stats.blocks_copied, 17);
    assert_same(&source, &full_target);
    assert!(
        allocated(&full_target) < limit,
        "full target: {}",
        allocated(&full_target)
    );
}

#[test]
fn known_target_digests_spare_the_target_read() {
    let lab = Lab::new();
    let data = noise(MIB as usize, 9);
    let source = lab.file("recovery.img", &data);
    let target = lab.file("primary.img", &data);
    let known = digest_blocks(&target).unwrap();
    scribble(&source, 42, 10);

    let options = SyncOptions::new().with_known_target(&known);
    let stats = delta_sync(&source, &target, &options).unwrap().stats;
    assert_eq!((stats.bytes_read, stats.blocks_copied), (MIB, 1));
    assert_same(&source, &target);

    // Digests of another length are stale: the target is read instead.
    let stale = digest_blocks(&lab.file("other.img", &data[..BLOCK])).unwrap();
    let options = SyncOptions::new().with_known_target(&stale);
    let stats = delta_sync(&source, &target, &options).unwrap().stats;
    assert_eq!((stats.bytes_read, stats.blocks_copied), (2 * MIB, 0));
}

#[test]
fn change_map_round_trips() {
    let lab = Lab::new();
    let mut map = ChangeMap::new();
    assert!(map.is_empty());
    map.mark(3);
    map.mark(64);
    map.mark(1000);
    map.mark_bytes(2 * B - 1, 2); // blocks 1 and 2
    map.mark_range(120..130);
    map.mark_bytes(0, 0); // nothing
    let expected: Vec<u64> = [1, 2, 3, 64]
        .into_iter()
        .chain(120..130)
        .chain([1000])
        .collect();
    assert_eq!(map.iter().collect::<Vec<_>>(), expected);
    assert_eq!(map.count(), expected.len() as u64);
    assert!(map.contains(1000) && !map.contains(999) && !map.contains(u64::MAX));
    assert_eq!(map, expected.iter().copied().collect::<ChangeMap>());

    let decoded = ChangeMap::from_bytes(&map.to_bytes()).unwrap();
    assert_eq!(decoded, map);
    let path = lab.path("disk0.img.changes");
    map.save(&path).unwrap();
    assert_eq!(ChangeMap::load(&path).unwrap(), map);
    let leftovers: Vec<_> = fs::read_dir(lab.dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");

    let mut other = ChangeMap::new();
    other.mark(5000);
    map.merge(&other);
    assert!(map.contains(5000) && map.contains(3));

    // A larger capacity with the same bits is the same map.
    let mut wide = ChangeMap::new();
    wide.mark(10_000);
    let mut narrow = wide.clone();
    narrow.merge(&ChangeMap::new());
    assert_eq!(wide, narrow);
}

#[test]
fn change_map_refuses_damaged_or_missing_files() {
    let lab = Lab::new();
    let bytes = [7u64, 900].into_iter().collect::<ChangeMap>().to_bytes();

    let mut flipped = bytes.clone();
    flipped[25] ^= 1;
    assert_eq!(ChangeMap::from_bytes(&flipped), Err(DecodeError::Checksum));
    assert!(matches!(
        ChangeMap::from_bytes(&bytes[..bytes.len() - 1]),
        Err(DecodeError::Checksum | DecodeError::TooShort(_))
    ));
    assert_eq!(
        ChangeMap::from_bytes(b"short"),
        Err(DecodeError::TooShort(5))
    );
    let digests = digest_blocks(&lab.file("x.img", &[1, 2, 3])).unwrap();
    assert_eq!(
        ChangeMap::from_bytes(&digests.to_bytes()),
        Err(DecodeError::BadMagic)
    );

    let path = lab.file("disk0.img.changes", &flipped);
    let err = ChangeMap::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("disk0.img.changes is not a valid change map file"),
        "{err}"
    );

    let missing = lab.path("never-started.changes");
    let err = ChangeMap::load(&missing).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("opening {}: ", missing.display())),
        "{err}"
    );
}

#[test]
fn digests_round_trip_and_root_is_stable() {
    let lab = Lab::new();
    let path = lab.file("disk.img", &noise(3 * BLOCK + 5, 11));
    let digests = digest_blocks(&path).unwrap();
    assert_eq!(digests.block_count(), 4);
    assert_eq!(digests.file_len(), 3 * B + 5);

    let saved = lab.path("disk.digests");
    digests.save(&saved).unwrap();
    assert_eq!(Digests::load(&saved).unwrap(), digests);

    let root = image_digest(&path).unwrap();
    assert_eq!(root, digests.root());
    assert_eq!(root.to_string().parse::<ImageDigest>().unwrap(), root);
    assert!("nope".parse::<ImageDigest>().is_err());

    // The root commits to the length: an empty file and a lone zero differ.
    let empty = image_digest(&lab.file("empty.img", &[])).unwrap();
    let zero = image_digest(&lab.file("zero.img", &[0])).unwrap();
    assert_ne!(empty, zero);
}

#[test]
fn verify_reports_the_block_of_a_single_byte_difference() {
    let lab = Lab::new();
    let data = noise(2 * MIB as usize, 12);
    let source = lab.file("recovery.img", &data);
    let target = lab.file("primary.img", &data);

    let same = verify_equal(&source, &target).unwrap();
    assert!(same.equal);
    assert_eq!(same.first_mismatch, None);
    assert_eq!(same.source_digest, image_digest(&source).unwrap());
    assert_eq!(same.source_digest, same.target_digest);

    let mut one_off = data.clone();
    one_off[300 * BLOCK + 17] ^= 0x01;
    fs::write(&target, &one_off).unwrap();
    let differs = verify_equal(&source, &target).unwrap();
    assert!(!differs.equal);
    assert_eq!(differs.first_mismatch, Some(300));
    assert_ne!(differs.source_digest, differs.target_digest);
    assert_eq!(differs.source_digest, same.source_digest);

    let against = verify_against(&target, &digest_blocks(&source).unwrap()).unwrap();
    assert_eq!(against, differs);

    fs::write(&target, &data[..MIB as usize]).unwrap();
    let shorter = verify_equal(&source, &target).unwrap();
    assert_eq!((shorter.equal, shorter.first_mismatch), (false, Some(256)));
}

#[test]
fn phase_two_copies_the_change_map_and_verifies_against_updated_digests() {
    let lab = Lab::new();
    let source = lab.file("recovery.img", &noise(2 * MIB as usize, 13));
    let target = lab.file("primary.img", &noise(2 * MIB as usize, 14));
    let changes_path = lab.path("recovery.img.changes");
    ChangeMap::new().save(&changes_path).unwrap();

    let phase1 = delta_sync(&source, &target, &SyncOptions::default()).unwrap();
    let mut digests = phase1.source_digests;

    // The guest keeps writing; the lab marks and persists each write.
    let mut changes = ChangeMap::load(&changes_path).unwrap();
    for (i, block) in [9u64, 10, 300, 511].into_iter().enumerate() {
        changes.mark(block);
        changes.save(&changes_path).unwrap();
        scribble(&source, block, 200 + i as u64);
    }
    let stale = verify_against(&target, &digests).unwrap();
    assert!(
        stale.equal,
        "stale digests still describe the phase-1 target"
    );

    // Phase 2: the VM is off.
    let changes = ChangeMap::load(&changes_path).unwrap();
    let stats = copy_blocks(&source, &target, &changes, &SyncOptions::default()).unwrap();
    assert_eq!((stats.blocks_copied, stats.bytes_read), (4, 4 * B));
    refresh_digests(&source, &mut digests, &changes).unwrap();

    let verified = verify_against(&target, &digests).unwrap();
    assert!(verified.equal);
    assert_eq!(verified.source_digest, image_digest(&source).unwrap());
    assert_same(&source, &target);
}

#[test]
fn verify_against_stale_digests_finds_the_missed_block() {
    let lab = Lab::new();
    let source = lab.file("recovery.img", &noise(MIB as usize, 15));
    let target = lab.path("primary.img");
    let mut digests = delta_sync(&source, &target, &SyncOptions::default())
        .unwrap()
        .source_digests;

    // A write the change map missed (recording started too late).
    scribble(&source, 77, 16);
    let mut changes = ChangeMap::new();
    changes.mark(5);
    scribble(&source, 5, 17);
    copy_blocks(&source, &target, &changes, &SyncOptions::default()).unwrap();
    refresh_digests(&source, &mut digests, &changes).unwrap();

    // The digests and the target agree (both miss block 77)...
    assert!(verify_against(&target, &digests).unwrap().equal);
    // ...which is why the map must start before phase 1: the source says no.
    let truth = verify_equal(&source, &target).unwrap();
    assert_eq!(truth.first_mismatch, Some(77));
}

#[test]
fn refresh_follows_a_resized_source() {
    let lab = Lab::new();
    let data = noise(MIB as usize, 18);
    let source = lab.file("recovery.img", &data);
    let mut digests = digest_blocks(&source).unwrap();
    let mut grown = data.clone();
    grown.extend_from_slice(&noise(10_000, 19));
    fs::write(&source, &grown).unwrap();
    refresh_digests(&source, &mut digests, &ChangeMap::new()).unwrap();
    assert_eq!(digests, digest_blocks(&source).unwrap());

    fs::write(&source, &data[..5000]).unwrap();
    refresh_digests(&source, &mut digests, &ChangeMap::new()).unwrap();
    assert_eq!(digests, digest_blocks(&source).unwrap());
}

#[test]
fn an_interrupted_delta_completes_when_run_again() {
    let lab = Lab::new();
    let data = noise(4 * MIB as usize, 20);
    let source = lab.file("recovery.img", &data);
    let target = lab.path("primary.img");
    let fault_at = 3 * MIB / 2 + 100; // rounds down to block 384

    let options = SyncOptions::new().with_fault(FaultPlan::fail_at(fault_at));
    let err = delta_sync(&source, &target, &options).unwrap_err();
    assert!(
        matches!(err, SyncError::InjectedFault { offset, .. } if offset == 384 * B),
        "{err}"
    );
    assert!(
        err.to_string().contains("stopped at offset 1572864"),
        "{err}"
    );
    let partial = fs::read(&target).unwrap();
    assert_eq!(partial.len(), data.len(), "resized before copying");
    assert!(
        partial[..384 * BLOCK] == data[..384 * BLOCK],
        "everything below the fault is copied"
    );
    assert!(
        partial[384 * BLOCK..].iter().all(|&b| b == 0),
        "nothing at or after it"
    );

    let stats = delta_sync(&source, &target, &SyncOptions::default())
        .unwrap()
        .stats;
    assert_eq!(stats.blocks_copied, 1024 - 384);
    assert_same(&source, &target);
}

#[test]
fn an_interrupted_phase_two_completes_when_run_again() {
    let lab = Lab::new();
    let source = lab.file("recovery.img", &noise(MIB as usize, 21));
    let target = lab.path("primary.img");
    delta_sync(&source, &target, &SyncOptions::default()).unwrap();
    let changes: ChangeMap = (0..256).step_by(3).collect();
    for block in changes.iter() {
        scribble(&source, block, 1000 + block);
    }

    let options = SyncOptions::new().with_fault(FaultPlan::fail_at(100 * B));
    assert!(copy_blocks(&source, &target, &changes, &options).is_err());
    assert_eq!(
        verify_equal(&source, &target).unwrap().first_mismatch,
        Some(102)
    );

    copy_blocks(&source, &target, &changes, &SyncOptions::default()).unwrap();
    assert_same(&source, &target);
}

#[test]
fn full_sync_copies_everything_and_survives_an_interruption() {
    let lab = Lab::new();
    let mut data = noise(3 * MIB as usize + 77, 22);
    data[BLOCK..3 * BLOCK].fill(0);
    let source = lab.file("recovery.img", &data);
    let target = lab.file("primary.img", &noise(5 * MIB as usize, 23));

    let options = SyncOptions::new().with_fault(FaultPlan::fail_at(MIB));
    let err = full_sync(&source, &target, &options).unwrap_err();
    assert!(matches!(err, SyncError::InjectedFault { .. }));

    let stats = full_sync(&source, &target, &SyncOptions::default()).unwrap();
    assert_eq!(stats.blocks_total, 3 * 256 + 1);
    assert_eq!(
        stats.blocks_copied,
        3 * 256 + 1 - 2,
        "zero blocks stay holes"
    );
    assert_eq!(stats.bytes_read, data.len() as u64);
    assert_same(&source, &target);
    assert!(verify_equal(&source, &target).unwrap().equal);
}

#[test]
fn a_full_disk_during_a_sync_names_the_target_and_the_offset_and_a_rerun_completes() {
    let lab = Lab::new();
    let data = noise(3 * MIB as usize, 24);
    let source = lab.file("recovery.img", &data);
    let target = lab.path("primary.img");
    let at = 2 * MIB + 5 * B + 10;
    let changes: ChangeMap = (0..768).collect();
    type Sync = fn(&Path, &Path, &ChangeMap, &SyncOptions) -> Result<(), SyncError>;
    let syncs: [(&str, Sync); 3] = [
        ("delta", |s, t, _, o| delta_sync(s, t, o).map(|_| ())),
        ("full", |s, t, _, o| full_sync(s, t, o).map(|_| ())),
        ("changes", |s, t, c, o| copy_blocks(s, t, c, o).map(|_| ())),
    ];
    for (what, sync) in syncs {
        let _ = fs::remove_file(&target);
        let options = SyncOptions::new().with_fault(FaultPlan::enospc_at(at));
        let err = sync(&source, &target, &changes, &options).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, SyncError::Write { path, offset, source }
                if path == &target && *offset <= at
                    && source.kind() == std::io::ErrorKind::StorageFull),
            "{what}: {text}"
        );
        assert!(
            text.contains(&target.display().to_string()),
            "{what}: {text}"
        );
        assert!(text.contains("no space left on device"), "{what}: {text}");
        let partial = fs::read(&target).unwrap();
        assert!(
            partial[..2 * MIB as usize] == data[..2 * MIB as usize],
            "{what}: the extents below the full offset are written"
        );
        sync(&source, &target, &changes, &SyncOptions::default()).unwrap();
        assert_same(&source, &target);
    }
}

#[test]
fn a_failed_fsync_fails_the_sync_and_a_rerun_reopens_and_completes() {
    let lab = Lab::new();
    let data = noise(MIB as usize + 3, 25);
    let source = lab.file("recovery.img", &data);
    let target = lab.path("primary.img");
    let options = SyncOptions::new().with_fault(FaultPlan::eio_on_fsync());
    for (what, run) in [
        ("delta", delta_sync(&source, &target, &options).map(|_| ())),
        ("full", full_sync(&source, &target, &options).map(|_| ())),
    ] {
        let err = run.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, SyncError::Flush { path, .. } if path == &target),
            "{what}: {text}"
        );
        assert!(
            text.contains(&target.display().to_string()),
            "{what}: {text}"
        );
        assert!(
            text.contains("input/output error on fsync"),
            "{what}: {text}"
        );
    }
    delta_sync(&source, &target, &SyncOptions::default()).unwrap();
    assert_same(&source, &target);
}

#[test]
fn syncing_a_file_onto_itself_is_refused() {
    let lab = Lab::new();
    let data = noise(MIB as usize, 24);
    let disk = lab.file("disk.img", &data);
    let alias = lab.path("alias.img");
    fs::hard_link(&disk, &alias).unwrap();

    let err = full_sync(&disk, &alias, &SyncOptions::default()).unwrap_err();
    assert!(matches!(err, SyncError::SameFile { .. }), "{err}");
    assert!(delta_sync(&disk, &disk, &SyncOptions::default()).is_err());
    assert!(copy_blocks(&disk, &disk, &ChangeMap::new(), &SyncOptions::default()).is_err());
    assert_eq!(fs::read(&disk).unwrap(), data, "the disk is untouched");
}

#[test]
fn errors_name_the_file_and_the_cause() {
    let lab = Lab::new();
    let missing = lab.path("missing.img");
    let err = delta_sync(&missing, &lab.path("t.img"), &SyncOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "opening {}: No such file or directory (os error 2)",
            missing.display()
        )
    );

    let err = digest_blocks(lab.dir.path()).unwrap_err();
    assert!(matches!(err, SyncError::NotAFile { .. }), "{err}");

    let source = lab.file("s.img", &[1; 10]);
    let no_dir = lab.path("nowhere/t.img");
    let err = full_sync(&source, &no_dir, &SyncOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("opening {}: ", no_dir.display())),
        "{err}"
    );
}

#[test]
fn progress_is_monotonic_throttled_and_complete() {
    let lab = Lab::new();
    let len = 10 * MIB + 5;
    let source = lab.file("recovery.img", &noise(len as usize, 25));
    let target = lab.path("primary.img");
    let calls = RefCell::new(Vec::new());
    let record = |done, total| calls.borrow_mut().push((done, total));

    let options = SyncOptions::new().with_progress(&record);
    delta_sync(&source, &target, &options).unwrap();

    let calls = calls.into_inner();
    assert_eq!(calls.last(), Some(&(len, len)));
    assert!(calls.windows(2).all(|w| w[0].0 < w[1].0), "{calls:?}");
    assert!(calls.iter().all(|&(_, total)| total == len));
    assert!(calls.len() as u64 <= len / PROGRESS_STEP + 2, "{calls:?}");
}

#[test]
fn a_running_guest_during_phase_one_is_caught_by_the_change_map() {
    let lab = Lab::new();
    let source = lab.file("recovery.img", &noise(4 * MIB as usize, 26));
    let target = lab.file("primary.img", &noise(4 * MIB as usize, 27));
    // Recording starts before phase 1 reads anything.
    let changes = Mutex::new(ChangeMap::new());
    let stop = AtomicBool::new(false);

    let phase1 = std::thread::scope(|scope| {
        scope.spawn(|| {
            let file = OpenOptions::new().write(true).open(&source).unwrap();
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) || round < 64 {
                let block = (round * 97) % 1024;
                changes.lock().unwrap().mark(block);
                file.write_all_at(&noise(BLOCK, 3000 + round), block * B)
                    .unwrap();
                round += 1;
            }
        });
        let outcome = delta_sync(&source, &target, &SyncOptions::default());
        stop.store(true, Ordering::Relaxed);
        outcome
    });
    let before = phase1.unwrap().source_digests;
    let stamp = FileStamp::of(&target).unwrap();

    // The guest is off: phase 2.
    let changes = changes.into_inner().unwrap();
    assert!(stamp.is_current(&target), "nothing wrote the target since");
    copy_blocks(&source, &target, &changes, &SyncOptions::default()).unwrap();
    assert!(!stamp.is_current(&target), "phase 2 moved the stamp");
    let mut digests = before.clone();
    refresh_digests(&source, &mut digests, &changes).unwrap();
    let whole = verify_against(&target, &digests).unwrap();
    assert!(whole.equal);
    assert_eq!(
        verify_changes(&target, &before, &changes, &digests).unwrap(),
        whole
    );
    assert_same(&source, &target);
}

/// `verify_changes` reads back the changed blocks from the target: a
/// changed block that phase 2 did not copy, or copied wrong, is a mismatch
/// at that block, and a resize is seen too.
#[test]
fn verifying_by_the_changed_blocks_finds_a_block_not_sent() {
    let lab = Lab::new();
    let source = lab.file("recovery.img", &noise(2 * MIB as usize, 40));
    let target = lab.file("primary.img", &[]);
    let before = delta_sync(&source, &target, &SyncOptions::default())
        .unwrap()
        .source_digests;

    let file = OpenOptions::new().write(true).open(&source).unwrap();
    let mut changes = ChangeMap::new();
    for block in [3u64, 4, 200, 511] {
        changes.mark(block);
        file.write_all_at(&noise(BLOCK, 500 + block), block * B)
            .unwrap();
    }
    // The disk grew by a block and a half.
    file.set_len(2 * MIB + B + B / 2).unwrap();
    changes.mark_bytes(2 * MIB, B + B / 2);
    drop(file);
    let mut expected = before.clone();
    refresh_digests(&source, &mut expected, &changes).unwrap();
    let phase2 = PhaseTwo::new(&source, before.clone(), changes.clone()).unwrap();
    assert_eq!(phase2.source_digest(), image_digest(&source).unwrap());
    assert_eq!(phase2.source_digest(), expected.root());

    // Nothing sent yet: the first changed block differs.
    let v = verify_changes(&target, &before, &changes, &expected).unwrap();
    assert!(!v.equal);
    assert_eq!(v.first_mismatch, Some(3));
    assert_eq!(phase2.verify(&target).unwrap(), v);

    // All sent but one block, overwritten with wrong bytes.
    copy_blocks(&source, &target, &changes, &SyncOptions::default()).unwrap();
    let file = OpenOptions::new().write(true).open(&target).unwrap();
    file.write_all_at(&[0u8; 16], 200 * B + 7).unwrap();
    drop(file);
    let v = verify_changes(&target, &before, &changes, &expected).unwrap();
    assert_eq!((v.equal, v.first_mismatch), (false, Some(200)));
    assert_eq!(v, verify_against(&target, &expected).unwrap());
    assert_eq!(phase2.verify(&target).unwrap(), v);

    copy_blocks(&source, &target, &changes, &SyncOptions::default()).unwrap();
    let v = verify_changes(&target, &before, &changes, &expected).unwrap();
    assert!(v.equal && v.target_len == 2 * MIB + B + B / 2, "{v:?}");
    assert_eq!(v.target_digest, image_digest(&source).unwrap());
    assert_eq!(phase2.verify(&target).unwrap(), v);
    assert_same(&source, &target);
}

/// The same length before and after: the source's image digest is streamed
/// over phase 1's list with the changed blocks in place, and equals a full
/// hash of the source.
#[test]
fn phase_two_without_a_resize_matches_full_hashes() {
    let lab = Lab::new();
    let source = lab.file("recovery.img", &noise(3 * MIB as usize, 42));
    let target = lab.file("primary.img", &noise(MIB as usize, 43));
    let before = delta_sync(&source, &target, &SyncOptions::default())
        .unwrap()
        .source_digests;
    let file = OpenOptions::new().write(true).open(&source).unwrap();
    let mut changes = ChangeMap::new();
    for block in [0u64, 1, 2, 77, 767] {
        changes.mark(block);
        file.write_all_at(&noise(BLOCK, 900 + block), block * B)
            .unwrap();
    }
    drop(file);
    let phase2 = PhaseTwo::new(&source, before.clone(), changes.clone()).unwrap();
    assert_eq!(phase2.source_digest(), image_digest(&source).unwrap());
    let v = phase2.verify(&target).unwrap();
    assert_eq!((v.equal, v.first_mismatch), (false, Some(0)));
    copy_blocks(&source, &target, phase2.changes(), &SyncOptions::default()).unwrap();
    let v = phase2.verify(&target).unwrap();
    assert!(v.equal, "{v:?}");
    assert_eq!(v, verify_equal(&source, &target).unwrap());
}

#[test]
fn a_stamp_moves_with_any_write_and_names_the_file() {
    let lab = Lab::new();
    let path = lab.file("disk.img", &noise(64 * 1024, 41));
    let stamp = FileStamp::of(&path).unwrap();
    assert!(stamp.is_current(&path));
    assert_eq!(stamp.len, 64 * 1024);
    // A one-byte write, once the stamp has settled: the write falls in a
    // later clock tick, whatever the kernel's timestamp granularity.
    let stamp = FileStamp::settled(&path).unwrap();
    assert_eq!(stamp, FileStamp::of(&path).unwrap());
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(b"x", 100).unwrap();
    drop(file);
    assert!(!stamp.is_current(&path), "a write left the stamp unchanged");
    // Another file with the same bytes is another file.
    let copy = lab.file("copy.img", &fs::read(&path).unwrap());
    let now = FileStamp::of(&path).unwrap();
    assert_ne!(FileStamp::of(&copy).unwrap().ino, now.ino);
    assert!(!FileStamp { len: 1, ..now }.is_current(&path));
    assert!(!now.is_current(&lab.path("missing.img")));
}

#[test]
fn extents_cover_files_and_block_runs() {
    assert_eq!(whole_file(0), vec![]);
    let extents = whole_file(2 * MIB + 1);
    assert_eq!(extents.len(), 3);
    assert_eq!(
        extents[2],
        Extent {
            offset: 2 * MIB,
            len: 1
        }
    );

    let runs = block_runs([0, 1, 2, 5, 300, 301], 301 * B + 10);
    assert_eq!(
        runs,
        vec![
            Extent {
                offset: 0,
                len: 3 * BLOCK
            },
            Extent {
                offset: 5 * B,
                len: BLOCK
            },
            Extent {
                offset: 300 * B,
                len: BLOCK + 10
            },
        ]
    );
    // Runs are cut at CHUNK bytes; blocks past the end are dropped.
    let runs = block_runs(0..300, 270 * B);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].len, CHUNK);
    assert_eq!(
        runs[1],
        Extent {
            offset: 256 * B,
            len: 14 * BLOCK
        }
    );
}

// ------------------------------------------------------------ segments

/// What [`StaleBlocks::hash`] returns for a file that went from `old_len`
/// to `new_len` bytes with blocks `changed` written: made-up digests.
fn stale_of(
    old_len: u64,
    new_len: u64,
    changed: &std::collections::BTreeSet<u64>,
    seed: u64,
) -> digest::StaleBlocks {
    let count = new_len.div_ceil(B);
    let mut blocks: std::collections::BTreeSet<u64> =
        changed.iter().copied().filter(|&b| b < count).collect();
    if new_len != old_len {
        blocks.extend(old_len.min(new_len) / B..count);
    }
    let mut runs: Vec<(usize, Vec<BlockDigest>)> = Vec::new();
    for b in blocks {
        let digest = block_digest(&noise(16, seed ^ b));
        match runs.last_mut() {
            Some((first, list)) if *first + list.len() == b as usize => list.push(digest),
            _ => runs.push((b as usize, vec![digest])),
        }
    }
    digest::StaleBlocks { len: new_len, runs }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// The image digest updated from the touched segments alone equals the
    /// one of the whole list brought up to date, for any changes and any
    /// resize (across segment boundaries too).
    #[test]
    fn segment_updates_give_the_whole_list_root(
        old_len in 0u64..(6 * 256 * B),
        new_len in 0u64..(6 * 256 * B),
        resize in proptest::bool::ANY,
        changed in proptest::collection::btree_set(0u64..1600, 0..40),
        seed in proptest::num::u64::ANY,
    ) {
        let new_len = if resize { new_len } else { old_len };
        let count = old_len.div_ceil(B) as usize;
        let before = Digests::from_parts(
            old_len,
            (0..count).map(|b| block_digest(&noise(8, seed.wrapping_add(b as u64)))).collect(),
        );
        let stale = stale_of(old_len, new_len, &changed, seed);
        let mut whole = before.clone();
        stale.clone().apply(&mut whole);
        let kept = segment::SegmentedDigests::from_digests(
            &before,
            &segment::touched(old_len, &stale),
        );
        proptest::prop_assert_eq!(kept.root_with(&stale), Some(whole.root()));
    }
}

/// Phase 2 from the digests file reads only the segments its changes fall
/// in: the others may hold garbage and it still finds the right digest;
/// a damaged touched segment, or digests of another image, are refused.
#[test]
fn phase_two_from_the_file_reads_only_the_segments_it_needs() {
    let lab = Lab::new();
    let seg = (segment::SEGMENT_BLOCKS as u64) * B; // 1 MiB of disk
    let source = lab.file("recovery.img", &noise((5 * seg) as usize, 61));
    let target = lab.file("primary.img", &noise(MIB as usize, 62));
    let before = delta_sync(&source, &target, &SyncOptions::default())
        .unwrap()
        .source_digests;
    let digests = lab.path("primary.digests");
    before.save(&digests).unwrap();
    let recorded = before.root();

    // Changes in segments 0 and 4.
    let mut changes = ChangeMap::new();
    for block in [5u64, 4 * 256 + 9] {
        changes.mark(block);
        scribble(&source, block, 70 + block);
    }
    // Garbage in the block digests of segment 2, which no change touches
    // (header, 5 segment digests, then 16 bytes per block).
    let file = OpenOptions::new().write(true).open(&digests).unwrap();
    let blocks_at = 36 + 5 * 32;
    file.write_all_at(&[0xAB; 64], blocks_at + 2 * 256 * 16 + 100)
        .unwrap();
    drop(file);
    assert!(
        Digests::load(&digests).is_err(),
        "the whole file is damaged"
    );

    let phase2 = PhaseTwo::from_file(&source, &digests, recorded, changes.clone()).unwrap();
    assert_eq!(phase2.source_digest(), image_digest(&source).unwrap());
    copy_blocks(&source, &target, &changes, &SyncOptions::default()).unwrap();
    assert!(phase2.verify(&target).unwrap().equal);
    assert_same(&source, &target);

    // Digests of another image: refused before any block digest is used.
    let other = image_digest(&target).unwrap();
    let e = PhaseTwo::from_file(&source, &digests, block_root_other(other), changes.clone())
        .unwrap_err();
    assert!(
        e.to_string().contains("do not match the image digest"),
        "{e}"
    );

    // A touched segment damaged: refused.
    let file = OpenOptions::new().write(true).open(&digests).unwrap();
    file.write_all_at(&[0xCD; 16], blocks_at + 5 * 16).unwrap();
    drop(file);
    let e = PhaseTwo::from_file(&source, &digests, recorded, changes).unwrap_err();
    assert!(
        e.to_string().contains("do not match the image digest")
            && e.to_string().contains(&digests.display().to_string()),
        "{e}"
    );
}

/// An image digest that is not the one recorded.
fn block_root_other(digest: ImageDigest) -> ImageDigest {
    let mut bytes = *digest.as_bytes();
    bytes[0] ^= 1;
    ImageDigest(bytes)
}

/// Workers take extents as they finish: results come back in extent order,
/// the first failing extent's error is returned and every extent before it
/// was processed; a one-thread pool (the caller a rayon worker) does not
/// deadlock.
#[test]
fn run_extents_keeps_order_and_stops_at_the_first_error() {
    let path = Path::new("disk.img");
    let extents = whole_file(40 * MIB + 3);
    let seen = &Mutex::new(Vec::new());
    let results = run_extents(&extents, &Run::quiet(path), |extent, buf| {
        assert_eq!(buf.len(), extent.len);
        Ok(extent.offset)
    })
    .unwrap();
    assert_eq!(
        results,
        extents.iter().map(|e| e.offset).collect::<Vec<_>>()
    );

    let fail = |at: u64| {
        move |extent: Extent, _: &mut [u8]| {
            seen.lock().unwrap().push(extent.offset);
            if extent.offset >= at {
                Err(SyncError::InjectedFault {
                    path: path.into(),
                    offset: extent.offset,
                })
            } else {
                Ok(())
            }
        }
    };
    let err = run_extents(&extents, &Run::quiet(path), fail(17 * MIB)).unwrap_err();
    assert!(
        matches!(err, SyncError::InjectedFault { offset, .. } if offset == 17 * MIB),
        "{err}"
    );
    let seen = seen.lock().unwrap().clone();
    assert!((0..17).all(|i| seen.contains(&(i * MIB))), "{seen:?}");
    assert!(
        seen.len() < extents.len(),
        "no extent taken after the error"
    );

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let results = pool
        .install(|| run_extents(&extents, &Run::quiet(path), |e, _| Ok(e.len)))
        .unwrap();
    assert_eq!(results.len(), extents.len());
}
