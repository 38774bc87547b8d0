//! Rule specs -> compiled matchers; content bytes -> every rule's non-overlapping leftmost-first matches.
//!
//! Each rule is counted on its own, as if it were searched alone (what Python's
//! `len(re.findall(..))` gives). Searching every rule over every file would cost one pass per
//! rule, so the scan makes one pass over the content with a prefilter: a leftmost-first search for
//! the union of all rules' prefix literals (every match of a rule begins with one of its prefix
//! literals). Only inside the spans that search reports does each rule try an anchored match.
//! This is exact: if some literal occurs at offset `q`, the leftmost-first search must report a
//! span containing `q` (it reports the leftmost literal at or after each resume point, and the one
//! at `q` is a candidate), so no match of any rule can start outside the spans. A rule with no
//! usable prefix literals is searched on its own.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind, packed};
use regex_automata::{Anchored, Input, meta};
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
    /// The pattern as given, and whether it is a regular expression.
    pattern: String,
    is_regex: bool,
    regex: meta::Regex,
    /// Bytes a match can start with; lets the scan skip anchored searches that cannot succeed.
    first_bytes: [bool; 256],
    /// Whether the prefilter covers this rule; if not, the rule is searched on its own.
    prefiltered: bool,
}

#[derive(Debug)]
struct Inner {
    rules: Vec<CompiledRule>,
    /// Leftmost-first search for the union of the prefiltered rules' prefix literals.
    prefilter: Option<Prefilter>,
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
        let mut literals: Vec<Vec<u8>> = Vec::new();
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
            let prefixes = prefix_literals(&source, spec.case_insensitive);
            let prefiltered = prefixes.is_some();
            let mut first_bytes = [!prefiltered; 256];
            for literal in prefixes.into_iter().flatten() {
                first_bytes[literal[0] as usize] = true;
                literals.push(literal);
            }
            rules.push(CompiledRule {
                id: spec.id.clone(),
                secret: spec.secret,
                pattern: spec.pattern.clone(),
                is_regex: spec.regex,
                regex,
                first_bytes,
                prefiltered,
            });
        }
        literals.sort();
        literals.dedup();
        let prefilter = if literals.is_empty() {
            None
        } else {
            Some(Prefilter::new(&literals).map_err(|e| ("*".to_string(), e))?)
        };
        Ok(RuleSet {
            inner: Arc::new(Inner { rules, prefilter }),
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

    /// The id of every rule, by index.
    pub fn ids(&self) -> Vec<String> {
        self.inner.rules.iter().map(|r| r.id.clone()).collect()
    }

    /// Whether rule `index` is marked secret.
    pub fn is_secret(&self, index: u32) -> bool {
        self.inner.rules[index as usize].secret
    }

    /// The pattern of rule `index` as the pipeline gives it, and whether it is a regex.
    pub fn pattern(&self, index: u32) -> (&str, bool) {
        let rule = &self.inner.rules[index as usize];
        (&rule.pattern, rule.is_regex)
    }

    /// Whether any rule is marked secret.
    pub fn has_secrets(&self) -> bool {
        self.inner.rules.iter().any(|r| r.secret)
    }

    /// Calls `each` with every match of every rule. Per rule, matches come in increasing order and
    /// are exactly the rule's own non-overlapping leftmost-first matches over `hay`.
    pub fn scan(&self, hay: &[u8], mut each: impl FnMut(RuleMatch)) {
        let rules = &self.inner.rules;
        for (index, rule) in rules.iter().enumerate().filter(|(_, r)| !r.prefiltered) {
            for m in rule.regex.find_iter(hay) {
                each(RuleMatch {
                    rule: index as u32,
                    start: m.start(),
                    end: m.end(),
                });
            }
        }
        let Some(prefilter) = &self.inner.prefilter else {
            return;
        };
        // End of each rule's previous match: the rule's own search resumes there.
        let mut resume = vec![0usize; rules.len()];
        prefilter.spans(hay, |span| {
            for (index, rule) in rules.iter().enumerate().filter(|(_, r)| r.prefiltered) {
                let mut at = span.start.max(resume[index]);
                while at < span.end {
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
        });
    }

    /// Every rule's exact match count over `hay`, indexed by rule.
    pub fn counts(&self, hay: &[u8]) -> Vec<u64> {
        let mut counts = vec![0u64; self.len()];
        self.scan(hay, |m| counts[m.rule as usize] += 1);
        counts
    }
}

/// A leftmost-first multi-literal search: Teddy (SIMD) where the CPU and the literal count allow,
/// Aho-Corasick otherwise.
#[derive(Debug)]
enum Prefilter {
    Packed(packed::Searcher),
    Automaton(AhoCorasick),
}

impl Prefilter {
    fn new(literals: &[Vec<u8>]) -> Result<Prefilter, String> {
        let mut builder = packed::Config::new()
            .match_kind(packed::MatchKind::LeftmostFirst)
            .builder();
        builder.extend(literals);
        if let Some(searcher) = builder.build() {
            return Ok(Prefilter::Packed(searcher));
        }
        AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(literals)
            .map(Prefilter::Automaton)
            .map_err(|e| format!("cannot build the prefilter: {e}"))
    }

    /// Calls `each` with the span of every leftmost-first literal match.
    fn spans(&self, hay: &[u8], mut each: impl FnMut(std::ops::Range<usize>)) {
        match self {
            Prefilter::Packed(searcher) => searcher.find_iter(hay).for_each(|m| each(m.range())),
            Prefilter::Automaton(ac) => ac.find_iter(hay).for_each(|m| each(m.range())),
        }
    }
}

fn meta_builder() -> meta::Builder {
    let mut builder = meta::Builder::new();
    builder.configure(meta::Config::new().utf8_empty(false));
    builder
}

/// Case-insensitive rules contribute every case variant of their literals' first bytes, this many.
const CASE_VARIANT_BYTES: usize = 3;
/// Prefix literals are cut to this many bytes.
const MAX_LITERAL_BYTES: usize = 8;
/// A rule whose prefix literals are more than this many, or shorter than two bytes, would flood
/// the prefilter with candidates; it is searched on its own instead.
const MAX_PREFIX_LITERALS: usize = 32;

/// Literals one of which begins every match of the rule; None when there is no short, selective
/// set of them. They are taken from the case-sensitive form of the pattern: a match of the
/// case-insensitive form differs from some match of the case-sensitive form only in ASCII case,
/// so it begins with a case variant of one of these literals.
fn prefix_literals(source: &str, case_insensitive: bool) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(source)
        .ok()?;
    let mut extractor = Extractor::new();
    extractor.kind(ExtractKind::Prefix);
    let mut seq = extractor.extract(&hir);
    seq.minimize_by_preference();
    let mut literals: Vec<Vec<u8>> = seq
        .literals()?
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    if case_insensitive {
        literals = literals
            .iter()
            .flat_map(|l| case_variants(&l[..l.len().min(CASE_VARIANT_BYTES)]))
            .collect();
    }
    // The SIMD search tells literals apart by their first bytes; longer prefixes only make more
    // of them, and fewer literals keep it fast.
    for literal in &mut literals {
        literal.truncate(MAX_LITERAL_BYTES);
    }
    literals.sort();
    literals.dedup();
    let selective = !literals.is_empty()
        && literals.len() <= MAX_PREFIX_LITERALS
        && literals.iter().all(|l| l.len() >= 2);
    selective.then_some(literals)
}

/// Every ASCII case variant of `bytes`.
fn case_variants(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::with_capacity(bytes.len())];
    for &b in bytes {
        let (lower, upper) = (b.to_ascii_lowercase(), b.to_ascii_uppercase());
        if lower == upper {
            out.iter_mut().for_each(|v| v.push(b));
        } else {
            out = out
                .into_iter()
                .flat_map(|v| {
                    let mut other = v.clone();
                    other.push(upper);
                    let mut v = v;
                    v.push(lower);
                    [v, other]
                })
                .collect();
        }
    }
    out
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

    /// Matches of each rule searched alone, as (start, end) pairs.
    fn alone_spans(spec: &RuleSpec, hay: &[u8]) -> Vec<(usize, usize)> {
        let set = RuleSet::compile(std::slice::from_ref(spec)).unwrap();
        set.inner.rules[0]
            .regex
            .find_iter(hay)
            .map(|m| (m.start(), m.end()))
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// The prefiltered scan finds exactly each rule's own matches, whatever the other rules.
        #[test]
        fn scan_equals_each_rule_alone(
            hay in proptest::collection::vec(proptest::sample::select(b"aAbB-_ \nxX0".to_vec()), 0..200),
            patterns in proptest::collection::vec(
                (proptest::sample::select(vec![
                    "ab", "aB", "ba", "aa", "a-b", "xx", "Ab_", "bbb", "a[ab]{2}", "(?:ab|ba)b",
                    "\\bab\\b", "x[0-9]+", "a\\s*b", "[ab]{3}", "-_?", "AB|ab", "b+a",
                ]), proptest::bool::ANY, proptest::bool::ANY),
                1..6,
            ),
        ) {
            let specs: Vec<RuleSpec> = patterns
                .iter()
                .enumerate()
                .map(|(i, (p, regex, ci))| RuleSpec {
                    id: format!("r{i}"),
                    pattern: (*p).to_string(),
                    regex: *regex,
                    case_insensitive: *ci,
                    secret: false,
                })
                .collect();
            let set = RuleSet::compile(&specs).unwrap();
            let mut found = vec![Vec::new(); specs.len()];
            set.scan(&hay, |m| found[m.rule as usize].push((m.start, m.end)));
            for (i, spec) in specs.iter().enumerate() {
                proptest::prop_assert_eq!(&found[i], &alone_spans(spec, &hay), "rule {:?}", spec.pattern);
            }
        }
    }
}
