//! The set of blocks of a disk written since a point in time.

use std::ops::Range;
use std::path::Path;

use super::persist::{Decoder, Encoder, atomic_write};
use super::{BLOCK, DecodeError, SyncError};

const MAGIC: &[u8; 8] = b"FBCHGMAP";
const VERSION: u32 = 1;

/// The dirty blocks of one disk: a bitmap, bit `i` set when block `i`
/// (bytes `[i*BLOCK, (i+1)*BLOCK)`) was written.
///
/// It grows as blocks are marked; two maps with the same dirty blocks are
/// equal whatever their capacity.
///
/// Assumptions: the lab marks a write's blocks (and saves the map) before the
/// write lands, from the moment recording starts, which is before phase 1
/// reads the disk (see the [module docs](super)). Loading, marking and saving
/// is serialised by the caller (the lab's world lock): two processes saving
/// their own copy would lose each other's marks.
#[derive(Clone, Debug, Default)]
pub struct ChangeMap {
    words: Vec<u64>,
}

impl ChangeMap {
    /// An empty map: nothing written yet.
    pub fn new() -> Self {
        ChangeMap::default()
    }

    /// Marks block `block` dirty.
    ///
    /// Assumptions: `block` is a block of the disk (the map allocates a bit
    /// for every block up to it).
    pub fn mark(&mut self, block: u64) {
        let (word, bit) = ((block / 64) as usize, block % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    /// Marks every block in `blocks` dirty.
    pub fn mark_range(&mut self, blocks: Range<u64>) {
        let Some(last) = blocks
            .end
            .checked_sub(1)
            .filter(|&last| last >= blocks.start)
        else {
            return;
        };
        self.mark(last);
        let mut block = blocks.start;
        while block < blocks.end {
            let bit = block % 64;
            let n = (64 - bit).min(blocks.end - block);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            self.words[(block / 64) as usize] |= mask;
            block += n;
        }
    }

    /// Marks every block that a write of `len` bytes at byte `offset` touches.
    pub fn mark_bytes(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset / BLOCK as u64;
        let last = offset.saturating_add(len - 1) / BLOCK as u64;
        self.mark_range(first..last + 1);
    }

    /// Whether block `block` is dirty.
    pub fn contains(&self, block: u64) -> bool {
        let word = usize::try_from(block / 64)
            .ok()
            .and_then(|w| self.words.get(w));
        word.is_some_and(|word| word >> (block % 64) & 1 == 1)
    }

    /// Number of dirty blocks.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether no block is dirty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The dirty blocks, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            SetBits(word).map(move |bit| index as u64 * 64 + u64::from(bit))
        })
    }

    /// Adds the dirty blocks of `other`.
    pub fn merge(&mut self, other: &ChangeMap) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine |= theirs;
        }
    }

    /// The serialised form: magic `FBCHGMAP`, version, block size, number of
    /// 64-bit words, the words (little-endian, bit `i % 64` of word `i / 64`
    /// is block `i`), and a checksum.
    pub fn to_bytes(&self) -> Vec<u8> {
        let words = self.trimmed();
        let mut out = Encoder::new(MAGIC, VERSION, 12 + words.len() * 8);
        out.u32(BLOCK as u32);
        out.u64(words.len() as u64);
        for word in words {
            out.u64(*word);
        }
        out.finish()
    }

    /// Parses [`ChangeMap::to_bytes`]' output.
    ///
    /// Errors: any byte out of place, or a map of another block size.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = Decoder::new(bytes, MAGIC, VERSION)?;
        let block_size = input.u32()?;
        if block_size != BLOCK as u32 {
            return Err(DecodeError::BlockSize {
                found: block_size,
                expected: BLOCK as u32,
            });
        }
        let count = input.u64()?;
        let body = input.rest(count.saturating_mul(8))?;
        let words = body
            .chunks_exact(8)
            .map(|chunk| {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                u64::from_le_bytes(word)
            })
            .collect();
        Ok(ChangeMap { words })
    }

    /// Writes the map to `path`, atomically and durably: temporary file,
    /// fsync, rename, fsync of the directory. After a crash, `path` holds the
    /// old map or the new one, never a mix.
    ///
    /// Errors: the directory is not writable, the disk is full, ...
    pub fn save(&self, path: &Path) -> Result<(), SyncError> {
        atomic_write(path, &self.to_bytes())
    }

    /// Reads a map written by [`ChangeMap::save`].
    ///
    /// Errors: the file is missing (recording never started: not the same as
    /// an empty map, see the [module docs](super)), unreadable, or not a
    /// valid change map.
    pub fn load(path: &Path) -> Result<Self, SyncError> {
        let bytes = std::fs::read(path).map_err(|source| SyncError::Open {
            path: path.into(),
            source,
        })?;
        ChangeMap::from_bytes(&bytes).map_err(|source| SyncError::Corrupt {
            path: path.into(),
            what: "change map",
            source,
        })
    }

    fn trimmed(&self) -> &[u64] {
        let used = self
            .words
            .iter()
            .rposition(|&w| w != 0)
            .map_or(0, |i| i + 1);
        &self.words[..used]
    }
}

impl PartialEq for ChangeMap {
    fn eq(&self, other: &Self) -> bool {
        self.trimmed() == other.trimmed()
    }
}

impl Eq for ChangeMap {}

impl FromIterator<u64> for ChangeMap {
    fn from_iter<I: IntoIterator<Item = u64>>(blocks: I) -> Self {
        let mut map = ChangeMap::new();
        for block in blocks {
            map.mark(block);
        }
        map
    }
}

/// The set bits of a word, lowest first.
struct SetBits(u64);

impl Iterator for SetBits {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}
