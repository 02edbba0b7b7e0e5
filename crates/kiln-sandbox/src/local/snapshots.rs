//! Snapshots of the local provider: a sandbox's writable layer copied (frozen meanwhile) into
//! an immutable layer under `layers/`, layers merged into one, listed and deleted — refused
//! while a sandbox stands on them, and crash-safe (a half copy or half removal is a dot-named
//! directory the next open clears).

use super::{LocalProvider, layer, now_ms};
use crate::Provider;
use crate::local::cgroup::Cgroup;
use crate::{Error, Result, SandboxId, Snapshot, SnapshotId, SnapshotInfo};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

impl LocalProvider {
    pub(super) async fn snapshot_now(&self, id: &SandboxId) -> Result<Snapshot> {
        let sandbox = self.live_sandbox(id)?;
        let snapshot_id = SnapshotId::random();
        let layers = self.inner.config.data_dir.join("layers");
        let (tmp, dest) = (
            layers.join(format!(".{snapshot_id}")),
            layers.join(snapshot_id.as_str()),
        );
        let diff = self.sandbox_dir(id.as_str()).join("upper/diff");
        let cgroup = Cgroup::of(
            self.inner.cgroups,
            &self.inner.config.cgroup_parent,
            id.as_str(),
        );
        let size = tokio::task::spawn_blocking(move || -> Result<u64> {
            cgroup.set_frozen(true)?;
            let copied = layer::copy_tree(&diff, &tmp);
            let thawed = cgroup.set_frozen(false);
            let size = copied.inspect_err(|_| {
                let _ = fs::remove_dir_all(&tmp);
            })?;
            thawed?;
            layer::install_durably(&tmp, &dest)?;
            Ok(size)
        })
        .await
        .expect("snapshot does not panic")?;
        let mut image = sandbox.info().spec.image.clone();
        image.layers.push(layers.join(snapshot_id.as_str()));
        Ok(Snapshot {
            id: snapshot_id,
            source: id.clone(),
            image,
            size_bytes: size,
        })
    }

    pub(super) async fn merge_layers(&self, layers: &[PathBuf]) -> Result<SnapshotInfo> {
        let dir = self.layers_dir();
        for layer in layers {
            let ours = layer.parent() == Some(dir.as_path())
                && layer
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(SnapshotId::parse)
                    .is_some();
            if !ours {
                return Err(Error::InvalidSpec(format!(
                    "{} is not a snapshot of this provider",
                    layer.display()
                )));
            }
        }
        let id = SnapshotId::random();
        let (tmp, dest) = (dir.join(format!(".{id}")), dir.join(id.as_str()));
        let layers = layers.to_vec();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let sources: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
            layer::merge_layers(&sources, &tmp).inspect_err(|_| {
                let _ = fs::remove_dir_all(&tmp);
            })?;
            layer::install_durably(&tmp, &dest)
        })
        .await
        .expect("merging does not panic")?;
        let created_ms = now_ms();
        Ok(SnapshotInfo {
            id: id.clone(),
            layer: self.layers_dir().join(id.as_str()),
            created_ms,
        })
    }

    pub(super) async fn list_snapshot_layers(&self) -> Result<Vec<SnapshotInfo>> {
        let layers = self.layers_dir();
        tokio::task::spawn_blocking(move || list_snapshots(&layers))
            .await
            .expect("listing does not panic")
    }

    /// Renames the layer out of the way first, so a crash half-way through the removal leaves
    /// a `.trash-…` directory that the next open removes, never a half layer under its name.
    pub(super) async fn delete_snapshot_layer(&self, id: &SnapshotId) -> Result<()> {
        let layer = self.layers_dir().join(id.as_str());
        if !layer.is_dir() {
            return Err(Error::SnapshotNotFound(id.clone()));
        }
        if let Some(user) = self
            .list()
            .await?
            .into_iter()
            .find(|info| info.spec.image.layers.contains(&layer))
        {
            return Err(Error::InUse(id.clone(), user.id));
        }
        let trash = self.layers_dir().join(format!(".trash-{id}"));
        fs::rename(&layer, &trash).map_err(Error::io("deleting a snapshot", &layer))?;
        tokio::task::spawn_blocking(move || {
            fs::remove_dir_all(&trash).map_err(Error::io("deleting a snapshot", &trash))
        })
        .await
        .expect("removal does not panic")
    }
}

impl LocalProvider {
    pub(super) fn layers_dir(&self) -> PathBuf {
        self.inner.config.data_dir.join("layers")
    }
}

/// Lists snapshot layers (`layers/snap-…`), oldest first; the inode change time is when the
/// layer was installed (the rename), whatever times its contents carry.
fn list_snapshots(layers: &Path) -> Result<Vec<SnapshotInfo>> {
    let mut snapshots: Vec<SnapshotInfo> = fs::read_dir(layers)
        .map_err(Error::io("listing layers", layers))?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let id = SnapshotId::parse(entry.file_name().to_str()?)?;
            let meta = entry.metadata().ok()?;
            let created_ms =
                (meta.ctime().max(0) as u64) * 1000 + meta.ctime_nsec() as u64 / 1_000_000;
            Some(SnapshotInfo {
                id,
                layer: entry.path(),
                created_ms,
            })
        })
        .collect();
    snapshots.sort_by_key(|s| (s.created_ms, s.id.clone()));
    Ok(snapshots)
}

/// Removes what a crash can leave among the layers: layers being deleted (`.trash-…`) and
/// snapshots copied half-way (`.snap-…`, once they are an hour old).
pub(super) fn clean_layers(layers: &Path) -> Result<()> {
    for entry in fs::read_dir(layers).map_err(Error::io("listing layers", layers))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = name.starts_with(".trash-")
            || (name.starts_with(".snap-")
                && entry
                    .metadata()
                    .is_ok_and(|m| now_ms() / 1000 > (m.ctime().max(0) as u64) + 3600));
        if stale {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(Error::io("removing a stale layer", &path))?;
        }
    }
    Ok(())
}
