//! One revocation list, parsed from its line format and kept compact.
//!
//! A line is a token id (`jti`), bare or as `jti:VALUE`; `sub:VALUE` revokes every token of a
//! subject, `sub:VALUE@UNIXTIME` those issued (`iat`) before that time. Blank lines are
//! skipped, and `#` starts a comment only at the start of a line. A malformed line is reported
//! with its number and skipped; it never takes the rest of the list down.
//!
//! Parsing streams: bytes are fed as they arrive. Entries live in sorted arenas (one buffer
//! and one `u32` offset per entry), about 40 bytes per UUID-sized id.

/// The longest entry accepted; longer lines are malformed.
pub const MAX_ENTRY_BYTES: usize = 1024;
/// How many malformed lines are described (all are counted).
const MAX_REPORTED: usize = 20;

/// A subject's tokens are all revoked.
pub const ALL_TOKENS: u64 = u64::MAX;

/// A parsed list.
#[derive(Debug, Default)]
pub struct RevocationList {
    pub jtis: SortedStrings,
    pub subs: SortedStrings,
    /// Per `subs` entry: tokens issued before this Unix time are revoked (`ALL_TOKENS`: all).
    pub cutoffs: Vec<u64>,
    pub malformed: usize,
    /// The first malformed lines, as `line N: reason`.
    pub problems: Vec<String>,
}

impl RevocationList {
    pub fn entries(&self) -> usize {
        self.jtis.len() + self.subs.len()
    }

    /// Bytes held, for the memory figures.
    pub fn memory_bytes(&self) -> usize {
        self.jtis.memory_bytes() + self.subs.memory_bytes() + self.cutoffs.capacity() * 8
    }

    /// The cutoff for `sub`, if the subject is listed.
    pub fn sub_cutoff(&self, sub: &str) -> Option<u64> {
        self.subs.position(sub).map(|i| self.cutoffs[i])
    }

    /// Parses a whole document (a convenience over `ListParser`).
    pub fn parse(bytes: &[u8]) -> Self {
        let mut parser = ListParser::default();
        parser.feed(bytes);
        parser.finish()
    }
}

/// Strings in one buffer, sorted and deduplicated, found by binary search.
#[derive(Debug, Default)]
pub struct SortedStrings {
    bytes: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` is entry `i`; one more offset than entries.
    offsets: Vec<u32>,
}

impl SortedStrings {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    pub fn position(&self, wanted: &str) -> Option<usize> {
        let wanted = wanted.as_bytes();
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid).cmp(wanted) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    pub fn contains(&self, wanted: &str) -> bool {
        self.position(wanted).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }

    fn memory_bytes(&self) -> usize {
        self.bytes.capacity() + self.offsets.capacity() * 4
    }
}

/// Unsorted entries as parsed: one buffer and (start, length) spans.
#[derive(Default)]
struct Staging {
    bytes: Vec<u8>,
    spans: Vec<(u32, u32, u64)>,
}

impl Staging {
    fn push(&mut self, value: &[u8], cutoff: u64) -> bool {
        let Ok(start) = u32::try_from(self.bytes.len()) else {
            return false;
        };
        if start as usize + value.len() > u32::MAX as usize {
            return false;
        }
        self.bytes.extend_from_slice(value);
        self.spans.push((start, value.len() as u32, cutoff));
        true
    }

    /// Sorts, merges duplicates (the widest cutoff wins) and compacts.
    fn finish(mut self) -> (SortedStrings, Vec<u64>) {
        let range = |(s, l, _): (u32, u32, u64)| s as usize..(s + l) as usize;
        let bytes = std::mem::take(&mut self.bytes);
        self.spans
            .sort_unstable_by(|a, b| bytes[range(*a)].cmp(&bytes[range(*b)]));
        let mut out = SortedStrings {
            bytes: Vec::with_capacity(bytes.len()),
            offsets: Vec::with_capacity(self.spans.len() + 1),
        };
        let mut cutoffs: Vec<u64> = Vec::with_capacity(self.spans.len());
        out.offsets.push(0);
        for span in self.spans {
            let value = &bytes[range(span)];
            if !out.is_empty() && out.get(out.len() - 1) == value {
                let last = cutoffs.len() - 1;
                cutoffs[last] = cutoffs[last].max(span.2);
                continue;
            }
            out.bytes.extend_from_slice(value);
            out.offsets.push(out.bytes.len() as u32);
            cutoffs.push(span.2);
        }
        out.bytes.shrink_to_fit();
        out.offsets.shrink_to_fit();
        cutoffs.shrink_to_fit();
        (out, cutoffs)
    }
}

/// Streaming parser: `feed` chunks as they arrive, then `finish`.
#[derive(Default)]
pub struct ListParser {
    jtis: Staging,
    subs: Staging,
    partial: Vec<u8>,
    line: usize,
    malformed: usize,
    problems: Vec<String>,
}

impl ListParser {
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(newline) = chunk.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.line(&chunk[..newline]);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[..newline]);
                self.line(&line);
            }
            chunk = &chunk[newline + 1..];
        }
        if self.partial.len() + chunk.len() <= MAX_ENTRY_BYTES + 64 {
            self.partial.extend_from_slice(chunk);
        } else {
            // An absurdly long line: keep a marker that makes it malformed, not its bytes.
            self.partial.truncate(0);
            self.partial.resize(MAX_ENTRY_BYTES + 65, b'x');
        }
    }

    pub fn finish(mut self) -> RevocationList {
        if !self.partial.is_empty() {
            let last = std::mem::take(&mut self.partial);
            self.line(&last);
        }
        let (jtis, _) = self.jtis.finish();
        let (subs, cutoffs) = self.subs.finish();
        RevocationList {
            jtis,
            subs,
            cutoffs,
            malformed: self.malformed,
            problems: self.problems,
        }
    }

    fn line(&mut self, raw: &[u8]) {
        self.line += 1;
        match parse_line(raw) {
            Ok(None) => {}
            Ok(Some(Entry::Jti(v))) => {
                if !self.jtis.push(v, ALL_TOKENS) {
                    self.reject("the list is too large");
                }
            }
            Ok(Some(Entry::Sub(v, cutoff))) => {
                if !self.subs.push(v, cutoff) {
                    self.reject("the list is too large");
                }
            }
            Err(reason) => self.reject(reason),
        }
    }

    fn reject(&mut self, reason: &str) {
        self.malformed += 1;
        if self.problems.len() < MAX_REPORTED {
            self.problems.push(format!("line {}: {reason}", self.line));
        }
    }
}

enum Entry<'a> {
    Jti(&'a [u8]),
    Sub(&'a [u8], u64),
}

fn parse_line(raw: &[u8]) -> Result<Option<Entry<'_>>, &'static str> {
    let line = raw.strip_suffix(b"\r").unwrap_or(raw).trim_ascii();
    if line.is_empty() || raw.first() == Some(&b'#') {
        return Ok(None);
    }
    if line.len() > MAX_ENTRY_BYTES {
        return Err("the entry is longer than 1024 bytes");
    }
    if std::str::from_utf8(line).is_err() {
        return Err("the entry is not UTF-8");
    }
    if line.iter().any(|b| b.is_ascii_control()) {
        return Err("the entry contains a control character");
    }
    if let Some(jti) = line.strip_prefix(b"jti:") {
        if jti.is_empty() {
            return Err("`jti:` without a value");
        }
        return Ok(Some(Entry::Jti(jti)));
    }
    if let Some(sub) = line.strip_prefix(b"sub:") {
        if sub.is_empty() {
            return Err("`sub:` without a value");
        }
        // `sub:alice@example.com` is a subject; `sub:alice@1767225600` has a cutoff.
        if let Some(at) = sub.iter().rposition(|&b| b == b'@') {
            let (subject, time) = (&sub[..at], &sub[at + 1..]);
            if !time.is_empty() && time.iter().all(u8::is_ascii_digit) {
                if subject.is_empty() {
                    return Err("`sub:@TIME` without a subject");
                }
                let time = std::str::from_utf8(time)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                    .filter(|&t| t < ALL_TOKENS)
                    .ok_or("the time after `@` is out of range")?;
                return Ok(Some(Entry::Sub(subject, time)));
            }
        }
        return Ok(Some(Entry::Sub(sub, ALL_TOKENS)));
    }
    Ok(Some(Entry::Jti(line)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_format_is_understood() {
        let list = RevocationList::parse(
            b"# revoked by the security team\n\
              3f6c2a9e-8d41\n\
              jti:abc\n\
              \n\
              sub:alice\n\
              sub:bob@1767225600\n\
              sub:carol@example.com\n\
              urn:uuid:1234 # not a comment\n\
              \x20 padded \r\n",
        );
        assert_eq!(list.malformed, 0, "{:?}", list.problems);
        for jti in [
            "3f6c2a9e-8d41",
            "abc",
            "urn:uuid:1234 # not a comment",
            "padded",
        ] {
            assert!(list.jtis.contains(jti), "{jti}");
        }
        assert!(!list.jtis.contains("jti:abc"));
        assert_eq!(list.sub_cutoff("alice"), Some(ALL_TOKENS));
        assert_eq!(list.sub_cutoff("bob"), Some(1_767_225_600));
        assert_eq!(list.sub_cutoff("carol@example.com"), Some(ALL_TOKENS));
        assert_eq!(list.sub_cutoff("dave"), None);
        assert_eq!(list.entries(), 7);
    }

    #[test]
    fn malformed_lines_are_reported_by_number_and_skipped() {
        let list = RevocationList::parse(b"good-1\njti:\nsub:\nbad\x01line\ngood-2\nsub:@5\n");
        assert_eq!(list.malformed, 4);
        assert_eq!(list.problems[0], "line 2: `jti:` without a value");
        assert!(list.problems[1].starts_with("line 3:"));
        assert!(list.problems[2].starts_with("line 4:"));
        assert!(list.problems[3].starts_with("line 6:"));
        assert!(list.jtis.contains("good-1") && list.jtis.contains("good-2"));
    }

    #[test]
    fn duplicates_merge_and_the_widest_cutoff_wins() {
        let list = RevocationList::parse(b"a\na\njti:a\nsub:x@10\nsub:x@20\nsub:y@5\nsub:y\n");
        assert_eq!(list.jtis.len(), 1);
        assert_eq!(list.sub_cutoff("x"), Some(20));
        assert_eq!(list.sub_cutoff("y"), Some(ALL_TOKENS));
    }

    #[test]
    fn chunks_split_anywhere_parse_the_same() {
        let text = b"one\njti:two\nsub:three@7\nfour";
        let whole = RevocationList::parse(text);
        for split in 0..text.len() {
            let mut parser = ListParser::default();
            parser.feed(&text[..split]);
            parser.feed(&text[split..]);
            let list = parser.finish();
            assert_eq!(
                list.jtis.iter().collect::<Vec<_>>(),
                whole.jtis.iter().collect::<Vec<_>>()
            );
            assert_eq!(list.sub_cutoff("three"), Some(7));
        }
    }

    #[test]
    fn an_overlong_line_is_malformed_without_being_kept() {
        let mut text = vec![b'x'; 5000];
        text.extend_from_slice(b"\nok\n");
        let mut parser = ListParser::default();
        for chunk in text.chunks(100) {
            parser.feed(chunk);
        }
        let list = parser.finish();
        assert_eq!(list.malformed, 1);
        assert!(list.jtis.contains("ok"));
    }
}
