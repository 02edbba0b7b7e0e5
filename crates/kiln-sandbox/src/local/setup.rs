//! Opening the local provider's data directory: checking the sandbox uid can reach it, the
//! guest binary installed where that uid can read it, and the skeleton layer and cgroups
//! prepared, before any sandbox is made.

use super::*;

impl Inner {
    pub(super) fn prepare(config: LocalConfig) -> Result<Inner> {
        let data = &config.data_dir;
        if !data.is_absolute() {
            return Err(Error::InvalidSpec(format!(
                "data dir {} must be an absolute path",
                data.display()
            )));
        }
        if data.as_os_str().len() + SOCKET_SUFFIX_LEN >= 108 {
            return Err(Error::InvalidSpec(format!(
                "data dir {} is too long: sandbox socket paths must fit in 108 bytes",
                data.display()
            )));
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Unsupported(
                "the local sandbox provider must run as root (it mounts and manages cgroups)"
                    .into(),
            ));
        }
        for (sub, mode) in [
            ("", 0o711),
            ("sandboxes", 0o711),
            ("layers", 0o700),
            ("bin", 0o755),
        ] {
            let dir = data.join(sub);
            fs::create_dir_all(&dir).map_err(Error::io("creating the data directory", &dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
                .map_err(Error::io("securing the data directory", &dir))?;
        }
        check_reachable(data, config.sandbox_uid)?;
        let guest_bin = install_guest(&config.guest_bin, &data.join("bin"))?;
        let skeleton = layer::ensure_skeleton(&data.join("layers"), config.sandbox_uid)?;
        snapshots::clean_layers(&data.join("layers"))?;
        let cgroups = cgroup::Version::detect()?;
        cgroups.prepare(&config.cgroup_parent)?;
        cgroups.limit_parent(
            &config.cgroup_parent,
            config.sandboxes_memory_bytes,
            config.sandboxes_pids,
        )?;
        let seccomp = seccomp::Programs::compile()?;
        Ok(Inner {
            config,
            cgroups,
            skeleton,
            guest_bin,
            seccomp,
            live: Mutex::new(HashMap::new()),
        })
    }
}

/// Bubblewrap runs as the sandbox uid and must walk from `/` to the sandbox roots.
fn check_reachable(data: &Path, uid: u32) -> Result<()> {
    for dir in data.ancestors().skip(1) {
        let meta =
            fs::metadata(dir).map_err(Error::io("checking the data directory's parents", dir))?;
        if meta.mode() & 0o001 == 0 && meta.uid() != uid {
            return Err(Error::InvalidSpec(format!(
                "the sandbox uid {uid} cannot reach the data dir {}: {} has mode {:o}; \
                 choose a data dir such as /var/lib/kiln or run `chmod o+x {}`",
                data.display(),
                dir.display(),
                meta.mode() & 0o7777,
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Copies the guest binary where the sandbox uid can read it, unless an identical copy is there.
fn install_guest(source: &Path, bin_dir: &Path) -> Result<PathBuf> {
    let dest = bin_dir.join("kiln-guest");
    let src_meta = fs::metadata(source).map_err(|e| {
        Error::Start(format!(
            "guest agent binary {} not found ({e}); build it with `cargo build -p kiln-guest` or set KILN_GUEST_BIN",
            source.display()
        ))
    })?;
    let same = fs::metadata(&dest)
        .is_ok_and(|d| d.len() == src_meta.len() && d.modified().ok() == src_meta.modified().ok());
    if !same {
        let tmp = bin_dir.join(format!(".kiln-guest-{}", std::process::id()));
        fs::copy(source, &tmp).map_err(Error::io("installing the guest binary", &tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .map_err(Error::io("installing the guest binary", &tmp))?;
        let file = fs::File::options()
            .write(true)
            .open(&tmp)
            .map_err(Error::io("installing the guest binary", &tmp))?;
        if let Ok(modified) = src_meta.modified() {
            file.set_modified(modified)
                .map_err(Error::io("installing the guest binary", &tmp))?;
        }
        fs::rename(&tmp, &dest).map_err(Error::io("installing the guest binary", &dest))?;
    }
    Ok(dest)
}
