//! Secrets kiln keeps for others (repo secrets now, forge tokens later), built once, in one
//! place:
//!
//! - [`Vault`]: seals values with XChaCha20-Poly1305 under a 32-byte key kept outside the
//!   database — `DATA/secret.key` (made 0600 on first use, refused when group or others may read
//!   it) or, for operators who keep it elsewhere, `KILN_SECRET_KEY`. Each sealed value is bound
//!   to a context (`repo-secret:REPO:NAME`), so a ciphertext copied to another row does not
//!   open; a value sealed under another key fails with an error that says the key changed, never
//!   with garbage. [`Vault::fingerprint`] is an HMAC under a key derived from the vault's, so
//!   "did this value change?" can be answered and shown without a guessable hash of it.
//! - [`Masker`]: replaces every secret value — and its base64 and base64url forms — in text with
//!   `[secret NAME]`, before the text is stored or streamed; [`MaskStream`] does it for text that
//!   arrives in pieces, holding back only a tail that could be the start of a value.
//!
//! It knows nothing of repos, stores or sandboxes: callers name the context and pass bytes.

mod error;
mod mask;
mod vault;

pub use error::{Error, Result};
pub use mask::{MIN_MASKED_BYTES, MaskStream, Masker};
pub use vault::{KEY_ENV, KEY_FILE, Vault};
