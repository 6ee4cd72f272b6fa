//! Proving that a target holds the source's bytes.

use std::path::Path;

use super::{Digests, ImageDigest, SyncError, digest_blocks};

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
        Verification {
            equal: first_mismatch.is_none(),
            source_digest: source.root(),
            target_digest: target.root(),
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
