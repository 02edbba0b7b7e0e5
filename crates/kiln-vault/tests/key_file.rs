//! The vault's key on a real filesystem: made 0600 on first open and reused after, refused
//! when others may read it or it holds no key, taken from `KILN_SECRET_KEY` instead when given,
//! and a lost key gives the "key changed" error, never garbage.

use base64::Engine as _;
use kiln_core::Secret;
use kiln_vault::{Error, KEY_FILE, Vault};
use std::os::unix::fs::PermissionsExt;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_key_file_is_made_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path(), None).unwrap();
    let key = dir.path().join(KEY_FILE);
    assert_eq!(mode(&key), 0o600);
    let text = std::fs::read_to_string(&key).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap();
    assert_eq!(bytes.len(), 32);
    // No temporary file is left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let sealed = vault.seal("repo-secret:app:TOKEN", b"hunter22");
    let again = Vault::open(dir.path(), None).unwrap();
    assert_eq!(
        again
            .unseal("repo-secret:app:TOKEN", &sealed)
            .unwrap()
            .expose(),
        b"hunter22"
    );
    assert_eq!(again.fingerprint(b"x"), vault.fingerprint(b"x"));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text, "not replaced");
}

#[test]
fn a_readable_or_broken_key_file_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    Vault::open(dir.path(), None).unwrap();
    let key = dir.path().join(KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = Vault::open(dir.path(), None).unwrap_err();
    assert!(matches!(error, Error::KeyFile { .. }), "{error}");
    assert!(
        error.to_string().contains("0644") && error.to_string().contains("chmod 600"),
        "{error}"
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key, "c2hvcnQ=\n").unwrap();
    let error = Vault::open(dir.path(), None).unwrap_err();
    assert!(error.to_string().contains("holds 5 bytes"), "{error}");
    std::fs::write(&key, "not base64 at all!\n").unwrap();
    let error = Vault::open(dir.path(), None).unwrap_err();
    assert!(error.to_string().contains("not base64"), "{error}");
    // The broken file is left alone for the operator.
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        "not base64 at all!\n"
    );
}

#[test]
fn the_environment_key_wins_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let vault = Vault::open(dir.path(), Some(&Secret::new(format!(" {key}\n")))).unwrap();
    assert_eq!(vault.key_source(), "KILN_SECRET_KEY");
    assert!(!dir.path().join(KEY_FILE).exists());
    let same = Vault::from_key(&[7u8; 32], "x".into());
    let sealed = vault.seal("c", b"value");
    assert_eq!(same.unseal("c", &sealed).unwrap().expose(), b"value");

    let error = Vault::open(dir.path(), Some(&Secret::new("dG9vIHNob3J0".into()))).unwrap_err();
    assert!(matches!(error, Error::EnvKey(_)), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("KILN_SECRET_KEY holds 9 bytes"),
        "{error}"
    );
}

#[test]
fn a_lost_key_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let sealed = Vault::open(dir.path(), None)
        .unwrap()
        .seal("repo-secret:app:TOKEN", b"hunter22");
    std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
    let error = Vault::open(dir.path(), None)
        .unwrap()
        .unseal("repo-secret:app:TOKEN", &sealed)
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::WrongKey { .. }), "{message}");
    assert!(
        message.contains("repo-secret:app:TOKEN")
            && message.contains("secret.key")
            && message.contains("not the one it was sealed with"),
        "{message}"
    );
}
