//! Garbage collection of image and snapshot layers.
//!
//! In use, and kept: every layer of every sandbox the provider runs (sessions, warm pool entries,
//! reservations, builds in progress); every layer of every session's newest snapshot (a restore
//! only ever uses that one); the newest `images_kept` ready images of each repo; and any older
//! image something above still stands on (its top layer is in use). Incremental images stack on
//! their parent, so a chain of them stays until a full build starts a new one (see
//! `EngineConfig::image_max_layers`) and nothing uses the old chain any more.
//!
//! Everything else goes: images are marked collected (the record stays, its log is dropped),
//! snapshot layers are deleted through the provider, the repo layers of collected and failed
//! builds are removed, and so are the bases (`DATA/bases`) no kept image or snapshot stands on. Layers younger than the grace time are never touched: they may belong to
//! a build or a snapshot that is not recorded yet.

use crate::Fleet;
use crate::{Error, Result};
use kiln_protocol::api::GcReport;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub(crate) async fn collect(fleet: &Fleet) -> Result<GcReport> {
    let provider = &fleet.workspaces.provider;
    let mut used: HashSet<PathBuf> = HashSet::new();
    let mut egress = HashSet::new();
    for sandbox in provider.list().await? {
        egress.extend(crate::egress::token(&sandbox).map(str::to_string));
        used.extend(sandbox.spec.image.layers);
    }
    // The proxies of sandboxes that are gone.
    fleet.workspaces.egress.sweep(&egress);
    for id in fleet.store.all_session_ids().await? {
        let snapshot = match fleet.store.open_session(&id).await {
            Ok(log) => log.latest_snapshot().await,
            Err(e) => Err(e),
        };
        match snapshot {
            Ok(Some(snapshot)) => used.extend(snapshot.layers),
            Ok(None) => {}
            // Unknown means in use: better a layer too many than a session that cannot resume.
            Err(source) => {
                return Err(Error::Snapshots {
                    session: id,
                    source,
                });
            }
        }
    }

    let mut report = GcReport::default();
    let mut kept_per_repo: HashMap<String, usize> = HashMap::new();
    let mut live_images: HashSet<String> = HashSet::new();
    // Newest first, so an image is judged after everything that can stand on it.
    for image in fleet.store.uncollected_images().await? {
        if image.error.is_some() {
            continue;
        }
        let kept = kept_per_repo.entry(image.repo.clone()).or_default();
        let stood_on = image.layers.last().is_some_and(|top| used.contains(top));
        if *kept < fleet.config.images_kept || stood_on {
            *kept += 1;
            used.extend(image.layers.iter().cloned());
            live_images.insert(image.id);
        } else {
            // Marked first, so no new sandbox starts from it while its layers go.
            fleet.store.mark_image_collected(&image.id).await?;
            report.images_collected.push(image.id);
        }
    }

    let grace = fleet.config.gc_grace;
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for snapshot in provider.snapshots().await? {
        let young = snapshot.created_ms + grace.as_millis() as u64 > now_ms;
        if young || used.contains(&snapshot.layer) {
            continue;
        }
        match provider.delete_snapshot(&snapshot.id).await {
            Ok(()) => report.snapshots_deleted += 1,
            Err(kiln_sandbox::Error::InUse(..) | kiln_sandbox::Error::SnapshotNotFound(_)) => {}
            Err(e) => {
                tracing::warn!(snapshot = %snapshot.id, error = %e, "cannot delete a snapshot")
            }
        }
    }

    // Bases in a directory of their own (shared by several data dirs) are not this data dir's
    // to collect: other images may stand on them.
    if fleet.config.bases_dir.is_none() {
        let dir = fleet.bases.dir.clone();
        report.bases_removed = crate::bases::collect(&dir, &used, grace).await;
    }

    let builds = fleet.workspaces.data_dir.join("images");
    let dirs = match std::fs::read_dir(&builds) {
        Ok(dirs) => dirs,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => {
            return Err(Error::Io {
                what: format!("listing {}", builds.display()),
                source: e,
            });
        }
    };
    for entry in dirs.flatten() {
        let dir = entry.path();
        let in_use = used.contains(&dir.join("repo"))
            || entry
                .file_name()
                .to_str()
                .is_some_and(|id| live_images.contains(id));
        if in_use || changed_within(&dir, grace) {
            continue;
        }
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
            .await
            .expect("removal does not panic");
        match removed {
            Ok(()) => report.repo_layers_removed += 1,
            Err(e) => {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove a repo layer")
            }
        }
    }
    Ok(report)
}

/// Whether `path`'s inode changed (was made or renamed) less than `grace` ago.
pub(crate) fn changed_within(path: &Path, grace: Duration) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let changed = SystemTime::UNIX_EPOCH
        + Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec() as u32);
    changed.elapsed().map_or(true, |age| age < grace)
}
