//! File content + rules -> exact per-rule counts and the first `max_matches_per_rule` match rows, with
//! line, column and an excerpt in which every secret rule's matches are masked.

use std::borrow::Cow;

use crate::pipeline::{Pipeline, RuleMatch};
use crate::version::MatchRow;

/// Longest excerpt written, in bytes.
pub const MAX_EXCERPT_BYTES: usize = 200;
/// Bytes of context kept before a match when a long line is cut to an excerpt.
const EXCERPT_LEAD_BYTES: usize = 40;
/// Bytes of a secret's match left visible.
pub const SECRET_VISIBLE_BYTES: usize = 4;

/// What one file's scan found.
#[derive(Debug, Default)]
pub struct Found {
    /// (rule, exact count) for each rule with a non-zero count, by rule index.
    pub counts: Vec<(u32, u64)>,
    pub rows: Vec<MatchRow>,
}

/// Scans `content` with the pipeline's rules.
pub fn scan(content: &[u8], pipeline: &Pipeline) -> Found {
    let rules = &pipeline.rules;
    let cap = pipeline.max_matches_per_rule;
    let mut counts = vec![0u64; rules.len()];
    let mut kept: Vec<RuleMatch> = Vec::new();
    let mut secrets: Vec<(usize, usize)> = Vec::new();
    rules.scan(content, |m| {
        let count = &mut counts[m.rule as usize];
        *count += 1;
        if *count as usize <= cap {
            kept.push(m);
        }
        if rules.is_secret(m.rule) {
            secrets.push((m.start, m.end));
        }
    });
    let counts = counts
        .into_iter()
        .enumerate()
        .filter(|(_, n)| *n > 0)
        .map(|(rule, n)| (rule as u32, n))
        .collect();
    if kept.is_empty() {
        return Found {
            counts,
            rows: Vec::new(),
        };
    }
    let masked = mask(content, &secrets);
    // Line numbers by counting newlines forward through the matches in offset order.
    kept.sort_by_key(|m| (m.start, m.rule));
    let mut rows = Vec::with_capacity(kept.len());
    let (mut counted_to, mut newlines) = (0usize, 0u64);
    for m in kept {
        newlines += bytecount::count(&content[counted_to..m.start], b'\n') as u64;
        counted_to = m.start;
        let line_start = memchr::memrchr(b'\n', &content[..m.start]).map_or(0, |i| i + 1);
        rows.push(MatchRow {
            rule: m.rule,
            line: newlines + 1,
            column: (m.start - line_start + 1) as u64,
            offset: m.start as u64,
            excerpt: excerpt(&masked, m.start, line_start),
        });
    }
    Found { counts, rows }
}

/// `content` with each secret span's bytes after the first [`SECRET_VISIBLE_BYTES`] replaced by `*`
/// (newlines excepted).
fn mask<'a>(content: &'a [u8], secrets: &[(usize, usize)]) -> Cow<'a, [u8]> {
    if secrets.is_empty() {
        return Cow::Borrowed(content);
    }
    let mut masked = content.to_vec();
    for &(start, end) in secrets {
        let from = (start + SECRET_VISIBLE_BYTES).min(end);
        // Newlines stay so that lines are the same in the masked copy.
        for b in &mut masked[from..end] {
            if *b != b'\n' {
                *b = b'*';
            }
        }
    }
    Cow::Owned(masked)
}

/// The line holding offset `at`, without its line ending, cut to at most [`MAX_EXCERPT_BYTES`]
/// around the match without splitting a UTF-8 character.
fn excerpt(content: &[u8], at: usize, line_start: usize) -> String {
    let line_end = memchr::memchr(b'\n', &content[at..]).map_or(content.len(), |i| at + i);
    let mut line = &content[line_start..line_end];
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    let mut window = line;
    if line.len() > MAX_EXCERPT_BYTES {
        let column = at - line_start;
        let start = column
            .saturating_sub(EXCERPT_LEAD_BYTES)
            .min(line.len() - MAX_EXCERPT_BYTES);
        let end = start + MAX_EXCERPT_BYTES;
        window = &line[start..end];
        if start > 0 {
            while window.first().is_some_and(|&b| is_continuation(b)) {
                window = &window[1..];
            }
        }
        if end < line.len() {
            window = drop_incomplete_tail(window);
        }
    }
    let mut text = String::from_utf8_lossy(window).into_owned();
    if text.len() > MAX_EXCERPT_BYTES {
        let mut cut = MAX_EXCERPT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

fn is_continuation(b: u8) -> bool {
    b & 0b1100_0000 == 0b1000_0000
}

/// Drops a UTF-8 sequence cut short at the end of `bytes`.
fn drop_incomplete_tail(bytes: &[u8]) -> &[u8] {
    for back in 1..=4.min(bytes.len()) {
        let index = bytes.len() - back;
        let b = bytes[index];
        if is_continuation(b) {
            continue;
        }
        let needed = match b {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        return if back < needed {
            &bytes[..index]
        } else {
            bytes
        };
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;

    fn pipeline(rules: &str) -> Pipeline {
        Pipeline::from_json(
            &format!(r#"{{"max_matches_per_rule": 2, "rules": {rules}}}"#),
            "test",
        )
        .unwrap()
    }

    #[test]
    fn counts_are_exact_and_rows_capped() {
        let p = pipeline(r#"[{"id": "t", "pattern": "TODO"}]"#);
        let found = scan(b"TODO a\r\nb TODO\nTODO", &p);
        assert_eq!(found.counts, vec![(0, 3)]);
        assert_eq!(found.rows.len(), 2);
        assert_eq!(
            (
                found.rows[1].line,
                found.rows[1].column,
                found.rows[1].offset
            ),
            (2, 3, 10)
        );
        assert_eq!(found.rows[0].excerpt, "TODO a");
    }

    #[test]
    fn secrets_are_masked_in_every_excerpt() {
        let p = pipeline(
            r#"[{"id": "k", "pattern": "AKIA[A-Z0-9]{16}", "regex": true, "secret": true},
                {"id": "t", "pattern": "TODO"}]"#,
        );
        let found = scan(b"TODO key=AKIAABCDEFGHIJKLMNOP end", &p);
        assert_eq!(found.rows.len(), 2);
        for row in &found.rows {
            assert_eq!(row.excerpt, "TODO key=AKIA**************** end");
            assert!(!row.excerpt.contains("ABCDEF"));
        }
    }

    #[test]
    fn long_lines_are_cut_around_the_match_on_char_boundaries() {
        let p = pipeline(r#"[{"id": "t", "pattern": "TODO"}]"#);
        let mut content = "é".repeat(150).into_bytes();
        content.extend_from_slice(b"TODO");
        content.extend("é".repeat(150).into_bytes());
        let found = scan(&content, &p);
        let excerpt = &found.rows[0].excerpt;
        assert!(excerpt.len() <= MAX_EXCERPT_BYTES);
        assert!(excerpt.contains("TODO"));
        assert!(!excerpt.contains('\u{fffd}'));
    }
}
