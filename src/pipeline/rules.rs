//! Rule specs -> compiled matchers; content bytes -> every rule's non-overlapping leftmost-first matches.
//!
//! Each rule is counted on its own, as if it were searched alone (what Python's
//! `len(re.findall(..))` gives). Searching every rule over every file would cost one pass per
//! rule, so the scan makes one pass with all rules combined into a single leftmost-first regex,
//! and only inside the spans that pass reports does it ask each rule for an anchored match.
//! This is exact: if a rule matches at offset `q`, the combined search must report a span that
//! contains `q` (it reports the leftmost match at or after each resume point, and a match of any
//! rule starting at `q` is a candidate), so no match of any rule can start outside the spans.

use std::sync::Arc;

use regex_automata::{Anchored, Input, meta};
use regex_syntax::hir::Hir;
use regex_syntax::hir::literal::{ExtractKind, Extractor};

use super::RuleSpec;

/// One match of one rule: byte offsets into the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleMatch {
    /// Index of the rule in its [`RuleSet`].
    pub rule: u32,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug)]
struct CompiledRule {
    id: String,
    secret: bool,
    regex: meta::Regex,
    /// Bytes a match can start with; lets the scan skip anchored searches that cannot succeed.
    first_bytes: [bool; 256],
}

#[derive(Debug)]
struct Inner {
    rules: Vec<CompiledRule>,
    combined: Option<meta::Regex>,
}

/// The compiled rules of a pipeline; cheap to clone and share between workers.
#[derive(Debug, Clone)]
pub struct RuleSet {
    inner: Arc<Inner>,
}

impl RuleSet {
    /// Compiles rule specs; an error names the rule id and the reason.
    pub fn compile(specs: &[RuleSpec]) -> Result<RuleSet, (String, String)> {
        let mut seen = std::collections::HashSet::new();
        let mut rules = Vec::with_capacity(specs.len());
        let mut hirs = Vec::with_capacity(specs.len());
        for spec in specs {
            let fail = |reason: String| (spec.id.clone(), reason);
            if spec.id.is_empty() {
                return Err(fail("the id is empty".into()));
            }
            if !seen.insert(spec.id.as_str()) {
                return Err(fail("duplicate rule id".into()));
            }
            if spec.pattern.is_empty() {
                return Err(fail("the pattern is empty".into()));
            }
            let source = if spec.regex {
                spec.pattern.clone()
            } else {
                regex_syntax::escape(&spec.pattern)
            };
            // Unicode off: classes are ASCII and case folding is ASCII, as in Python's bytes `re`.
            let hir = regex_syntax::ParserBuilder::new()
                .unicode(false)
                .utf8(false)
                .case_insensitive(spec.case_insensitive)
                .build()
                .parse(&source)
                .map_err(|e| fail(format!("invalid regex: {e}")))?;
            if hir.properties().minimum_len() == Some(0) {
                return Err(fail(
                    "the pattern can match the empty string; counts would be meaningless".into(),
                ));
            }
            let regex = meta_builder()
                .build_from_hir(&hir)
                .map_err(|e| fail(format!("cannot compile: {e}")))?;
            rules.push(CompiledRule {
                id: spec.id.clone(),
                secret: spec.secret,
                regex,
                first_bytes: first_bytes(&hir),
            });
            hirs.push(hir);
        }
        let combined = if hirs.is_empty() {
            None
        } else {
            Some(
                meta_builder()
                    .build_many_from_hir(&hirs)
                    .map_err(|e| ("*".to_string(), format!("cannot combine rules: {e}")))?,
            )
        };
        Ok(RuleSet {
            inner: Arc::new(Inner { rules, combined }),
        })
    }

    pub fn len(&self) -> usize {
        self.inner.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.rules.is_empty()
    }

    /// The id of rule `index`.
    pub fn id(&self, index: u32) -> &str {
        &self.inner.rules[index as usize].id
    }

    /// Whether rule `index` is marked secret.
    pub fn is_secret(&self, index: u32) -> bool {
        self.inner.rules[index as usize].secret
    }

    /// Whether any rule is marked secret.
    pub fn has_secrets(&self) -> bool {
        self.inner.rules.iter().any(|r| r.secret)
    }

    /// Calls `each` with every match of every rule. Per rule, matches come in increasing order and
    /// are exactly the rule's own non-overlapping leftmost-first matches over `hay`.
    pub fn scan(&self, hay: &[u8], mut each: impl FnMut(RuleMatch)) {
        let Some(combined) = &self.inner.combined else {
            return;
        };
        let rules = &self.inner.rules;
        // End of each rule's previous match: the rule's own search resumes there.
        let mut resume = vec![0usize; rules.len()];
        for span in combined.find_iter(hay) {
            for (index, rule) in rules.iter().enumerate() {
                let mut at = span.start().max(resume[index]);
                while at < span.end() {
                    if !rule.first_bytes[hay[at] as usize] {
                        at += 1;
                        continue;
                    }
                    let input = Input::new(hay).range(at..).anchored(Anchored::Yes);
                    match rule.regex.search(&input) {
                        Some(m) => {
                            each(RuleMatch {
                                rule: index as u32,
                                start: m.start(),
                                end: m.end(),
                            });
                            resume[index] = m.end();
                            at = m.end();
                        }
                        None => at += 1,
                    }
                }
            }
        }
    }

    /// Every rule's exact match count over `hay`, indexed by rule.
    pub fn counts(&self, hay: &[u8]) -> Vec<u64> {
        let mut counts = vec![0u64; self.len()];
        self.scan(hay, |m| counts[m.rule as usize] += 1);
        counts
    }
}

fn meta_builder() -> meta::Builder {
    let mut builder = meta::Builder::new();
    builder.configure(meta::Config::new().utf8_empty(false));
    builder
}

/// The set of bytes a match of `hir` can begin with, from its finite prefix literals; every byte
/// when the prefixes are not finite.
fn first_bytes(hir: &Hir) -> [bool; 256] {
    let mut extractor = Extractor::new();
    extractor.kind(ExtractKind::Prefix);
    let seq = extractor.extract(hir);
    let mut set = [false; 256];
    match seq.literals() {
        Some(literals) if literals.iter().all(|l| !l.as_bytes().is_empty()) => {
            for literal in literals {
                set[literal.as_bytes()[0] as usize] = true;
            }
        }
        _ => set = [true; 256],
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, pattern: &str, regex: bool, ci: bool) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            pattern: pattern.into(),
            regex,
            case_insensitive: ci,
            secret: false,
        }
    }

    /// Reference: each rule searched alone with its own iterator.
    fn alone(specs: &[RuleSpec], hay: &[u8]) -> Vec<u64> {
        specs
            .iter()
            .map(|s| {
                let set = RuleSet::compile(std::slice::from_ref(s)).unwrap();
                set.inner.rules[0].regex.find_iter(hay).count() as u64
            })
            .collect()
    }

    #[test]
    fn overlapping_rules_are_counted_independently() {
        let specs = vec![
            rule("todo", "TODO", false, false),
            rule("to", "TO", false, false),
            rule("odo", "ODO", false, false),
            rule("do", "do", false, true),
        ];
        let set = RuleSet::compile(&specs).unwrap();
        let hay = b"TODO: todo TODODO xTOx";
        assert_eq!(set.counts(hay), alone(&specs, hay));
        assert_eq!(set.counts(hay), vec![2, 3, 2, 4]);
    }

    #[test]
    fn overlapping_occurrences_of_one_pattern_are_non_overlapping() {
        let set = RuleSet::compile(&[rule("aa", "aa", false, false)]).unwrap();
        assert_eq!(set.counts(b"aaaaa"), vec![2]);
    }

    #[test]
    fn regex_and_literal_mix_matches_each_alone() {
        let specs = vec![
            rule("key", r"AKIA[0-9A-Z]{16}", true, false),
            rule("akia", "AKIA", false, false),
            rule("word", r"\b[a-z]+\b", true, true),
            rule("dots", "..", false, false),
        ];
        let set = RuleSet::compile(&specs).unwrap();
        let hay = b"x AKIAABCDEFGHIJKLMNOP... akia Word\n\xff\xfe AKIA.. end";
        assert_eq!(set.counts(hay), alone(&specs, hay));
    }

    #[test]
    fn non_ascii_literal_matches_its_utf8_bytes() {
        let set = RuleSet::compile(&[rule("e", "é", false, false)]).unwrap();
        assert_eq!(set.counts("café é".as_bytes()), vec![2]);
    }
}
