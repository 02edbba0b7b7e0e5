//! The image registry: every image build of every repo, good or failed, with what it was built
//! from (commit, parent image, lockfile hash) and what it produced (layers, log, size). Sessions
//! start from a repo's newest ready image; a failed build is kept for its log and error.

use crate::db::{json_col, now_ms};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::stored::{StoredImageSecret, StoredRuntime};
use kiln_protocol::api::{ImageRuntime, ImageSecret};
use rusqlite::{OptionalExtension, params};
use std::path::PathBuf;

/// One image build's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// `img-` and 16 hex digits.
    pub id: String,
    pub repo: String,
    /// The commit the image's checkout is at.
    pub commit: String,
    /// The image this one was built on (incremental builds).
    pub parent: Option<String>,
    /// Read-only layers, bottom first: a sandbox's image.
    pub layers: Vec<PathBuf>,
    /// sha256 over the dependency manifests; setup reruns when it changes.
    pub lockfile_hash: String,
    /// Whether this build ran the setup commands (else it reused the parent's dependencies).
    pub setup_ran: bool,
    /// `None` when ready; the reason when the build failed.
    pub error: Option<String>,
    /// The build's output, capped.
    pub log: String,
    pub duration_ms: u64,
    pub size_bytes: u64,
    pub created_at_ms: i64,
    /// The env and limits of every sandbox made from the image.
    pub runtime: ImageRuntime,
    /// When the garbage collector removed the image's layers.
    pub collected_at_ms: Option<i64>,
    /// The repo secrets the build's steps got (names and fingerprints, never values), by name.
    pub secrets: Vec<ImageSecret>,
}

impl ImageRecord {
    /// Built, and its layers are still there.
    pub fn is_ready(&self) -> bool {
        self.error.is_none() && self.collected_at_ms.is_none()
    }
}

const COLUMNS: &str = "id, repo, commit_sha, parent, layers, lockfile_hash, setup_ran, error, \
                       log, duration_ms, size_bytes, created_at_ms, runtime, collected_at_ms, secrets";

fn image_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRecord> {
    let layers: Vec<PathBuf> = json_col(row, 4)?;
    Ok(ImageRecord {
        id: row.get(0)?,
        repo: row.get(1)?,
        commit: row.get(2)?,
        parent: row.get(3)?,
        layers,
        lockfile_hash: row.get(5)?,
        setup_ran: row.get(6)?,
        error: row.get(7)?,
        log: row.get(8)?,
        duration_ms: row.get::<_, i64>(9)? as u64,
        size_bytes: row.get::<_, i64>(10)? as u64,
        created_at_ms: row.get(11)?,
        runtime: json_col::<StoredRuntime>(row, 12)?.into(),
        collected_at_ms: row.get(13)?,
        secrets: json_col::<Vec<StoredImageSecret>>(row, 14)?
            .into_iter()
            .map(ImageSecret::from)
            .collect(),
    })
}

impl Store {
    /// Records a finished build (ready or failed). `created_at_ms` is set now.
    pub async fn record_image(&self, image: &ImageRecord) -> Result<ImageRecord> {
        let mut image = image.clone();
        image.created_at_ms = now_ms();
        let layers = serde_json::to_string(&image.layers)?;
        let runtime = serde_json::to_string(&StoredRuntime::from(&image.runtime))?;
        let secrets = serde_json::to_string(
            &image
                .secrets
                .iter()
                .map(StoredImageSecret::from)
                .collect::<Vec<_>>(),
        )?;
        self.control(move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO images ({COLUMNS}, status)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, NULL, ?15, ?14)"
                ),
                params![
                    image.id,
                    image.repo,
                    image.commit,
                    image.parent,
                    layers,
                    image.lockfile_hash,
                    image.setup_ran,
                    image.error,
                    image.log,
                    image.duration_ms as i64,
                    image.size_bytes as i64,
                    image.created_at_ms,
                    runtime,
                    if image.error.is_none() {
                        "ready"
                    } else {
                        "failed"
                    },
                    secrets,
                ],
            )
            .map_err(|e| match Error::from(e) {
                e if e.is_unique_violation() => {
                    Error::Conflict(format!("image {} exists", image.id))
                }
                e => e,
            })?;
            Ok(image)
        })
        .await
    }

    /// The repo's newest ready image, if it has one.
    pub async fn latest_image(&self, repo: &str) -> Result<Option<ImageRecord>> {
        let repo = repo.to_string();
        self.control(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM images
                         WHERE repo = ?1 AND status = 'ready' AND collected_at_ms IS NULL
                         ORDER BY created_at_ms DESC, rowid DESC LIMIT 1"
                    ),
                    [repo],
                    image_row,
                )
                .optional()?)
        })
        .await
    }

    /// The repo's newest finished build when it failed after its newest ready image (or with no
    /// ready image at all): its id, error and when it ended. Sessions then start from a stale
    /// image (or none), and people should be told.
    pub async fn failed_since_ready(&self, repo: &str) -> Result<Option<(String, String, i64)>> {
        let repo = repo.to_string();
        self.control(move |conn| {
            let newest = conn
                .query_row(
                    "SELECT id, error, created_at_ms, status FROM images
                     WHERE repo = ?1 AND status IN ('ready', 'failed')
                     ORDER BY created_at_ms DESC, rowid DESC LIMIT 1",
                    [repo],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, Option<String>>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, String>(3)?,
                        ))
                    },
                )
                .optional()?;
            Ok(newest
                .filter(|(.., status)| status == "failed")
                .map(|(id, error, at, _)| (id, error.unwrap_or_default(), at)))
        })
        .await
    }

    /// One build of the repo; `NotFound` when the repo has no such image.
    pub async fn image(&self, repo: &str, id: &str) -> Result<ImageRecord> {
        let (repo, id) = (repo.to_string(), id.to_string());
        self.control(move |conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM images WHERE repo = ?1 AND id = ?2"),
                [&repo, &id],
                image_row,
            )
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("image {id:?} of repo {repo:?}")))
        })
        .await
    }

    /// Every build of the repo, newest first.
    pub async fn images(&self, repo: &str) -> Result<Vec<ImageRecord>> {
        let repo = repo.to_string();
        self.control(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM images WHERE repo = ?1
                 ORDER BY created_at_ms DESC, rowid DESC"
            ))?;
            let images = stmt
                .query_map([repo], image_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(images)
        })
        .await
    }
}

impl Store {
    /// Marks an image collected: its layers are gone, its record stays (with the log dropped).
    pub async fn mark_image_collected(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.control(move |conn| {
            conn.execute(
                "UPDATE images SET collected_at_ms = ?2, log = '', layers = '[]'
                 WHERE id = ?1 AND collected_at_ms IS NULL",
                params![id, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    /// Every image of every repo that still has its layers (ready or failed), newest first.
    pub async fn uncollected_images(&self) -> Result<Vec<ImageRecord>> {
        self.control(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM images WHERE collected_at_ms IS NULL
                 ORDER BY created_at_ms DESC, rowid DESC"
            ))?;
            let images = stmt
                .query_map([], image_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(images)
        })
        .await
    }
}
