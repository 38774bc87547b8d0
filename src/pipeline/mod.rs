//! Pipeline file (JSON) -> validated [`Pipeline`]: limits and a compiled [`RuleSet`], checked before any work starts.

mod rules;

use std::path::Path;

use serde::Deserialize;

pub use rules::{RuleMatch, RuleSet};

/// Files larger than this many bytes are not read unless the pipeline says otherwise (64 MiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// The largest `max_file_bytes` a pipeline may set (1 GiB). A worker holds a file it reads whole in
/// memory, in a batch whose contents share one buffer with 32-bit Arrow offsets (under 2 GiB,
/// with up to 16 MiB of other files beside it); a larger bound would also let every worker hold
/// that much at once.
pub const MAX_FILE_BYTES_LIMIT: u64 = 1 << 30;
/// At most this many `matches` rows are written per file version and rule.
pub const DEFAULT_MAX_MATCHES_PER_RULE: usize = 100;
/// Directory statistics group files by this many leading directory components.
pub const DEFAULT_DIR_DEPTH: usize = 1;

/// The rule pack used when no `--pipeline` is given.
pub const DEFAULT_PIPELINE_JSON: &str = include_str!("../../pipelines/default.json");

/// A pipeline file as written by a user. Every field is documented because this struct is the
/// reference for the file format; unknown fields are refused so that a typo is an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// A short name for the pipeline, shown in logs.
    #[serde(default)]
    pub name: Option<String>,
    /// Free text for people reading the file.
    #[serde(default)]
    pub description: Option<String>,
    /// Files above this size get a `files` row with `skip_reason = 'too_large'` and are not read;
    /// at most [`MAX_FILE_BYTES_LIMIT`].
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// At most this many `matches` rows per file version and rule; `file_rules` keeps the exact count.
    #[serde(default = "default_max_matches_per_rule")]
    pub max_matches_per_rule: usize,
    /// Scan files detected as binary (a NUL byte in the first 8 KiB) for rule matches.
    #[serde(default)]
    pub scan_binary: bool,
    /// Leading directory components that key the per-directory statistics.
    #[serde(default = "default_dir_depth")]
    pub dir_depth: usize,
    /// The content rules, each counted on its own.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Near-duplicate clusters by MinHash and LSH; absent: off.
    #[serde(default)]
    pub near_duplicates: Option<NearDuplicates>,
}

/// The `near_duplicates` section: MinHash signatures (scheme `exoflow-oph-1`, see
/// [`crate::kernels::minhash`]) and the LSH banding that finds candidate pairs.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NearDuplicates {
    /// Bytes per shingle, 1 to 8.
    #[serde(default = "default_shingle")]
    pub shingle: usize,
    /// Values per signature, 1 to 1024.
    #[serde(default = "default_signature")]
    pub signature: usize,
    /// LSH bands; `bands * rows` is at most `signature`.
    #[serde(default = "default_bands")]
    pub bands: usize,
    /// Signature values per band.
    #[serde(default = "default_rows")]
    pub rows: usize,
    /// Pairs whose estimated Jaccard similarity is at least this are near-duplicates (0 < t <= 1).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Files smaller than this many bytes get no signature.
    #[serde(default = "default_min_size")]
    pub min_size: u64,
    /// A band bucket holding more distinct signatures than this is not expanded into pairs (it
    /// is counted instead): at most `max_bucket²/2` pairs per bucket.
    #[serde(default = "default_max_bucket")]
    pub max_bucket: usize,
}

impl Default for NearDuplicates {
    fn default() -> NearDuplicates {
        NearDuplicates {
            shingle: default_shingle(),
            signature: default_signature(),
            bands: default_bands(),
            rows: default_rows(),
            threshold: default_threshold(),
            min_size: default_min_size(),
            max_bucket: default_max_bucket(),
        }
    }
}

impl NearDuplicates {
    /// What is wrong with the section, if anything.
    fn problem(&self) -> Option<String> {
        use crate::kernels::minhash::{MAX_SHINGLE, MAX_SIGNATURE};
        if !(1..=MAX_SHINGLE).contains(&self.shingle) {
            return Some(format!(
                "shingle {} is not 1 to {MAX_SHINGLE}",
                self.shingle
            ));
        }
        if !(1..=MAX_SIGNATURE).contains(&self.signature) {
            return Some(format!(
                "signature {} is not 1 to {MAX_SIGNATURE}",
                self.signature
            ));
        }
        if self.bands == 0 || self.rows == 0 || self.bands * self.rows > self.signature {
            return Some(format!(
                "bands {} x rows {} must be at least 1 x 1 and at most signature {}",
                self.bands, self.rows, self.signature
            ));
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Some(format!("threshold {} is not in (0, 1]", self.threshold));
        }
        if self.min_size == 0 {
            return Some("min_size must be at least 1".into());
        }
        if self.max_bucket < 2 {
            return Some(format!("max_bucket {} is below 2", self.max_bucket));
        }
        None
    }
}

fn default_shingle() -> usize {
    5
}
fn default_signature() -> usize {
    256
}
fn default_bands() -> usize {
    16
}
fn default_rows() -> usize {
    8
}
fn default_threshold() -> f64 {
    0.8
}
fn default_min_size() -> u64 {
    64
}
fn default_max_bucket() -> usize {
    100
}

/// One content rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique id; the `rule` column of the lake.
    pub id: String,
    /// A literal byte string, or a regular expression when `regex` is true.
    pub pattern: String,
    /// Interpret `pattern` with the `regex` crate's bytes syntax (ASCII classes, like Python's bytes `re`).
    #[serde(default)]
    pub regex: bool,
    /// ASCII case-insensitive matching.
    #[serde(default)]
    pub case_insensitive: bool,
    /// Never write the matched text: excerpts show its first 4 bytes and mask the rest.
    #[serde(default)]
    pub secret: bool,
}

/// XXH3-64 (hex) of every field of `spec` that changes what is computed.
fn fingerprint(spec: &PipelineSpec) -> String {
    let mut text = format!(
        "exoflow-pipeline-1\0{}\0{}\0{}\0{}",
        spec.max_file_bytes, spec.max_matches_per_rule, spec.scan_binary, spec.dir_depth
    );
    for rule in &spec.rules {
        text.push_str(&format!(
            "\0{}\0{}\0{}\0{}\0{}",
            rule.id, rule.pattern, rule.regex, rule.case_insensitive, rule.secret
        ));
    }
    // Absent, the text is that of a lake written before the section existed.
    if let Some(n) = &spec.near_duplicates {
        text.push_str(&format!(
            "\0near_duplicates\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
            crate::kernels::minhash::SCHEME,
            n.shingle,
            n.signature,
            n.bands,
            n.rows,
            n.threshold,
            n.min_size,
            n.max_bucket
        ));
    }
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

fn default_max_file_bytes() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}
fn default_max_matches_per_rule() -> usize {
    DEFAULT_MAX_MATCHES_PER_RULE
}
fn default_dir_depth() -> usize {
    DEFAULT_DIR_DEPTH
}

/// Why a pipeline file was refused. Every variant names the file it came from.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot read pipeline file {origin}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pipeline {origin}: field `{field}`: {reason}")]
    Parse {
        origin: String,
        field: String,
        reason: String,
    },
    #[error("pipeline {origin}: rule '{id}': {reason}")]
    Rule {
        origin: String,
        id: String,
        reason: String,
    },
    #[error("pipeline {origin}: {reason}")]
    Invalid { origin: String, reason: String },
}

/// A validated pipeline: limits plus the compiled rules.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub max_file_bytes: u64,
    pub max_matches_per_rule: usize,
    pub scan_binary: bool,
    pub dir_depth: usize,
    pub rules: RuleSet,
    /// Near-duplicate clusters; None: off.
    pub near_duplicates: Option<NearDuplicates>,
    /// Identifies what the pipeline computes (limits and rules, not its name or description): a
    /// lake holds the results of one pipeline.
    pub fingerprint: String,
}

impl Pipeline {
    /// The embedded default rule pack (`pipelines/default.json`).
    pub fn default_pack() -> Pipeline {
        Pipeline::from_json(DEFAULT_PIPELINE_JSON, "pipelines/default.json")
            .expect("the embedded default pipeline is valid")
    }

    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, PipelineError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read {
            origin: origin.clone(),
            source,
        })?;
        Pipeline::from_json(&text, &origin)
    }

    /// Parses and validates pipeline JSON; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Pipeline, PipelineError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let spec: PipelineSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            PipelineError::Parse {
                origin: origin.to_string(),
                field,
                reason: e.into_inner().to_string(),
            }
        })?;
        Pipeline::from_spec(spec, origin)
    }

    /// Validates a parsed spec and compiles its rules.
    pub fn from_spec(spec: PipelineSpec, origin: &str) -> Result<Pipeline, PipelineError> {
        if spec.max_file_bytes > MAX_FILE_BYTES_LIMIT {
            return Err(PipelineError::Invalid {
                origin: origin.to_string(),
                reason: format!(
                    "max_file_bytes {} is above the supported maximum {MAX_FILE_BYTES_LIMIT} (1 GiB): a file is read whole into memory, beside the rest of its batch",
                    spec.max_file_bytes
                ),
            });
        }
        if let Some(problem) = spec
            .near_duplicates
            .as_ref()
            .and_then(NearDuplicates::problem)
        {
            return Err(PipelineError::Invalid {
                origin: origin.to_string(),
                reason: format!("near_duplicates: {problem}"),
            });
        }
        let rules = RuleSet::compile(&spec.rules).map_err(|(id, reason)| PipelineError::Rule {
            origin: origin.to_string(),
            id,
            reason,
        })?;
        let fingerprint = fingerprint(&spec);
        Ok(Pipeline {
            fingerprint,
            name: spec.name.unwrap_or_else(|| "unnamed".to_string()),
            max_file_bytes: spec.max_file_bytes,
            max_matches_per_rule: spec.max_matches_per_rule,
            scan_binary: spec.scan_binary,
            dir_depth: spec.dir_depth,
            rules,
            near_duplicates: spec.near_duplicates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pack_is_valid_and_has_about_twenty_rules() {
        let p = Pipeline::default_pack();
        assert!((18..=24).contains(&p.rules.len()), "{}", p.rules.len());
        assert_eq!(p.max_file_bytes, DEFAULT_MAX_FILE_BYTES);
    }

    #[test]
    fn unknown_field_is_refused_with_its_path() {
        let err = Pipeline::from_json(
            r#"{"rules": [{"id": "a", "pattern": "x", "regx": true}]}"#,
            "p.json",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("p.json"), "{err}");
        assert!(err.contains("rules[0]"), "{err}");
        assert!(err.contains("regx"), "{err}");
    }

    #[test]
    fn duplicate_id_is_refused() {
        let err = Pipeline::from_json(
            r#"{"rules": [{"id": "a", "pattern": "x"}, {"id": "a", "pattern": "y"}]}"#,
            "p.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rule 'a'") && err.contains("duplicate"),
            "{err}"
        );
    }

    #[test]
    fn invalid_regex_is_refused_with_rule_id() {
        let err = Pipeline::from_json(
            r#"{"rules": [{"id": "bad", "pattern": "a(b", "regex": true}]}"#,
            "p.json",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("rule 'bad'"), "{err}");
    }

    #[test]
    fn near_duplicates_take_documented_defaults_and_refuse_bad_values() {
        let p = Pipeline::from_json(r#"{"near_duplicates": {}}"#, "p.json").unwrap();
        assert_eq!(p.near_duplicates, Some(NearDuplicates::default()));
        let d = NearDuplicates::default();
        assert_eq!(
            (
                d.shingle,
                d.signature,
                d.bands,
                d.rows,
                d.threshold,
                d.min_size,
                d.max_bucket
            ),
            (5, 256, 16, 8, 0.8, 64, 100)
        );
        for (section, word) in [
            (r#"{"shingle": 0}"#, "shingle"),
            (r#"{"shingle": 9}"#, "shingle"),
            (r#"{"signature": 0}"#, "signature"),
            (r#"{"signature": 1025}"#, "signature"),
            (r#"{"bands": 33}"#, "bands"),
            (r#"{"rows": 0}"#, "bands"),
            (r#"{"threshold": 0}"#, "threshold"),
            (r#"{"threshold": 1.5}"#, "threshold"),
            (r#"{"min_size": 0}"#, "min_size"),
            (r#"{"max_bucket": 1}"#, "max_bucket"),
        ] {
            let text = format!(r#"{{"near_duplicates": {section}}}"#);
            let err = Pipeline::from_json(&text, "p.json")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("p.json") && err.contains("near_duplicates") && err.contains(word),
                "{section}: {err}"
            );
        }
        let err = Pipeline::from_json(r#"{"near_duplicates": {"band": 4}}"#, "p.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("band"), "{err}");
    }

    #[test]
    fn near_duplicates_change_the_fingerprint_and_their_absence_does_not() {
        let default = Pipeline::default_pack();
        // The fingerprint of the default pack that lakes written before the section recorded
        // (computed from the format in Python).
        assert_eq!(default.fingerprint, "2b882e8bd2163846");
        let dedupe = Pipeline::from_json(
            include_str!("../../pipelines/dedupe.json"),
            "pipelines/dedupe.json",
        )
        .unwrap();
        assert_eq!(dedupe.rules.len(), default.rules.len());
        assert_eq!(dedupe.near_duplicates, Some(NearDuplicates::default()));
        assert_ne!(dedupe.fingerprint, default.fingerprint);
    }

    #[test]
    fn pattern_matching_empty_is_refused() {
        let err = Pipeline::from_json(
            r#"{"rules": [{"id": "e", "pattern": "a*", "regex": true}]}"#,
            "p.json",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("empty"), "{err}");
    }
}
