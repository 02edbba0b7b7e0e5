//! What opening the key or a sealed value can fail with. Messages say what to do; none carries
//! a value or a key.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key file exists but cannot be used (mode, size, content).
    #[error("the secret key {path}: {problem}")]
    KeyFile { path: PathBuf, problem: String },
    /// `KILN_SECRET_KEY` is set but is not a key.
    #[error("KILN_SECRET_KEY {0}")]
    EnvKey(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The value was sealed under another key: the key was replaced or lost.
    #[error(
        "cannot decrypt {context}: the key ({key}) is not the one it was sealed with (was \
         secret.key replaced or KILN_SECRET_KEY changed?); restore that key, or set the secret again"
    )]
    WrongKey { context: String, key: String },
    /// The key is right but the bytes do not open under this context: altered, or copied from
    /// another row.
    #[error(
        "cannot decrypt {context}: the stored value was altered or belongs to another secret; \
         set the secret again"
    )]
    Tampered { context: String },
    /// Not something a vault sealed (too short, an unknown format version).
    #[error("cannot decrypt {context}: {problem}; set the secret again")]
    Format { context: String, problem: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
