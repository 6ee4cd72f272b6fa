//! The first level of the image digest: segments of [`SEGMENT_BLOCKS`] block
//! digests, each hashed on its own, and the image digest over those segment
//! digests. Phase 2 reads from a digests file only the segments its changed
//! blocks fall in, checks them against the image digest phase 1 recorded,
//! and computes the shutdown digest from them: its cost grows with the
//! changed blocks, not with the disk.
//!
//! A 4 GiB disk has 1,048,576 block digests (16 MiB) in 4,096 segments
//! (128 KiB of segment digests); 1 MiB of random changes touches at most
//! 256 segments (1 MiB of block digests).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use super::digest::{
    ALGORITHM_NAME, BlockDigest, DIGESTS_HEADER, Digests, ImageDigest, StaleBlocks, blocks_for,
    parse_header,
};
use super::os::{open_with_len, read_exact_at};
use super::persist::CHECKSUM_LEN;
use super::{BLOCK, DecodeError, SyncError};

/// Block digests per segment.
pub const SEGMENT_BLOCKS: usize = 256;

/// The digest of a segment: BLAKE3, 32 bytes.
pub type SegmentDigest = [u8; 32];

/// Number of segments of a file of `blocks` blocks.
pub(crate) fn segments_for(blocks: u64) -> u64 {
    blocks.div_ceil(SEGMENT_BLOCKS as u64)
}

/// The digest of one segment's block digests (the last segment may hold
/// fewer): BLAKE3 keyed by a context naming the format, so that it can
/// never equal a hash made for another purpose.
pub(crate) fn segment_digest(blocks: &[BlockDigest]) -> SegmentDigest {
    static KEY: LazyLock<[u8; 32]> = LazyLock::new(|| {
        blake3::derive_key(
            &format!(
                "failback sync segment digest v1 {ALGORITHM_NAME} blocks of {BLOCK}, \
                 {SEGMENT_BLOCKS} per segment"
            ),
            &[],
        )
    });
    *blake3::keyed_hash(&KEY, blocks.as_flattened()).as_bytes()
}

/// The image digest of a file of `file_len` bytes whose segments have
/// these digests: BLAKE3 keyed by a context naming the format, over the
/// length and the segment digests in order.
pub(crate) fn root_of(file_len: u64, segments: &[SegmentDigest]) -> ImageDigest {
    let context = format!(
        "failback sync image digest v2 {ALGORITHM_NAME} blocks of {BLOCK}, \
         {SEGMENT_BLOCKS} per segment"
    );
    let mut hasher = blake3::Hasher::new_derive_key(&context);
    hasher.update(&file_len.to_le_bytes());
    hasher.update(segments.as_flattened());
    ImageDigest(*hasher.finalize().as_bytes())
}

/// The segments whose digests change when `stale` is written over the
/// digests of a file of `old_len` bytes: those of its blocks and, when the
/// length changed, the new last segment (it may have lost blocks).
pub(crate) fn touched(old_len: u64, stale: &StaleBlocks) -> BTreeSet<usize> {
    let per = SEGMENT_BLOCKS;
    let mut out: BTreeSet<usize> = stale
        .runs
        .iter()
        .flat_map(|(first, blocks)| {
            let last = first + blocks.len().saturating_sub(1);
            (first / per..=last / per).filter(move |_| !blocks.is_empty())
        })
        .collect();
    let count = blocks_for(stale.len);
    if stale.len != old_len && count > 0 {
        out.insert(((count - 1) / per as u64) as usize);
    }
    out
}

/// Some of the digests of a file: every segment digest, and the block
/// digests of some segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentedDigests {
    file_len: u64,
    segments: Vec<SegmentDigest>,
    /// The block digests of the segments read, by segment.
    blocks: BTreeMap<usize, Vec<BlockDigest>>,
}

impl SegmentedDigests {
    /// `digests`, with the block digests of segments `which` kept.
    pub(crate) fn from_digests(digests: &Digests, which: &BTreeSet<usize>) -> Self {
        let all = digests.blocks();
        let blocks = which
            .iter()
            .filter_map(|&s| {
                let start = s.checked_mul(SEGMENT_BLOCKS)?;
                let end = start.saturating_add(SEGMENT_BLOCKS).min(all.len());
                Some((s, all.get(start..end)?.to_vec()))
            })
            .collect();
        SegmentedDigests {
            file_len: digests.file_len(),
            segments: digests.segments().to_vec(),
            blocks,
        }
    }

    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The digest of block `block`, if its segment was read.
    fn block(&self, block: usize) -> Option<&BlockDigest> {
        self.blocks
            .get(&(block / SEGMENT_BLOCKS))?
            .get(block % SEGMENT_BLOCKS)
    }

    /// The image digest of the file these digests described with `stale`
    /// written over them; `None` if a segment it needs was not read.
    pub(crate) fn root_with(&self, stale: &StaleBlocks) -> Option<ImageDigest> {
        let new_count = usize::try_from(blocks_for(stale.len)).ok()?;
        let new_segments = usize::try_from(segments_for(new_count as u64)).ok()?;
        let mut fresh: BTreeMap<usize, BlockDigest> = BTreeMap::new();
        for (first, blocks) in &stale.runs {
            for (i, digest) in blocks.iter().enumerate() {
                fresh.insert(first + i, *digest);
            }
        }
        let mut segments = self.segments.clone();
        segments.resize(new_segments, [0; 32]);
        for s in touched(self.file_len, stale) {
            if s >= new_segments {
                continue;
            }
            let start = s * SEGMENT_BLOCKS;
            let end = (start + SEGMENT_BLOCKS).min(new_count);
            let list = (start..end)
                .map(|b| fresh.get(&b).or_else(|| self.block(b)).copied())
                .collect::<Option<Vec<_>>>()?;
            segments[s] = segment_digest(&list);
        }
        Some(root_of(stale.len, &segments))
    }

    /// The first block where these digests with `a` written over them and
    /// with `b` written over them differ, within the blocks both runs
    /// cover and those of equal length; `None` if none is found there.
    pub(crate) fn first_difference(&self, a: &StaleBlocks, b: &StaleBlocks) -> Option<u64> {
        let digest_in = |stale: &StaleBlocks, block: usize| {
            stale
                .runs
                .iter()
                .find(|(first, blocks)| (*first..first + blocks.len()).contains(&block))
                .map(|(first, blocks)| blocks[block - first])
                .or_else(|| self.block(block).copied())
        };
        let blocks: BTreeSet<usize> = a
            .runs
            .iter()
            .chain(&b.runs)
            .flat_map(|(first, blocks)| *first..first + blocks.len())
            .collect();
        blocks
            .into_iter()
            .find(|&block| digest_in(a, block) != digest_in(b, block))
            .map(|block| block as u64)
    }
}

/// A digests file ([`Digests::save`]) opened to be read in part, its segment
/// digests checked against an expected image digest.
pub(crate) struct DigestsFile {
    path: PathBuf,
    file: File,
    file_len: u64,
    count: u64,
    segments: Vec<SegmentDigest>,
}

impl DigestsFile {
    /// Reads the header and the segment digests of the file at `path`.
    ///
    /// Guarantees: on `Ok`, the segment digests and the length have image
    /// digest `expected`: the file describes the image `expected` names
    /// (up to a BLAKE3 collision), whatever else happened to it.
    ///
    /// Errors: the file cannot be read, is not a digests file, or its
    /// segments do not have image digest `expected`.
    pub(crate) fn open(path: &Path, expected: ImageDigest) -> Result<Self, SyncError> {
        let corrupt = |source| SyncError::Corrupt {
            path: path.into(),
            what: "block digests",
            source,
        };
        let (file, size) = open_with_len(path)?;
        let frame = (DIGESTS_HEADER + CHECKSUM_LEN) as u64;
        if size < frame {
            return Err(corrupt(DecodeError::TooShort(
                usize::try_from(size).unwrap_or(usize::MAX),
            )));
        }
        let mut header = [0u8; DIGESTS_HEADER];
        read_exact_at(&file, path, &mut header, 0)?;
        let (file_len, count) = parse_header(&header).map_err(corrupt)?;
        let nseg = segments_for(count);
        let body = nseg
            .saturating_mul(32)
            .saturating_add(count.saturating_mul(16));
        if size - frame != body {
            return Err(corrupt(DecodeError::Length {
                announced: body,
                found: size - frame,
            }));
        }
        let mut segments = vec![[0u8; 32]; usize::try_from(nseg).unwrap_or(usize::MAX)];
        read_exact_at(
            &file,
            path,
            segments.as_flattened_mut(),
            DIGESTS_HEADER as u64,
        )?;
        if root_of(file_len, &segments) != expected {
            return Err(corrupt(DecodeError::Digest));
        }
        Ok(DigestsFile {
            path: path.into(),
            file,
            file_len,
            count,
            segments,
        })
    }

    /// The length of the file the digests describe.
    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Reads the block digests of segments `which` (those past the end are
    /// skipped), each checked against its segment digest.
    ///
    /// Errors: the file cannot be read, or a segment's blocks do not have
    /// its digest.
    pub(crate) fn read(self, which: &BTreeSet<usize>) -> Result<SegmentedDigests, SyncError> {
        let blocks_at = DIGESTS_HEADER as u64 + self.segments.len() as u64 * 32;
        let mut blocks = BTreeMap::new();
        for &s in which.iter().filter(|&&s| s < self.segments.len()) {
            let first = (s * SEGMENT_BLOCKS) as u64;
            let n = (self.count - first).min(SEGMENT_BLOCKS as u64) as usize;
            let mut list = vec![[0u8; 16]; n];
            read_exact_at(
                &self.file,
                &self.path,
                list.as_flattened_mut(),
                blocks_at + first * 16,
            )?;
            if segment_digest(&list) != self.segments[s] {
                return Err(SyncError::Corrupt {
                    path: self.path.clone(),
                    what: "block digests",
                    source: DecodeError::Digest,
                });
            }
            blocks.insert(s, list);
        }
        Ok(SegmentedDigests {
            file_len: self.file_len,
            segments: self.segments,
            blocks,
        })
    }
}
