//! Layers on disk: the skeleton every sandbox root starts from, and copying a writable layer into
//! an immutable snapshot layer with everything overlayfs needs (whiteouts, opaque-directory
//! xattrs, owners, modes, times, hard links).

use super::mount::cstring;
use crate::{Error, Result};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The user inside every sandbox (`kiln`, uid and gid 1000).
pub(crate) const SANDBOX_USER_ID: u32 = 1000;

/// Bumped when the skeleton's contents change, so old data dirs get a fresh one.
const SKELETON_VERSION: u32 = 5;

/// The `/etc` entries bound from the host with `ImageSpec::host_system`: what `/usr` needs to work
/// (alternatives symlinks, TLS roots, the linker cache) and nothing that names host users or secrets.
pub(crate) const HOST_ETC: [&str; 5] = [
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ld.so.cache",
    "/etc/localtime",
];

/// Makes (once) and returns the bottom layer of every sandbox: mount points, merged-usr symlinks,
/// a minimal `/etc` naming only the sandbox user, and the user's writable directories owned by
/// `host_uid`, the host uid the sandbox runs as.
pub(crate) fn ensure_skeleton(layers_dir: &Path, host_uid: u32) -> Result<std::path::PathBuf> {
    let dir = layers_dir.join(format!("skeleton-v{SKELETON_VERSION}-u{host_uid}"));
    if dir.exists() {
        return Ok(dir);
    }
    let tmp = layers_dir.join(format!(".skeleton-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let io = |what| Error::io(what, &tmp);
    for d in [
        "usr",
        "proc",
        "dev",
        "run",
        "var/tmp",
        "etc",
        ".kiln",
        "root",
        "home/kiln",
        "workspace",
        "tmp",
        // Where a proxied sandbox's egress directory is bound, and an agent sandbox's docs.
        ".kiln/egress",
        ".kiln/docs",
    ] {
        fs::create_dir_all(tmp.join(d)).map_err(io("creating the skeleton"))?;
    }
    for etc in HOST_ETC {
        let path = tmp.join(etc.trim_start_matches('/'));
        if Path::new(etc).is_dir() {
            fs::create_dir_all(&path).map_err(io("creating the skeleton"))?;
        } else {
            fs::write(&path, "").map_err(io("creating the skeleton"))?;
        }
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("etc/os-release", "../usr/lib/os-release"),
    ] {
        std::os::unix::fs::symlink(target, tmp.join(link)).map_err(io("creating the skeleton"))?;
    }
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nkiln:x:1000:1000:kiln:/home/kiln:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        ),
        ("etc/group", "root:x:0:\nkiln:x:1000:\nnogroup:x:65534:\n"),
        (
            "etc/hosts",
            "127.0.0.1\tlocalhost kiln\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        ),
        ("etc/hostname", "kiln\n"),
        (
            "etc/nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n",
        ),
        ("etc/resolv.conf", ""),
        (".kiln/guest", ""),
    ];
    for (path, contents) in files {
        fs::write(tmp.join(path), contents).map_err(io("creating the skeleton"))?;
    }
    for (path, mode) in [("tmp", 0o1777), ("var/tmp", 0o1777), ("root", 0o700)] {
        fs::set_permissions(tmp.join(path), fs::Permissions::from_mode(mode))
            .map_err(io("creating the skeleton"))?;
    }
    for path in ["home/kiln", "workspace"] {
        std::os::unix::fs::chown(tmp.join(path), Some(host_uid), Some(host_uid))
            .map_err(io("creating the skeleton"))?;
    }
    match fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process made it first; theirs is as good as ours.
        Err(_) if dir.exists() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(Error::io("installing the skeleton", &dir)(e)),
    }
}

/// Gives every entry under `dir` to `uid` (owner and group): a sandbox's user namespace maps
/// that one host uid, to 0 for a root build step and to 1000 otherwise, so files owned by host
/// root would be nobody's inside and out of reach of the step that installs packages. Children
/// before their directory and `dir` itself last, so a tree whose top already belongs to `uid`
/// is done (an interrupted run is finished by the next). Never follows a symlink; `chown`
/// clears set-id bits and file capabilities, which a sandbox could not use anyway.
pub(crate) fn adopt_tree(dir: &Path, uid: u32) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(Error::io("reading a layer", dir))?;
    if !meta.is_dir() {
        return Err(Error::InvalidSpec(format!(
            "layer {} is not a directory",
            dir.display()
        )));
    }
    if meta.uid() == uid && meta.gid() == uid {
        return Ok(());
    }
    adopt_entry(dir, &meta, uid)
}

fn adopt_entry(path: &Path, meta: &fs::Metadata, uid: u32) -> Result<()> {
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(Error::io("listing a layer directory", path))? {
            let entry = entry.map_err(Error::io("listing a layer directory", path))?;
            let child = entry.path();
            let child_meta =
                fs::symlink_metadata(&child).map_err(Error::io("reading a layer entry", &child))?;
            adopt_entry(&child, &child_meta, uid)?;
        }
    }
    if meta.uid() != uid || meta.gid() != uid {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid))
            .map_err(Error::io("handing a layer entry to the sandbox uid", path))?;
    }
    Ok(())
}

/// Copies the tree at `src` to the new directory `dst`, preserving what overlayfs layers carry.
/// Returns the bytes of regular-file contents copied. `std::fs::copy` uses `copy_file_range`, so
/// on xfs and btrfs the data is reflinked rather than copied.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<u64> {
    let mut copier = Copier::default();
    copier.entry(src, dst)?;
    Ok(copier.bytes)
}

/// Copies layer entries, remembering hard links (a file linked twice is copied once, then
/// linked) and counting the bytes of file contents copied.
#[derive(Default)]
struct Copier {
    links: HashMap<(u64, u64), std::path::PathBuf>,
    bytes: u64,
}

impl Copier {
    fn entry(&mut self, src: &Path, dst: &Path) -> Result<()> {
        let meta = fs::symlink_metadata(src).map_err(Error::io("reading a layer entry", src))?;
        let kind = meta.file_type();
        let err = |what| Error::io(what, dst);
        if kind.is_dir() {
            fs::create_dir(dst).map_err(err("copying a directory"))?;
            for entry in sorted_entries(src)? {
                self.entry(&entry.path(), &dst.join(entry.file_name()))?;
            }
        } else {
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                    return fs::hard_link(first, dst).map_err(err("copying a hard link"));
                }
                self.links
                    .insert((meta.dev(), meta.ino()), dst.to_path_buf());
            }
            if kind.is_file() {
                self.bytes += fs::copy(src, dst).map_err(err("copying a file"))?;
            } else if kind.is_symlink() {
                let target = fs::read_link(src).map_err(Error::io("reading a symlink", src))?;
                std::os::unix::fs::symlink(target, dst).map_err(err("copying a symlink"))?;
            } else {
                // Devices (overlay whiteouts are character devices 0:0), fifos and sockets.
                let path = cstring(dst)?;
                // SAFETY: valid NUL-terminated path; mode and rdev come from the source's metadata.
                if unsafe { libc::mknod(path.as_ptr(), meta.mode(), meta.rdev()) } != 0 {
                    return Err(err("copying a special file")(
                        std::io::Error::last_os_error(),
                    ));
                }
            }
        }
        copy_attributes(src, dst, &meta)
    }

    /// Applies the layer directory `src` on top of the merged directory `dst` (see
    /// [`merge_layers`]).
    fn merge_dir(&mut self, src: &Path, dst: &Path) -> Result<()> {
        for entry in sorted_entries(src)? {
            let (from, to) = (entry.path(), dst.join(entry.file_name()));
            let meta =
                fs::symlink_metadata(&from).map_err(Error::io("reading a layer entry", &from))?;
            let below = fs::symlink_metadata(&to).ok();
            if meta.is_dir() && !is_opaque(&from)? && below.as_ref().is_some_and(|b| b.is_dir()) {
                self.merge_dir(&from, &to)?;
                copy_attributes(&from, &to, &meta)?;
                continue;
            }
            if let Some(below) = &below {
                remove_entry(&to, below)?;
            }
            self.entry(&from, &to)?;
            if meta.is_dir() && below.is_some() {
                set_opaque(&to)?;
            }
        }
        Ok(())
    }
}

/// A directory's entries in name order, so copies are made the same way every time.
fn sorted_entries(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(Error::io("listing a layer directory", dir))?
        .collect::<std::io::Result<_>>()
        .map_err(Error::io("listing a layer directory", dir))?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// Moves a finished layer from `tmp` to `dest` so that it survives a power cut once this
/// returns: every file and directory of the layer is written out, then the rename, then the
/// directory that holds it. A record naming the layer is written after, so a record never
/// names a layer that is not on disk. File by file rather than `syncfs`, which would also
/// flush everything else on the filesystem (every session's database).
pub(crate) fn install_durably(tmp: &Path, dest: &Path) -> Result<()> {
    sync_tree(tmp)?;
    fs::rename(tmp, dest).map_err(Error::io("installing a layer", dest))?;
    let parent = dest.parent().expect("a layer has a parent directory");
    fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(Error::io("writing a layer to disk", parent))
}

/// fsyncs regular files and directories under `path`, children before their directory.
fn sync_tree(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(Error::io("reading a layer entry", path))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(Error::io("listing a layer directory", path))? {
            let entry = entry.map_err(Error::io("listing a layer directory", path))?;
            sync_tree(&entry.path())?;
        }
    } else if !meta.is_file() {
        // Symlinks and whiteouts live in their directory's entries, synced with it.
        return Ok(());
    }
    fs::File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(Error::io("writing a layer to disk", path))
}

/// The xattr overlayfs marks an opaque directory with: lower layers' entries in it are hidden.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Merges snapshot layers (bottom first) into the new directory `dst`: one layer that, stacked
/// on the same lower layers, shows exactly what the stack showed. Upper entries replace lower
/// ones; a whiteout deletes what is below and stays a whiteout (the lower layers may have the
/// path); an opaque directory replaces what is below whole; a directory that lands on a
/// whiteout or a non-directory becomes opaque, since nothing below it showed through before.
/// Returns the bytes of file contents copied.
pub(crate) fn merge_layers(layers: &[&Path], dst: &Path) -> Result<u64> {
    let (first, rest) = layers
        .split_first()
        .ok_or_else(|| Error::InvalidSpec("merging needs at least one layer".into()))?;
    let mut copier = Copier::default();
    copier.entry(first, dst)?;
    for layer in rest {
        copier.merge_dir(layer, dst)?;
        let meta = fs::symlink_metadata(layer).map_err(Error::io("reading a layer", layer))?;
        copy_attributes(layer, dst, &meta)?;
    }
    Ok(copier.bytes)
}

fn remove_entry(path: &Path, meta: &fs::Metadata) -> Result<()> {
    let removed = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    removed.map_err(Error::io("replacing a merged entry", path))
}

fn is_opaque(dir: &Path) -> Result<bool> {
    let (path, name) = (cstring(dir)?, CString::new(OPAQUE_XATTR).expect("no NUL"));
    let mut value = [0u8; 1];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), value.as_mut_ptr().cast(), 1) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ERANGE) => Ok(false),
            _ => Err(Error::io("reading an opaque mark", dir)(err)),
        };
    }
    Ok(n == 1 && value[0] == b'y')
}

fn set_opaque(dir: &Path) -> Result<()> {
    let (path, name) = (cstring(dir)?, CString::new(OPAQUE_XATTR).expect("no NUL"));
    // SAFETY: valid NUL-terminated strings and a one-byte value.
    let rc = unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc != 0 {
        return Err(Error::io("marking a directory opaque", dir)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Owner, mode, extended attributes and times, in that order (chown clears set-id bits, and
/// setting times must come after anything that would update them).
fn copy_attributes(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
    let err = |what| Error::io(what, dst);
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .map_err(err("copying the owner"))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(err("copying the mode"))?;
    }
    copy_xattrs(src, dst)?;
    let dst_c = cstring(dst)?;
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: valid path and a two-element timespec array.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            dst_c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(err("copying times")(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn copy_xattrs(src: &Path, dst: &Path) -> Result<()> {
    let (src_c, dst_c) = (cstring(src)?, cstring(dst)?);
    let names = xattr_call(|buf, len| {
        // SAFETY: buf is valid for len bytes (or null with len 0).
        unsafe { libc::llistxattr(src_c.as_ptr(), buf.cast(), len) }
    })
    .map_err(Error::io("listing extended attributes", src))?;
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name_c = CString::new(name).expect("split at NUL");
        let value = xattr_call(|buf, len| {
            // SAFETY: as above.
            unsafe { libc::lgetxattr(src_c.as_ptr(), name_c.as_ptr(), buf.cast(), len) }
        })
        .map_err(Error::io("reading an extended attribute", src))?;
        // SAFETY: value is a valid buffer of value.len() bytes.
        let rc = unsafe {
            libc::lsetxattr(
                dst_c.as_ptr(),
                name_c.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            return Err(Error::io("writing an extended attribute", dst)(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Runs a size-then-fill xattr call, retrying if the value grew in between.
fn xattr_call(mut call: impl FnMut(*mut u8, usize) -> isize) -> std::io::Result<Vec<u8>> {
    loop {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize];
        let got = call(buf.as_mut_ptr(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
    }
}
