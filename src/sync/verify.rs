//! Proving that a target holds the source's bytes.

use std::path::Path;

use super::digest::{StaleBlocks, blocks_for};
use super::segment::{DigestsFile, SegmentedDigests, touched};
use super::{
    BlockDigest, ChangeMap, DecodeError, Digests, ImageDigest, SyncError, digest_blocks,
    image_digest,
};

/// The outcome of comparing a target with a source, block by block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// Same length and every block digest equal.
    pub equal: bool,
    /// The [`ImageDigest`] of the source (or of the digests verified against).
    pub source_digest: ImageDigest,
    /// The [`ImageDigest`] of the target.
    pub target_digest: ImageDigest,
    pub source_len: u64,
    pub target_len: u64,
    /// The first block that differs (a block only one side has counts).
    pub first_mismatch: Option<u64>,
}

impl Verification {
    fn compare(source: &Digests, target: &Digests) -> Self {
        let first_mismatch = source.first_mismatch(target);
        let source_digest = source.root();
        Verification {
            equal: first_mismatch.is_none(),
            source_digest,
            // Equal digests have equal roots: one hash of the list is enough.
            target_digest: match first_mismatch {
                None => source_digest,
                Some(_) => target.root(),
            },
            source_len: source.file_len(),
            target_len: target.file_len(),
            first_mismatch,
        }
    }
}

/// Compares `source` and `target` block by block.
///
/// Guarantees: reads both files completely, at the same time, hashing in
/// parallel; `equal` means same length and same [`block_digest`](super::block_digest)
/// for every block, that is byte-equal up to a BLAKE3-128 collision.
///
/// Assumptions: neither file is written meanwhile (the recovery VM is off).
///
/// Errors: either file cannot be opened or read.
pub fn verify_equal(source: &Path, target: &Path) -> Result<Verification, SyncError> {
    let (source, target) = rayon::join(|| digest_blocks(source), || digest_blocks(target));
    Ok(Verification::compare(&source?, &target?))
}

/// Compares `target` with the source described by `source` (phase 1's
/// digests brought up to date by [`refresh_digests`](super::refresh_digests)),
/// without reading the source.
///
/// Guarantees: reads the whole target; `equal` as in [`verify_equal`].
///
/// Assumptions: `source` describes the source as it is (see the
/// [module docs](super) for why phase 1 + change map digests do).
///
/// Errors: the target cannot be opened or read.
pub fn verify_against(target: &Path, source: &Digests) -> Result<Verification, SyncError> {
    let target = digest_blocks(target)?;
    Ok(Verification::compare(source, &target))
}

/// Compares `target` with the source described by `source`, reading only the
/// blocks of `changes` from the target: delta phase 2's verification, whose
/// cost grows with the changed bytes, not with the disk.
///
/// `target_before` describes the target before the blocks of `changes` were
/// written (phase 1's [`DeltaOutcome::source_digests`](super::DeltaOutcome),
/// which the target held when phase 1 returned). The target's digests now are
/// `target_before` with every block of `changes` (and, if its length changed,
/// every block from the old end on) hashed again from the target itself;
/// they are compared with `source` block by block.
///
/// Guarantees: reads only those blocks of the target; `equal` as in
/// [`verify_equal`]: every block of the target, changed or not, is compared.
///
/// Assumptions: nothing wrote the target outside `changes` since
/// `target_before` described it. Callers establish it with a
/// [`FileStamp`](super::FileStamp) taken when phase 1 returned and found
/// unchanged just before phase 2 wrote; see the [module docs](super) for the
/// whole argument. Without that evidence, use [`verify_against`].
///
/// Errors: the target cannot be opened or read.
pub fn verify_changes(
    target: &Path,
    target_before: &Digests,
    changes: &ChangeMap,
    source: &Digests,
) -> Result<Verification, SyncError> {
    let stale = StaleBlocks::hash(target, target_before.file_len(), changes)?;
    let same_len = stale.len == source.file_len() && stale.len == target_before.file_len();
    if same_len && equal_with(target_before.blocks(), &stale.runs, source.blocks()) {
        // Every block equal: no need to build the target's list.
        let digest = source.root();
        return Ok(Verification {
            equal: true,
            source_digest: digest,
            target_digest: digest,
            source_len: source.file_len(),
            target_len: stale.len,
            first_mismatch: None,
        });
    }
    let mut now = target_before.clone();
    stale.apply(&mut now);
    Ok(Verification::compare(source, &now))
}

/// Whether `before` with `runs` written over it equals `expected`, all three
/// of the same length, without building the combined list.
fn equal_with(
    before: &[BlockDigest],
    runs: &[(usize, Vec<BlockDigest>)],
    expected: &[BlockDigest],
) -> bool {
    let mut at = 0;
    for (first, blocks) in runs {
        let end = first + blocks.len();
        if end > expected.len()
            || before.get(at..*first) != expected.get(at..*first)
            || expected.get(*first..end) != Some(blocks.as_slice())
        {
            return false;
        }
        at = end;
    }
    before.get(at..) == expected.get(at..)
}

/// Delta phase 2 from phase 1's digests, reading only changed blocks: what
/// the source holds at shutdown, and the verification of the target against
/// it (steps 3 and 4 of the [module docs](super), with [`verify_changes`]).
///
/// Guarantees: [`PhaseTwo::new`] and [`PhaseTwo::from_file`] read only the
/// blocks of the change map from the source (a resize adds the blocks from
/// the old end on), and [`PhaseTwo::verify`] only those from the target;
/// `from_file` reads from the digests file only its segment digests and the
/// block digests of the segments those blocks fall in (`src/sync/segment.rs`),
/// so the work grows with the changed blocks, not with the disk.
///
/// Assumptions: those of [`verify_changes`]: the digests are what phase 1
/// returned, read after change tracking began; nothing wrote the target
/// outside `changes` since phase 1 returned.
#[derive(Debug)]
pub struct PhaseTwo {
    before: SegmentedDigests,
    changes: ChangeMap,
    source: StaleBlocks,
    source_digest: ImageDigest,
}

impl PhaseTwo {
    /// Hashes the changed blocks of `source`, once its VM is off, over
    /// phase 1's digests `before`.
    ///
    /// Errors: the source cannot be opened or read.
    pub fn new(source: &Path, before: Digests, changes: ChangeMap) -> Result<Self, SyncError> {
        let stale = StaleBlocks::hash(source, before.file_len(), &changes)?;
        let kept = SegmentedDigests::from_digests(&before, &touched(before.file_len(), &stale));
        PhaseTwo::with(source, kept, changes, stale)
    }

    /// [`PhaseTwo::new`] with phase 1's digests read in part from the file
    /// [`Digests::save`] wrote, checked against `recorded`, their image
    /// digest as phase 1 recorded it.
    ///
    /// Errors: the source cannot be read; the digests file cannot be read,
    /// or does not hold digests with image digest `recorded`.
    pub fn from_file(
        source: &Path,
        digests: &Path,
        recorded: ImageDigest,
        changes: ChangeMap,
    ) -> Result<Self, SyncError> {
        let file = DigestsFile::open(digests, recorded)?;
        let stale = StaleBlocks::hash(source, file.file_len(), &changes)?;
        let which = touched(file.file_len(), &stale);
        let kept = file.read(&which)?;
        PhaseTwo::with(source, kept, changes, stale)
    }

    fn with(
        path: &Path,
        before: SegmentedDigests,
        changes: ChangeMap,
        source: StaleBlocks,
    ) -> Result<Self, SyncError> {
        // Every segment `source` touches was kept, so this is always known.
        let source_digest = before
            .root_with(&source)
            .ok_or_else(|| SyncError::Corrupt {
                path: path.into(),
                what: "block digests",
                source: DecodeError::Digest,
            })?;
        Ok(PhaseTwo {
            before,
            changes,
            source,
            source_digest,
        })
    }

    /// The image digest of the source at shutdown.
    pub fn source_digest(&self) -> ImageDigest {
        self.source_digest
    }

    /// The blocks phase 2 copies.
    pub fn changes(&self) -> &ChangeMap {
        &self.changes
    }

    /// Compares the target with the source at shutdown, block by block, as
    /// [`verify_changes`] does.
    ///
    /// Errors: the target cannot be opened or read.
    pub fn verify(&self, target: &Path) -> Result<Verification, SyncError> {
        let found = StaleBlocks::hash(target, self.before.file_len(), &self.changes)?;
        let equal = |target_digest: ImageDigest, first_mismatch: Option<u64>| Verification {
            equal: first_mismatch.is_none(),
            source_digest: self.source_digest,
            target_digest,
            source_len: self.source.len,
            target_len: found.len,
            first_mismatch,
        };
        if found == self.source {
            // Outside the stale blocks both are phase 1's: equal everywhere.
            return Ok(equal(self.source_digest, None));
        }
        // They differ (a rare, failing case): say where, and the target's
        // digest, from the kept segments when they suffice.
        let first = self.before.first_difference(&self.source, &found);
        let first = first.or_else(|| {
            // Only the lengths differ: the first block one side lacks.
            Some(blocks_for(self.source.len.min(found.len)))
        });
        let target_digest = match self.before.root_with(&found) {
            Some(digest) => digest,
            None => image_digest(target)?,
        };
        Ok(equal(target_digest, first))
    }
}
