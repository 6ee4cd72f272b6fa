//! Block digests, image digests, and their files.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;
use std::sync::{LazyLock, OnceLock};

use super::os::{open_source, open_with_len, read_exact_at};
use super::persist::{CHECKSUM_LEN, Decoder, Encoder, atomic_write, checksum_parts};
use rayon::prelude::*;

use super::pipeline::{Run, block_runs, run_extents, whole_file};
use super::segment::{SEGMENT_BLOCKS, SegmentDigest, root_of, segment_digest, segments_for};
use super::{BLOCK, ChangeMap, DecodeError, SyncError};

/// The digest of one block: 16 bytes.
pub type BlockDigest = [u8; 16];

/// Identifies [`block_digest`]'s algorithm in digest files and image digests;
/// changing the hash means changing this.
pub(crate) const ALGORITHM_ID: u32 = 1;
pub(crate) const ALGORITHM_NAME: &str = "BLAKE3-128";

/// The digest of one block (of up to [`BLOCK`] bytes): BLAKE3, truncated to
/// 128 bits. The one place the block hash is chosen.
///
/// Why BLAKE3 and not a faster non-cryptographic hash (xxh3-128): a guest
/// controls the bytes of its disk, and with a non-cryptographic hash it could
/// craft two different blocks with the same digest, so that a changed block
/// is skipped and verification still passes. Truncated BLAKE3 keeps 64-bit
/// collision resistance even against such a guest, is already a dependency,
/// and hashes several GB/s per core (SIMD), more than a disk delivers.
/// Different lengths give different digests (a partial last block is hashed
/// as its bytes).
pub fn block_digest(bytes: &[u8]) -> BlockDigest {
    let mut digest = [0u8; 16];
    blake3::Hasher::new()
        .update(bytes)
        .finalize_xof()
        .fill(&mut digest);
    digest
}

/// Bytes of zeros, to compare blocks against (a `memcmp`).
pub(crate) static ZERO_BLOCK: [u8; BLOCK] = [0; BLOCK];

/// Whether `block` (at most [`BLOCK`] bytes) is all zeros.
pub(crate) fn is_zero(block: &[u8]) -> bool {
    ZERO_BLOCK.get(..block.len()) == Some(block)
}

/// The digest of `len` (at most [`BLOCK`]) zero bytes: a hole.
pub(crate) fn zero_digest(len: usize) -> BlockDigest {
    static FULL: LazyLock<BlockDigest> = LazyLock::new(|| block_digest(&ZERO_BLOCK));
    if len == BLOCK {
        *FULL
    } else {
        block_digest(&ZERO_BLOCK[..len.min(BLOCK)])
    }
}

/// Number of blocks of a file of `len` bytes.
pub(crate) fn blocks_for(len: u64) -> u64 {
    len.div_ceil(BLOCK as u64)
}

/// Length of block `block` of a file of `len` bytes (0 past the end).
pub(crate) fn block_len(len: u64, block: u64) -> usize {
    len.saturating_sub(block.saturating_mul(BLOCK as u64))
        .min(BLOCK as u64) as usize
}

/// Digests of the blocks of a buffer read at a block boundary: for each
/// block, exactly [`block_digest`] of it, computed [`LANES`] full blocks at
/// a time (the last, partial block alone).
///
/// Why not `block_digest` block by block: BLAKE3 hashes the 1 KiB chunks of
/// one input in parallel SIMD lanes, and a 4 KiB block has only 4 chunks,
/// so one block at a time leaves most lanes of AVX2 (8) or AVX-512 (16)
/// empty. Hashing chunk `c` of 16 blocks in one call fills them: 1.7× the
/// throughput per core on the benchmark machine (AVX-512). The digest is the
/// same function of the same bytes (ADR 0003 still holds), built from the
/// BLAKE3 tree of a 4-chunk input: chunk chaining values (counter = the
/// chunk's index in the block), two parents, and a root parent whose first
/// 16 output bytes are the digest.
///
/// Assumptions: `blake3::platform::Platform::hash_many` is
/// semver-exempt ("for benchmarks only"), which is why Cargo.toml pins
/// blake3 exactly; `hash_blocks_equals_block_digest` (src/sync/tests.rs)
/// checks every lane, the partial block and the empty buffer against
/// [`block_digest`] on this platform.
pub(crate) fn hash_blocks(buf: &[u8]) -> Vec<BlockDigest> {
    let mut digests = Vec::with_capacity(buf.len().div_ceil(BLOCK));
    let (blocks, tail) = buf.as_chunks::<BLOCK>();
    for group in blocks.chunks(LANES) {
        hash_full_blocks(group, &mut digests);
    }
    if !tail.is_empty() {
        digests.push(block_digest(tail));
    }
    digests
}

/// Blocks hashed side by side by [`hash_blocks`]: the widest SIMD degree
/// BLAKE3 has (AVX-512); narrower units take them in several passes.
const LANES: usize = 16;

/// BLAKE3's chunk, the leaf of its tree.
const CHUNK_LEN: usize = 1024;
/// Chunks per block (a [`BLOCK`] is a whole number of them).
const CHUNKS: usize = BLOCK / CHUNK_LEN;
/// Bytes of a chaining value.
const CV_LEN: usize = 32;
/// BLAKE3's IV (the SHA-256 IV), the key of the plain hash mode.
const IV: [u32; 8] = [
    0x6A09_E667,
    0xBB67_AE85,
    0x3C6E_F372,
    0xA54F_F53A,
    0x510E_527F,
    0x9B05_688C,
    0x1F83_D9AB,
    0x5BE0_CD19,
];
/// BLAKE3's domain flags (its specification, section 2.1).
const CHUNK_START: u8 = 1 << 0;
const CHUNK_END: u8 = 1 << 1;
const PARENT: u8 = 1 << 2;
const ROOT: u8 = 1 << 3;

/// The SIMD unit of this CPU, detected once.
static PLATFORM: LazyLock<blake3::platform::Platform> =
    LazyLock::new(blake3::platform::Platform::detect);

/// Appends the digests of up to [`LANES`] full blocks (see [`hash_blocks`]).
fn hash_full_blocks(blocks: &[[u8; BLOCK]], digests: &mut Vec<BlockDigest>) {
    let n = blocks.len().min(LANES);
    if n == 0 {
        return;
    }
    let platform = *PLATFORM;
    // Chunk chaining values, two per parent: pairs[2 * i + c / 2] holds
    // those of chunks c and c + 1 (c even) of block i.
    let mut pairs = [[0u8; 2 * CV_LEN]; 2 * LANES];
    let mut out = [0u8; LANES * CV_LEN];
    for c in 0..CHUNKS {
        let chunks: [&[u8; CHUNK_LEN]; LANES] =
            std::array::from_fn(|i| &blocks[i.min(n - 1)].as_chunks::<CHUNK_LEN>().0[c]);
        platform.hash_many(
            &chunks[..n],
            &IV,
            c as u64,
            blake3::IncrementCounter::No,
            0,
            CHUNK_START,
            CHUNK_END,
            &mut out[..n * CV_LEN],
        );
        let half = (c % 2) * CV_LEN;
        for (i, cv) in out[..n * CV_LEN].as_chunks::<CV_LEN>().0.iter().enumerate() {
            pairs[2 * i + c / 2][half..half + CV_LEN].copy_from_slice(cv);
        }
    }
    // The two parents of each block, side by side: block i's are
    // parents[64 * i..64 * (i + 1)], the input of its root.
    let mut parents = [0u8; 2 * LANES * CV_LEN];
    let inputs: [&[u8; 2 * CV_LEN]; 2 * LANES] = std::array::from_fn(|j| &pairs[j]);
    platform.hash_many(
        &inputs[..2 * n],
        &IV,
        0,
        blake3::IncrementCounter::No,
        PARENT,
        0,
        0,
        &mut parents[..2 * n * CV_LEN],
    );
    let (roots_in, _) = parents.as_chunks::<{ 2 * CV_LEN }>();
    let inputs: [&[u8; 2 * CV_LEN]; LANES] = std::array::from_fn(|i| &roots_in[i]);
    platform.hash_many(
        &inputs[..n],
        &IV,
        0,
        blake3::IncrementCounter::No,
        PARENT | ROOT,
        0,
        0,
        &mut out[..n * CV_LEN],
    );
    for root in out[..n * CV_LEN].as_chunks::<CV_LEN>().0 {
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&root[..16]);
        digests.push(digest);
    }
}

/// The per-block digests of a file, and its length.
///
/// Guarantees: `blocks().len()` is `file_len()` divided by [`BLOCK`], rounded
/// up; block `i` is the [`block_digest`] of bytes `[i*BLOCK, (i+1)*BLOCK)`
/// (the last one possibly shorter).
#[derive(Clone)]
pub struct Digests {
    file_len: u64,
    blocks: Vec<BlockDigest>,
    /// The segment digests ([`super::segment`]), once computed; reset by
    /// every change.
    segments: OnceLock<Vec<SegmentDigest>>,
    /// [`Digests::root`], once computed; reset by every change.
    root: OnceLock<ImageDigest>,
}

impl PartialEq for Digests {
    fn eq(&self, other: &Self) -> bool {
        self.file_len == other.file_len && self.blocks == other.blocks
    }
}

impl Eq for Digests {}

pub(crate) const DIGESTS_MAGIC: &[u8; 8] = b"FBDIGEST";
/// Magic, version, block size, algorithm, file length, block count.
pub(crate) const DIGESTS_HEADER: usize = 8 + 4 + 4 + 4 + 8 + 8;
/// 2: the segment digests follow the header, then the block digests.
pub(crate) const DIGESTS_VERSION: u32 = 2;

impl Digests {
    /// Callers pass one digest per block of a `file_len`-byte file.
    pub(crate) fn from_parts(file_len: u64, blocks: Vec<BlockDigest>) -> Self {
        Digests {
            file_len,
            blocks,
            segments: OnceLock::new(),
            root: OnceLock::new(),
        }
    }

    /// Length of the file, in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Number of blocks.
    pub fn block_count(&self) -> u64 {
        self.blocks.len() as u64
    }

    /// The digests, block by block.
    pub fn blocks(&self) -> &[BlockDigest] {
        &self.blocks
    }

    /// The digest of block `block`, if the file has it.
    pub fn get(&self, block: u64) -> Option<&BlockDigest> {
        usize::try_from(block).ok().and_then(|i| self.blocks.get(i))
    }

    /// The image digest, in two levels: the block digests are cut into
    /// segments of [`SEGMENT_BLOCKS`] and each segment hashed (BLAKE3, keyed
    /// by a context naming the format); the root is BLAKE3 (keyed likewise)
    /// over the file length and the segment digests in order. Two files have
    /// the same root exactly when they have the same length and the same
    /// block digests (up to a BLAKE3 collision). The levels let phase 2
    /// check and update the root from the segments its changed blocks fall
    /// in (`src/sync/segment.rs`).
    pub fn root(&self) -> ImageDigest {
        *self
            .root
            .get_or_init(|| root_of(self.file_len, self.segments()))
    }

    /// The segment digests, hashed on every core once.
    pub(crate) fn segments(&self) -> &[SegmentDigest] {
        self.segments.get_or_init(|| {
            self.blocks
                .par_chunks(SEGMENT_BLOCKS)
                .map(segment_digest)
                .collect()
        })
    }

    /// The first block whose digest differs from `other`'s, counting a block
    /// only one of them has as different; `None` when the files are equal.
    pub fn first_mismatch(&self, other: &Digests) -> Option<u64> {
        if self.file_len == other.file_len && self.blocks == other.blocks {
            return None;
        }
        let longest = self.blocks.len().max(other.blocks.len());
        let differs = (0..longest).find(|&i| self.blocks.get(i) != other.blocks.get(i));
        match differs {
            Some(i) => Some(i as u64),
            // Same digests imply same length; kept for robustness.
            None if self.file_len != other.file_len => Some(self.block_count().saturating_sub(1)),
            None => None,
        }
    }

    /// The serialised form (framed, checksummed; see [`Digests::save`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let segments = self.segments();
        let capacity = segments.len() * 32 + self.blocks.len() * 16 + 24;
        let mut out = Encoder::new(DIGESTS_MAGIC, DIGESTS_VERSION, capacity);
        out.u32(BLOCK as u32);
        out.u32(ALGORITHM_ID);
        out.u64(self.file_len);
        out.u64(self.block_count());
        out.raw(segments.as_flattened());
        out.raw(self.blocks.as_flattened());
        out.finish()
    }

    /// Parses [`Digests::to_bytes`]' output.
    ///
    /// Errors: any byte out of place, or digests of another block size or
    /// hash algorithm.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = Decoder::new(bytes, DIGESTS_MAGIC, DIGESTS_VERSION)?;
        let (file_len, count) = Digests::header_fields(&mut input)?;
        let segments = segments_for(count).saturating_mul(32);
        let body = input.rest(segments.saturating_add(count.saturating_mul(16)))?;
        // The segment digests are computed again when needed: the checksum
        // vouches for the file, not for how it was made.
        let blocks = body[usize::try_from(segments)
            .unwrap_or(usize::MAX)
            .min(body.len())..]
            .chunks_exact(16)
            .map(|chunk| {
                let mut digest = [0u8; 16];
                digest.copy_from_slice(chunk);
                digest
            })
            .collect();
        Ok(Digests::from_parts(file_len, blocks))
    }

    /// Writes the digests to `path`, atomically (temporary file, fsync,
    /// rename, fsync of the directory).
    pub fn save(&self, path: &Path) -> Result<(), SyncError> {
        atomic_write(path, &self.to_bytes())
    }

    /// Reads digests written by [`Digests::save`], checked as
    /// [`Digests::from_bytes`] checks them.
    ///
    /// Guarantees: reads the file straight into the digest list (one
    /// allocation of its size: a 4 GiB disk's digests are 16 MiB, read while
    /// its VM is off).
    ///
    /// Errors: the file cannot be read, or is not a valid digests file.
    pub fn load(path: &Path) -> Result<Self, SyncError> {
        let corrupt = |source| SyncError::Corrupt {
            path: path.into(),
            what: "block digests",
            source,
        };
        let (mut file, size) = open_with_len(path)?;
        let read_failed = |source| SyncError::Read {
            path: path.into(),
            offset: 0,
            source,
        };
        // The header: magic, version, block size, algorithm, length, count.
        let mut header = [0u8; DIGESTS_HEADER];
        let frame = (DIGESTS_HEADER + CHECKSUM_LEN) as u64;
        let (file_len, count) = match file.read_exact(&mut header) {
            Ok(()) if size >= frame => parse_header(&header).map_err(corrupt)?,
            // Too short for a header: the full decoder says how.
            _ => {
                let bytes = std::fs::read(path).map_err(read_failed)?;
                return Err(corrupt(
                    Digests::from_bytes(&bytes)
                        .err()
                        .unwrap_or(DecodeError::TooShort(bytes.len())),
                ));
            }
        };
        let nseg = segments_for(count);
        let body = nseg
            .saturating_mul(32)
            .saturating_add(count.saturating_mul(16));
        if size.saturating_sub(frame) != body {
            return Err(corrupt(DecodeError::Length {
                announced: body,
                found: size.saturating_sub(frame),
            }));
        }
        let mut segments = vec![[0u8; 32]; usize::try_from(nseg).unwrap_or(usize::MAX)];
        let mut blocks = vec![[0u8; 16]; usize::try_from(count).unwrap_or(usize::MAX)];
        let mut sum = [0u8; CHECKSUM_LEN];
        file.read_exact(segments.as_flattened_mut())
            .and_then(|()| file.read_exact(blocks.as_flattened_mut()))
            .and_then(|()| file.read_exact(&mut sum))
            .map_err(read_failed)?;
        let parts = [&header[..], segments.as_flattened(), blocks.as_flattened()];
        if checksum_parts(&parts) != sum {
            return Err(corrupt(DecodeError::Checksum));
        }
        Ok(Digests::from_parts(file_len, blocks))
    }

    fn header_fields(input: &mut Decoder) -> Result<(u64, u64), DecodeError> {
        let block_size = input.u32()?;
        if block_size != BLOCK as u32 {
            return Err(DecodeError::BlockSize {
                found: block_size,
                expected: BLOCK as u32,
            });
        }
        let algorithm = input.u32()?;
        if algorithm != ALGORITHM_ID {
            return Err(DecodeError::Algorithm {
                found: algorithm,
                expected: ALGORITHM_ID,
            });
        }
        let file_len = input.u64()?;
        let count = input.u64()?;
        if count != blocks_for(file_len) {
            return Err(DecodeError::Length {
                announced: blocks_for(file_len),
                found: count,
            });
        }
        Ok((file_len, count))
    }
}

impl fmt::Debug for Digests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Digests")
            .field("file_len", &self.file_len)
            .field("blocks", &self.blocks.len())
            .field("root", &self.root())
            .finish()
    }
}

/// The digest of a whole image (see [`Digests::root`]); printed as 64 hex
/// digits and parsed back from them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageDigest(pub [u8; 32]);

impl ImageDigest {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ImageDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
    }
}

impl fmt::Debug for ImageDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageDigest({self})")
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an image digest (64 hex digits)")]
pub struct ParseImageDigestError(String);

impl FromStr for ImageDigest {
    type Err = ParseImageDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        blake3::Hash::from_hex(s)
            .map(|hash| ImageDigest(*hash.as_bytes()))
            .map_err(|_| ParseImageDigestError(s.to_owned()))
    }
}

/// The per-block digests of the file at `path`.
///
/// Guarantees: the file is read once, in [`CHUNK`](super::CHUNK)-sized
/// reads spread over the rayon pool, and hashed in parallel; the length is
/// the file's length when it was opened.
///
/// Assumptions: if the file is written meanwhile, each block digest describes
/// whatever bytes its read returned.
///
/// Errors: the file cannot be opened or read, is not a regular file, or
/// shrinks while it is read.
pub fn digest_blocks(path: &Path) -> Result<Digests, SyncError> {
    let (file, meta) = open_source(path)?;
    digest_file(&file, path, meta.len(), &Run::quiet(path))
}

/// The [`ImageDigest`] of the file at `path`: `digest_blocks(path)?.root()`.
///
/// Errors: those of [`digest_blocks`].
pub fn image_digest(path: &Path) -> Result<ImageDigest, SyncError> {
    Ok(digest_blocks(path)?.root())
}

/// Digests the first `len` bytes of an open file.
pub(crate) fn digest_file(
    file: &File,
    path: &Path,
    len: u64,
    run: &Run,
) -> Result<Digests, SyncError> {
    let parts = run_extents(&whole_file(len), run, |extent, buf| {
        read_exact_at(file, path, buf, extent.offset)?;
        Ok(hash_blocks(buf))
    })?;
    Ok(Digests::from_parts(len, parts.concat()))
}

/// Brings `digests` of the file at `source` up to date after the blocks of
/// `changes` were written: re-hashes exactly those blocks, and, if the file
/// changed length, the blocks from the old end on. Phase 2 uses it on the
/// digests phase 1 returned, before [`verify_against`](super::verify_against).
///
/// Guarantees: reads only the blocks it re-hashes; `digests` is changed only
/// on success.
///
/// Assumptions: `digests` described the file, except for blocks in `changes`.
///
/// Errors: the file cannot be opened or read.
pub fn refresh_digests(
    source: &Path,
    digests: &mut Digests,
    changes: &ChangeMap,
) -> Result<(), SyncError> {
    let stale = StaleBlocks::hash(source, digests.file_len, changes)?;
    stale.apply(digests);
    Ok(())
}

/// The header fields [`Digests::to_bytes`] writes before the digests,
/// checked: returns the file length and the block count.
pub(crate) fn parse_header(header: &[u8; DIGESTS_HEADER]) -> Result<(u64, u64), DecodeError> {
    let mut input = Decoder::unchecked(header, DIGESTS_MAGIC, DIGESTS_VERSION)?;
    Digests::header_fields(&mut input)
}

/// The blocks of a file that differ from what its digests said (the blocks
/// of a change map, and those from the old end on after a resize), hashed
/// again from the file. Runs are in block order, apart, and inside the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StaleBlocks {
    /// The file's length now.
    pub(crate) len: u64,
    /// Runs of consecutive blocks: first block, digests.
    pub(crate) runs: Vec<(usize, Vec<BlockDigest>)>,
}

impl StaleBlocks {
    /// Reads and hashes the stale blocks of the file at `path`, whose
    /// digests described a file of `old_len` bytes except for `changes`.
    pub(crate) fn hash(path: &Path, old_len: u64, changes: &ChangeMap) -> Result<Self, SyncError> {
        let (file, meta) = open_source(path)?;
        let len = meta.len();
        let count = blocks_for(len);
        let mut stale = changes.clone();
        if len != old_len {
            // The block that held the old end (or holds the new one) changed too.
            stale.mark_range(old_len.min(len) / BLOCK as u64..count);
        }
        let extents = block_runs(stale.iter().take_while(|&b| b < count), len);
        let fresh = run_extents(&extents, &Run::quiet(path), |extent, buf| {
            read_exact_at(&file, path, buf, extent.offset)?;
            Ok(hash_blocks(buf))
        })?;
        let runs = extents
            .iter()
            .map(|extent| extent.first_block() as usize)
            .zip(fresh)
            .collect();
        Ok(StaleBlocks { len, runs })
    }

    /// `digests` brought up to date.
    pub(crate) fn apply(self, digests: &mut Digests) {
        digests.root = OnceLock::new();
        digests.segments = OnceLock::new();
        digests
            .blocks
            .resize(blocks_for(self.len) as usize, zero_digest(BLOCK));
        digests.file_len = self.len;
        for (first, blocks) in self.runs {
            digests.blocks[first..first + blocks.len()].copy_from_slice(&blocks);
        }
    }
}
