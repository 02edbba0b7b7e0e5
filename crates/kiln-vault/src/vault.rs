//! The key and what it does: seal, unseal, fingerprint.
//!
//! Sealed format, version 1: `[1] [key id: 4] [nonce: 24] [ciphertext + tag]`. The key id (a
//! derived value, not the key) tells "sealed under another key" apart from "altered or moved
//! from another row", so each gets its own message. The nonce is random per value (XChaCha's
//! 24 bytes make collisions a non-issue without a counter). The context is the AEAD's
//! associated data: it is not stored, the caller names it again to open.
//!
//! Three keys are derived from the vault key with HMAC-SHA256 under fixed labels — one seals,
//! one fingerprints, one names the key — so no two uses share a key.

use crate::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use kiln_core::Secret;
use sha2::Sha256;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The key file in the data dir: the base64 of 32 random bytes, mode 0600.
pub const KEY_FILE: &str = "secret.key";
/// The environment variable an operator may keep the key in instead (the same base64 text);
/// read by the binary's configuration, handed to [`Vault::open`].
pub const KEY_ENV: &str = "KILN_SECRET_KEY";

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

type HmacSha256 = Hmac<Sha256>;

/// Seals and opens values under one key. Cheap to clone; `Debug` names where the key came
/// from, never the key.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Keys>,
}

struct Keys {
    cipher: XChaCha20Poly1305,
    fingerprint: [u8; 32],
    key_id: [u8; KEY_ID_LEN],
    /// Where the key came from, for messages: the key file's path or `KILN_SECRET_KEY`.
    source: String,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("key", &self.inner.source)
            .finish()
    }
}

fn derive(key: &[u8; 32], label: &str) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

/// A key from its base64 text (padding optional, surrounding whitespace ignored).
fn parse_key(text: &str) -> std::result::Result<[u8; 32], String> {
    let text = text.trim();
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .map_err(|_| "is not base64".to_string())?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("holds {} bytes; a key is 32", bytes.len()))
}

impl Vault {
    /// The vault of a data dir: the key from `env_key` (`KILN_SECRET_KEY`) when given, else
    /// from `DATA/secret.key`, which is made (0600, 32 random bytes) when missing. A key file
    /// that group or others may read, or that does not hold a key, is refused with the reason.
    pub fn open(data_dir: &Path, env_key: Option<&Secret<String>>) -> Result<Vault> {
        if let Some(text) = env_key {
            let key = parse_key(text.expose())
                .map_err(|problem| Error::EnvKey(format!("{problem}: set it to the base64 of 32 random bytes (`head -c 32 /dev/urandom | base64`)")))?;
            return Ok(Vault::from_key(&key, KEY_ENV.to_string()));
        }
        let path = data_dir.join(KEY_FILE);
        let key = match read_key_file(&path)? {
            Some(key) => key,
            None => create_key_file(&path)?,
        };
        Ok(Vault::from_key(&key, path.display().to_string()))
    }

    /// A vault over `key`; `source` says where it came from in messages.
    pub fn from_key(key: &[u8; 32], source: String) -> Vault {
        let seal = derive(key, "kiln-vault seal v1");
        let id = derive(key, "kiln-vault key id v1");
        Vault {
            inner: Arc::new(Keys {
                cipher: XChaCha20Poly1305::new(&seal.into()),
                fingerprint: derive(key, "kiln-vault fingerprint v1"),
                key_id: id[..KEY_ID_LEN].try_into().expect("4 bytes"),
                source,
            }),
        }
    }

    /// Where the key came from: the key file's path or `KILN_SECRET_KEY`.
    pub fn key_source(&self) -> &str {
        &self.inner.source
    }

    /// Encrypts `plaintext` bound to `context` (e.g. `repo-secret:REPO:NAME`): it opens only
    /// under the same key and the same context.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let sealed = self
            .inner
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("encryption of an in-memory value cannot fail");
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&self.inner.key_id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`Vault::seal`] made for `context`. A value sealed under another key, one
    /// altered or moved from another context, and bytes no vault made each fail with an error
    /// that says which.
    pub fn unseal(&self, context: &str, sealed: &[u8]) -> Result<Secret<Vec<u8>>> {
        let format = |problem: &str| Error::Format {
            context: context.to_string(),
            problem: problem.to_string(),
        };
        if sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(format("the stored value is too short to be sealed"));
        }
        if sealed[0] != VERSION {
            return Err(format(&format!(
                "the stored value has format {}, which this kiln does not know",
                sealed[0]
            )));
        }
        let (key_id, rest) = sealed[1..].split_at(KEY_ID_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        if key_id != self.inner.key_id {
            return Err(Error::WrongKey {
                context: context.to_string(),
                key: self.inner.source.clone(),
            });
        }
        self.inner
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map(Secret::new)
            .map_err(|_| Error::Tampered {
                context: context.to_string(),
            })
    }

    /// A keyed fingerprint of `bytes` (32 hex digits of HMAC-SHA256 under a key derived from the
    /// vault's): equal values have equal fingerprints under one key, and without the key a
    /// fingerprint says nothing about a value, however short or guessable it is.
    pub fn fingerprint(&self, bytes: &[u8]) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.inner.fingerprint)
            .expect("HMAC takes any key length");
        mac.update(bytes);
        mac.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The key in `path`, `None` when there is no such file.
fn read_key_file(path: &Path) -> Result<Option<[u8; 32]>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading", path)(e)),
    };
    let problem = |problem: String| Error::KeyFile {
        path: path.to_path_buf(),
        problem,
    };
    if !meta.is_file() {
        return Err(problem(
            "is not a regular file; move it away (a new key is made) or put the key file back"
                .into(),
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(problem(format!(
            "has mode {mode:04o}, so others on this host may read it; run `chmod 600 {}` (and \
             consider the secrets it protects exposed if someone did)",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
    parse_key(&text).map(Some).map_err(|why| {
        problem(format!(
            "{why}: it must hold the base64 of 32 bytes, as kiln wrote it; restore it from a \
             backup"
        ))
    })
}

/// Makes a new key file (0600) without ever showing a half-written one, and returns its key.
/// If another process made one meanwhile, that one wins.
fn create_key_file(path: &Path) -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the OS random source works");
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(".{KEY_FILE}.{}", kiln_core::random_hex(8)));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format!("{}\n", STANDARD.encode(key)).as_bytes())?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("writing", path)(e));
    }
    // A hard link fails if the name exists: never replace a key someone else just made.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key_file(path)?.ok_or_else(|| Error::KeyFile {
                path: path.to_path_buf(),
                problem: "appeared and vanished while it was being made; start again".into(),
            })
        }
        Err(e) => Err(io("writing", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(byte: u8) -> Vault {
        Vault::from_key(&[byte; 32], "test".into())
    }

    #[test]
    fn sealed_values_open_under_their_key_and_context_only() {
        let (a, b) = (vault(1), vault(2));
        let sealed = a.seal("repo-secret:app:TOKEN", b"hunter22");
        assert!(!sealed.windows(8).any(|w| w == b"hunter22"));
        let opened = a.unseal("repo-secret:app:TOKEN", &sealed).unwrap();
        assert_eq!(opened.expose(), b"hunter22");
        // Random nonces: the same value seals differently each time.
        assert_ne!(sealed, a.seal("repo-secret:app:TOKEN", b"hunter22"));

        let wrong_key = b.unseal("repo-secret:app:TOKEN", &sealed).unwrap_err();
        assert!(matches!(wrong_key, Error::WrongKey { .. }), "{wrong_key}");
        assert!(
            wrong_key
                .to_string()
                .contains("not the one it was sealed with")
        );
        let moved = a.unseal("repo-secret:app:OTHER", &sealed).unwrap_err();
        assert!(matches!(moved, Error::Tampered { .. }), "{moved}");
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            a.unseal("repo-secret:app:TOKEN", &flipped),
            Err(Error::Tampered { .. })
        ));
        assert!(matches!(a.unseal("x", b"short"), Err(Error::Format { .. })));
        let mut future = sealed;
        future[0] = 9;
        assert!(matches!(a.unseal("x", &future), Err(Error::Format { .. })));
    }

    #[test]
    fn fingerprints_are_keyed() {
        let (a, b) = (vault(1), vault(2));
        assert_eq!(a.fingerprint(b"v"), a.fingerprint(b"v"));
        assert_ne!(a.fingerprint(b"v"), a.fingerprint(b"w"));
        assert_ne!(a.fingerprint(b"v"), b.fingerprint(b"v"));
        assert_eq!(a.fingerprint(b"v").len(), 32);
        assert_eq!(format!("{a:?}"), r#"Vault { key: "test" }"#);
    }
}
