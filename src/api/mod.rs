//! The live service: the snapshot the commit coordinator publishes ([`live`]) -> an HTTP server on
//! its own threads ([`server`]) with health checks, the statistics as JSON and as a change stream,
//! Prometheus metrics ([`metrics`]), GraphQL ([`graphql`]) and a dashboard page that reads the
//! same API ([`dashboard`]); the committed lake -> one model of its current files and duplicates
//! ([`lake_view`]); the routes' OpenAPI document ([`openapi`]). REST ([`server`], [`rest`]) and
//! GraphQL give the same answers: both read them from [`query`].
//!
//! **The API never blocks a worker**: the workers only swap in an immutable [`live::Snapshot`] and
//! send a diff into a bounded broadcast channel; a client that falls behind that channel is
//! disconnected with a final `error` event. `exoflow serve` publishes the same snapshot from a
//! lake another process writes ([`follow`]), read-only.

pub mod dashboard;
pub mod follow;
pub mod graphql;
pub mod history;
pub mod lake_view;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod query;
pub mod rest;
pub mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Bearer tokens longer than this are refused, as are token files past [`MAX_TOKEN_FILE_BYTES`].
pub const MAX_TOKEN_BYTES: usize = 1024;
pub const MAX_TOKEN_FILE_BYTES: u64 = 1 << 20;
/// The environment variable that may hold one token.
pub const TOKEN_ENV: &str = "EXOFLOW_TOKEN";

/// A bearer token a client may present; its name (when given) is what logs show.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("name", &self.name).finish()
    }
}

/// The name of the configured token that `given` is, if any. Every token is compared, each in
/// constant time, so that timing tells nothing of which matched.
pub fn token_named<'a>(tokens: &'a [Token], given: &[u8]) -> Option<&'a str> {
    use subtle::ConstantTimeEq;
    let mut matched = None;
    for token in tokens {
        if bool::from(token.secret.as_slice().ct_eq(given)) {
            matched = Some(token.name.as_str());
        }
    }
    matched
}

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    /// Empty: no authentication, which only a loopback address allows.
    pub tokens: Vec<Token>,
    /// The lake the run writes: resumed streams read the epochs the live history no longer
    /// holds from its committed `stats_changes`.
    pub lake: Option<PathBuf>,
    /// The pipeline's rules, for `/api/v1/rules`, in their order: the lake's rule counts are
    /// read by them.
    pub rules: Vec<RuleInfo>,
    /// Where one JSON line per request is appended; None: no audit log.
    pub audit_log: Option<PathBuf>,
    /// The origin browsers may call the API from; None: no CORS headers.
    pub cors: Option<String>,
}

/// One of the pipeline's rules as `/api/v1/rules` shows it; a secret rule's pattern is withheld.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RuleInfo {
    pub id: String,
    pub pattern: Option<String>,
    pub regex: bool,
    pub secret: bool,
}

impl RuleInfo {
    /// The rules of a pipeline, in their order.
    pub fn of(rules: &crate::pipeline::RuleSet) -> Vec<RuleInfo> {
        (0..rules.len() as u32)
            .map(|r| {
                let (pattern, regex) = rules.pattern(r);
                let secret = rules.is_secret(r);
                RuleInfo {
                    id: rules.id(r).to_string(),
                    pattern: (!secret).then(|| pattern.to_string()),
                    regex,
                    secret,
                }
            })
            .collect()
    }
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "refusing to serve on {0} without a token: a non-loopback address needs --token-file or {TOKEN_ENV}"
    )]
    OpenBind(SocketAddr),
    #[error("cannot read the token file {}: {reason}", path.display())]
    TokenFile { path: PathBuf, reason: String },
    #[error("cannot open the audit log {}", path.display())]
    AuditLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--cors {0}: not an origin a header can carry")]
    Cors(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the server's runtime")]
    Runtime(#[source] std::io::Error),
}

impl ApiError {
    /// A mistake in the command line or its files rather than a failure at run time.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ApiError::OpenBind(_)
                | ApiError::TokenFile { .. }
                | ApiError::AuditLog { .. }
                | ApiError::Cors(_)
        )
    }
}

impl ServeConfig {
    /// Checks the configuration before anything starts: a non-loopback address needs a token.
    pub fn new(addr: SocketAddr, tokens: Vec<Token>) -> Result<ServeConfig, ApiError> {
        if tokens.is_empty() && !addr.ip().is_loopback() {
            return Err(ApiError::OpenBind(addr));
        }
        Ok(ServeConfig {
            addr,
            tokens,
            lake: None,
            rules: Vec::new(),
            audit_log: None,
            cors: None,
        })
    }
}

/// The tokens of a token file (one per line, `name:token` or a bare token; blank lines and
/// lines starting with `#` skipped) and of [`TOKEN_ENV`] when it is set and not empty.
pub fn load_tokens(file: Option<&Path>, env: Option<String>) -> Result<Vec<Token>, ApiError> {
    let mut tokens = Vec::new();
    if let Some(path) = file {
        let error = |reason: String| ApiError::TokenFile {
            path: path.to_path_buf(),
            reason,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| error(e.to_string()))?
            .len();
        if size > MAX_TOKEN_FILE_BYTES {
            return Err(error(format!("larger than {MAX_TOKEN_FILE_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, secret) = match line.split_once(':') {
                Some((name, secret)) => (name.to_string(), secret),
                None => (format!("line {}", n + 1), line),
            };
            if secret.is_empty() || secret.len() > MAX_TOKEN_BYTES {
                return Err(error(format!(
                    "line {}: a token is 1 to {MAX_TOKEN_BYTES} bytes",
                    n + 1
                )));
            }
            tokens.push(Token {
                name,
                secret: secret.as_bytes().to_vec(),
            });
        }
        if tokens.is_empty() {
            return Err(error("it holds no token".into()));
        }
    }
    if let Some(secret) = env.filter(|s| !s.is_empty()) {
        tokens.push(Token {
            name: TOKEN_ENV.into(),
            secret: secret.into_bytes(),
        });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_open_bind_needs_a_token() {
        let open: SocketAddr = "0.0.0.0:8484".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8484".parse().unwrap();
        assert!(matches!(
            ServeConfig::new(open, vec![]),
            Err(ApiError::OpenBind(_))
        ));
        assert!(ServeConfig::new(local, vec![]).is_ok());
        let token = Token {
            name: "ops".into(),
            secret: b"s3cret".to_vec(),
        };
        assert!(ServeConfig::new(open, vec![token]).is_ok());
    }

    #[test]
    fn api_token_file_names_and_bare_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# operators\nops:abc\n\nxyz\n").unwrap();
        let tokens = load_tokens(Some(&path), Some("env-token".into())).unwrap();
        let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["ops", "line 4", TOKEN_ENV]);
        assert_eq!(tokens[1].secret, b"xyz");
        std::fs::write(&path, "\n").unwrap();
        assert!(load_tokens(Some(&path), None).is_err());
    }
}
