//! Real git repositories on disk for tests and benchmarks: a bare repo with one commit on
//! `main`, made with the git binary (no network, fixed identity).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Creates `dir/NAME.git`, a bare repo whose `main` has one commit holding `files`
/// (path, contents). Panics with git's message when git fails: this is test set-up.
pub fn bare_repo(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let work = dir.join(format!("{name}-work"));
    for (path, contents) in files {
        let path = work.join(path);
        std::fs::create_dir_all(path.parent().expect("a file has a parent")).expect("mkdir");
        std::fs::write(&path, contents).expect("write a repo file");
    }
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "initial"]);
    let bare = dir.join(format!("{name}.git"));
    let (work_str, bare_str) = (work.to_string_lossy(), bare.to_string_lossy());
    git(dir, &["clone", "-q", "--bare", &work_str, &bare_str]);
    bare
}

/// Runs git with a fixed identity and no user or system config.
pub fn git(cwd: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "kiln test")
        .env("GIT_AUTHOR_EMAIL", "test@kiln.invalid")
        .env("GIT_COMMITTER_NAME", "kiln test")
        .env("GIT_COMMITTER_EMAIL", "test@kiln.invalid")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?} in {}: {}",
        cwd.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
