//! HTTP file upload (XEP-0363): a component on `upload.HOST` that hands out upload slots, and
//! the HTTP service that takes the PUTs and serves the GETs under [`PATH`], files streamed to
//! and from disk.
//!
//! - [`component`]: disco (identity `store/file`, the `max-file-size` form of XEP-0363 §3) and
//!   slot requests (§4), refused as §5 says: too large (with the limit), not a local account,
//!   over the quota or the server's cap, a bad name or size.
//! - [`http`]: PUT checked against its slot (signature and expiry, exact length, content type,
//!   one upload per slot), written to a temporary file and renamed; GET and HEAD with ranges,
//!   and headers that keep a browser from running what it downloads; CORS for web clients.
//! - [`store`]: the slots, on SQLite, PostgreSQL or MariaDB; [`name`]: names, ids and URL segments; [`sign`]: the
//!   signed PUT URLs and the tokens of external upload services; [`expiry`]: the job that
//!   deletes old files.
//!
//! With an external upload service ([`Uploads::external`]) the component only signs slots for
//! it; files never reach this server.

pub mod component;
pub mod expiry;
pub mod http;
pub mod name;
pub mod sign;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use component::UploadComponent;
pub use http::UploadHttp;
use store::UploadStore;

/// The HTTP path the service owns.
pub const PATH: &str = "/upload/";

/// Limits and lifetimes (`[upload]`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_file_bytes: u64,
    /// `None`: no quota.
    pub quota_bytes_per_user: Option<u64>,
    /// `None`: no cap.
    pub max_total_bytes: Option<u64>,
    /// `None`: files are kept.
    pub expire_after: Option<Duration>,
    pub expire_interval: Duration,
    pub slot_lifetime: Duration,
    /// Longest wait for the next part of a PUT's body.
    pub idle_timeout: Duration,
    /// Origins allowed by CORS (`*`: any), lowercased.
    pub cors_origins: Vec<String>,
}

/// Where clients reach [`PATH`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicUrl {
    /// Configured, without a final `/`.
    Fixed(String),
    /// A listener of ours, named by the account's host.
    Listener { scheme: &'static str, port: u16 },
}

/// Files kept by this server.
pub(crate) struct Files {
    pub(crate) store: Arc<dyn UploadStore>,
    dir: PathBuf,
    /// This process's node name: it holds the slots it is uploading ([`UploadStore::claim`]).
    pub(crate) holder: String,
    /// Where this process writes files until they are complete (`tmp/NODE`): processes
    /// sharing the directory never touch each other's.
    tmp: PathBuf,
    pub(crate) key: Vec<u8>,
    public_url: OnceLock<PublicUrl>,
}

impl Files {
    /// Where a stored file lives: its slot id, never the client's name.
    pub(crate) fn path(&self, id: &str) -> PathBuf {
        debug_assert!(name::is_id(id));
        self.dir.join("files").join(id)
    }

    /// Where a file is written until it is complete.
    pub(crate) fn temp_path(&self, id: &str) -> PathBuf {
        self.tmp.join(id)
    }

    /// The URL of [`PATH`] for an account of `host`, without a final `/`.
    pub(crate) fn base_url(&self, host: &str) -> Option<String> {
        Some(match self.public_url.get()? {
            PublicUrl::Fixed(url) => url.clone(),
            PublicUrl::Listener { scheme, port } => {
                format!("{scheme}://{host}:{port}{}", PATH.trim_end_matches('/'))
            }
        })
    }
}

pub(crate) enum Backend {
    Local(Files),
    External { url: String, secret: Vec<u8> },
}

/// The upload service's state, shared by its components, its HTTP service and its expiry job.
pub struct Uploads {
    pub(crate) settings: Settings,
    pub(crate) backend: Backend,
}

impl Uploads {
    /// Files kept in `dir` (created owner-only), slots in `store`; URLs signed with `secret`,
    /// or a stored one. `holder` is this process's node name: the uploads a stop of this
    /// node interrupted are issued again and their partial files removed, while those of
    /// other processes on the same database (and directory) go on.
    pub async fn local(
        settings: Settings,
        store: Arc<dyn UploadStore>,
        dir: &Path,
        holder: &str,
        secret: Option<String>,
        public_url: Option<String>,
    ) -> Result<Arc<Uploads>, String> {
        let tmp = dir.join("tmp").join(holder_dir(holder));
        for path in [dir.join("files"), tmp.clone()] {
            xmppd_storage::create_private_dir_all(&path)
                .map_err(|e| format!("creating {}: {e}", path.display()))?;
        }
        // This node's partial files, and those of versions that wrote them in `tmp` itself.
        for dir in [&tmp, &dir.join("tmp")] {
            let entries =
                std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        (store.release_held(holder).await)
            .map_err(|e| format!("giving back interrupted uploads: {e}"))?;
        let key = match secret {
            Some(s) => s.into_bytes(),
            None => (store.secret().await).map_err(|e| format!("the upload secret: {e}"))?,
        };
        let files = Files {
            store,
            dir: dir.to_owned(),
            holder: holder.to_owned(),
            tmp,
            key,
            public_url: OnceLock::new(),
        };
        if let Some(url) = public_url {
            let _ = files.public_url.set(PublicUrl::Fixed(url));
        }
        Ok(Arc::new(Uploads {
            settings,
            backend: Backend::Local(files),
        }))
    }

    /// Slots on an external upload service at `url` (ending in `/`), signed with the secret
    /// shared with it (the scheme of [`sign::external_token`]).
    pub fn external(settings: Settings, url: String, secret: String) -> Arc<Uploads> {
        Arc::new(Uploads {
            settings,
            backend: Backend::External {
                url,
                secret: secret.into_bytes(),
            },
        })
    }

    /// Whether files are kept here (and the HTTP service must be routed).
    pub fn serves_files(&self) -> bool {
        matches!(self.backend, Backend::Local(_))
    }

    /// Without a configured public URL, slots point at this listener (TLS or not, its port).
    /// The first call counts.
    pub fn set_listener(&self, tls: bool, port: u16) {
        if let Backend::Local(files) = &self.backend {
            let scheme = if tls { "https" } else { "http" };
            let _ = files.public_url.set(PublicUrl::Listener { scheme, port });
        }
    }

    /// The quota and the cap (`None`: none).
    pub fn limits(&self) -> (Option<u64>, Option<u64>) {
        let s = &self.settings;
        (s.quota_bytes_per_user, s.max_total_bytes)
    }

    /// What the accounts hold here, the `limit` largest first, and the total of all; `None`
    /// when files are kept by an external service.
    pub async fn usage(
        &self,
        limit: usize,
    ) -> Option<Result<(Vec<store::Usage>, u64), xmppd_storage::StorageError>> {
        Some(self.files()?.store.usage(limit).await)
    }

    pub(crate) fn files(&self) -> Option<&Files> {
        match &self.backend {
            Backend::Local(files) => Some(files),
            Backend::External { .. } => None,
        }
    }
}

/// The directory name of `holder`'s partial files: the node name itself when it is a plain
/// name, else its bytes in hex (a node name is free text in the configuration).
fn holder_dir(holder: &str) -> String {
    let plain = !holder.is_empty()
        && !holder.starts_with('.')
        && (holder.bytes()).all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if plain {
        holder.to_owned()
    } else {
        format!("x{}", hex::encode(holder))
    }
}

#[cfg(test)]
mod tests {
    use super::holder_dir;

    #[test]
    fn a_node_name_becomes_a_directory_name_that_stays_inside_tmp() {
        assert_eq!(holder_dir("node-1.example"), "node-1.example");
        for (name, want) in [
            ("", "x"),
            ("..", "x2e2e"),
            ("a/b", "x612f62"),
            (".x", "x2e78"),
        ] {
            assert_eq!(holder_dir(name), want, "{name:?}");
        }
    }
}
