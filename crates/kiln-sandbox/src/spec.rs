//! What a sandbox is made from and what it may use: plain data shared by every provider.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Names a sandbox. Random, URL-safe, short enough for socket paths and cgroup names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SandboxId(String);

/// Names a snapshot (and the layer that holds it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotId(String);

macro_rules! random_id {
    ($ty:ident, $prefix:literal) => {
        impl $ty {
            pub fn random() -> Self {
                $ty(format!(
                    concat!($prefix, "{:016x}"),
                    crate::local::random_u64()
                ))
            }

            /// Accepts only ids this type could have produced, so an id from a request can be
            /// used in paths and cgroup names without further checks.
            pub fn parse(s: &str) -> Option<Self> {
                let hex = s.strip_prefix($prefix)?;
                (hex.len() == 16
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
                .then(|| $ty(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
random_id!(SandboxId, "sb-");
random_id!(SnapshotId, "snap-");

/// A root filesystem: read-only layers stacked bottom to top, like an OCI image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// Directories, bottom first. Overlay whiteouts in upper layers hide files of lower ones.
    pub layers: Vec<PathBuf>,
    /// Bind the host's `/usr` (and the few `/etc` entries it needs: alternatives, certificates)
    /// read-only under the layers' files. The quick base image on a fresh machine; a real rootfs
    /// layer (see `scripts/make-rootfs`) does without it.
    pub host_system: bool,
}

impl ImageSpec {
    /// The host's system, nothing else: a shell, git and the host's tools.
    pub fn host() -> Self {
        ImageSpec {
            layers: Vec::new(),
            host_system: true,
        }
    }
}

/// Resource limits. Exceeding one kills or fails inside the sandbox only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory including the page cache and the writable layer's pages (it lives in tmpfs).
    pub memory_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// Relative CPU share, 1..=10000, 100 is the default weight (cgroup v2 semantics).
    pub cpu_weight: Option<u32>,
    /// Size cap of the writable layer.
    pub disk_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: Some(4 << 30),
            pids: Some(1024),
            cpu_weight: None,
            disk_bytes: 8 << 30,
        }
    }
}

/// The name of the egress proxy's socket in the directory a proxied sandbox is given.
pub const EGRESS_SOCKET_NAME: &str = "proxy.sock";
/// Where a proxied sandbox sees that directory, and the socket in it.
pub const EGRESS_DIR: &str = "/.kiln/egress";
pub const EGRESS_SOCKET: &str = "/.kiln/egress/proxy.sock";
/// The loopback port in a proxied sandbox that the guest bridges to [`EGRESS_SOCKET`].
pub const EGRESS_PORT: u16 = 3128;

/// The environment a proxied sandbox's processes get: both cases, since tools disagree.
pub fn proxy_env() -> Vec<(String, String)> {
    let proxy = format!("http://127.0.0.1:{EGRESS_PORT}");
    let none = "localhost,127.0.0.1,::1".to_string();
    [
        ("HTTP_PROXY", &proxy),
        ("HTTPS_PROXY", &proxy),
        ("http_proxy", &proxy),
        ("https_proxy", &proxy),
        ("NO_PROXY", &none),
        ("no_proxy", &none),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect()
}

/// What the sandbox may reach over the network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum NetworkPolicy {
    /// Its own loopback only. Nothing on the host (the kiln API, other services) is reachable.
    #[default]
    Isolated,
    /// Still no interface but loopback; outbound HTTP(S) goes through a proxy the caller
    /// serves on the host Unix socket `dir/`[`EGRESS_SOCKET_NAME`] (e.g. `kiln_egress::serve`,
    /// which enforces the policy). The directory appears read-only in the sandbox at
    /// [`EGRESS_DIR`], the guest bridges `127.0.0.1:`[`EGRESS_PORT`] to the socket, and every
    /// process gets `HTTP_PROXY`/`HTTPS_PROXY` (both cases) pointing there and `NO_PROXY` for
    /// loopback. The directory, not the socket, is bound, so a proxy restarted after a crash
    /// serves a sandbox that outlived it on a new socket at the same path. The socket and the
    /// directories above it must be reachable by the sandbox uid.
    Proxy { dir: std::path::PathBuf },
}

/// Who the sandbox's processes are inside it. Either way they are the one unprivileged sandbox
/// uid on the host, without capabilities, under the same seccomp filter: a user namespace maps
/// a single uid, so `Root` only changes which uid inside that one is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxUser {
    /// `kiln`, uid and gid 1000, home `/home/kiln`: sessions, pools, most build steps.
    #[default]
    Kiln,
    /// uid and gid 0, home `/root`: an image build's steps that install system packages. It
    /// owns the files of a layer the provider adopted ([`crate::Provider::adopt_system_layer`]),
    /// so `apt-get install` works there; files of other layers stay out of its reach.
    Root,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub image: ImageSpec,
    /// Who runs inside; sandboxes recorded before this field existed ran as `kiln`.
    #[serde(default)]
    pub user: SandboxUser,
    /// Environment of every process in the sandbox; exec requests may add to it.
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    /// Free-form tags (session, repo, pool) for listing and cleanup.
    pub labels: BTreeMap<String, String>,
    pub network: NetworkPolicy,
    /// A host directory shown read-only at [`DOCS_DIR`]: what the agent may read about kiln and
    /// about the environment it works in. Sandboxes recorded before this field had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<PathBuf>,
}

/// Where a sandbox sees its [`SandboxSpec::docs`] directory.
pub const DOCS_DIR: &str = "/.kiln/docs";

/// A sandbox as listed by its provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub id: SandboxId,
    pub spec: SandboxSpec,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// The captured writable layer of a sandbox, deletions included, on top of the image it ran.
/// Immutable; [`Snapshot::image`] is what a restored sandbox is created from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub source: SandboxId,
    pub image: ImageSpec,
    /// Bytes of file contents in the captured layer.
    pub size_bytes: u64,
}

/// A snapshot as listed by its provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: SnapshotId,
    /// The layer an [`ImageSpec`] names to use it.
    pub layer: PathBuf,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub created_ms: u64,
}
