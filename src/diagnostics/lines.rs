//! Lines and columns as an editor shows them, the one way every report
//! counts them.
//!
//! A line ends at LF, CRLF or a lone CR (YAML 1.2 reads all three as a line
//! break, and so do editors); lines and columns are 1-based; a column
//! counts characters, so a tab or a multi-byte character is one column.
//! The JSON report, the GitHub annotations and the human report's
//! `[file:line:column]` all come from here, so they cannot disagree.

/// The line starts of a text and where its multi-byte characters are, to
/// turn byte offsets into lines and columns in `O(log n)` each: a 4 MiB plan
/// on one line with a million nodes must not count characters a million
/// times.
#[derive(Debug)]
pub struct LineIndex {
    /// Where each line after the first starts.
    starts: Vec<usize>,
    /// For each multi-byte character, its offset and the extra bytes
    /// (beyond one per character) of the characters up to and including it.
    wide: Vec<(usize, usize)>,
    len: usize,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut wide = Vec::new();
        if !text.is_ascii() {
            let mut extra = 0;
            for (i, c) in text.char_indices() {
                if c.len_utf8() > 1 {
                    extra += c.len_utf8() - 1;
                    wide.push((i, extra));
                }
            }
        }
        LineIndex {
            starts: line_starts(text),
            wide,
            len: text.len(),
        }
    }

    /// The 1-based line and column of byte `offset` (clamped to the text).
    pub fn position(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.len);
        let line = self.starts.partition_point(|start| *start <= offset);
        let start = match line {
            0 => 0,
            n => self.starts.get(n - 1).copied().unwrap_or(0),
        };
        let column = (offset - start) - (self.extra_before(offset) - self.extra_before(start));
        (clamp(line + 1), clamp(column + 1))
    }

    /// Extra bytes of the multi-byte characters that start before `offset`.
    fn extra_before(&self, offset: usize) -> usize {
        match self.wide.partition_point(|(at, _)| *at < offset) {
            0 => 0,
            n => self.wide.get(n - 1).map_or(0, |(_, extra)| *extra),
        }
    }
}

/// Where each line after the first starts: after `\n`, `\r\n` or a lone `\r`.
pub fn line_starts(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                starts.push(i + 2);
                i += 2;
                continue;
            }
            b'\r' | b'\n' => starts.push(i + 1),
            _ => {}
        }
        i += 1;
    }
    starts
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_at_lf_crlf_and_a_lone_cr() {
        let text = "a\nb\r\nc\rd";
        let index = LineIndex::new(text);
        assert_eq!(index.position(0), (1, 1));
        assert_eq!(index.position(2), (2, 1));
        assert_eq!(index.position(3), (2, 2));
        assert_eq!(index.position(5), (3, 1));
        assert_eq!(index.position(7), (4, 1));
        assert_eq!(index.position(99), (4, 2));
    }

    #[test]
    fn columns_count_characters() {
        let text = "é\t\u{FFFD}x\n😀y";
        let index = LineIndex::new(text);
        assert_eq!(index.position(text.find('x').unwrap()), (1, 4));
        assert_eq!(index.position(text.find('y').unwrap()), (2, 2));
        assert_eq!(index.position(text.find('\t').unwrap()), (1, 2));
    }
}
