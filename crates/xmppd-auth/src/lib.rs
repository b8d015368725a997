//! Authentication backends for xmppd behind one trait, [`AuthBackend`].
//!
//! [`InternalBackend`] keeps accounts in the storage crate's [`CredentialStore`] as SCRAM salted
//! keys for SHA-1, SHA-256 and SHA-512 — never a password. An LDAP backend plugs in behind the
//! same trait; backends that can only check a password (LDAP binds) say so through
//! [`AuthBackend::supports_scram`], and the c2s layer then offers PLAIN only.
//!
//! Architecture invariant: no network protocol here, no XMPP; the SASL exchange itself is
//! `xmppd-sasl`'s job.

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_sasl::{HashAlg, ScramKeys};
use xmppd_storage::{CredentialStore, StorageError, StoredScram, UserRef};

/// Default PBKDF2 iteration count for new credentials.
pub const DEFAULT_ITERATIONS: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The backend could not answer now (storage or directory down): `<temporary-auth-failure/>`.
    #[error("temporary failure: {0}")]
    Temporary(String),
    #[error("no such user")]
    NoSuchUser,
    /// The password was right, but the backend keeps the account out (a directory's
    /// disabled or expired account): `<account-disabled/>` (RFC 6120 §6.5.1).
    #[error("the account is disabled")]
    AccountDisabled,
    #[error("user already exists")]
    AlreadyExists,
    #[error("invalid password: {0}")]
    InvalidPassword(String),
    #[error("operation not supported by this backend")]
    Unsupported,
    /// The name belonged to an account removed recently; it is kept until `until_ms` (Unix
    /// milliseconds).
    #[error("the name was in use until recently")]
    Tombstoned { until_ms: i64 },
}

impl From<StorageError> for AuthError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::AlreadyExists => AuthError::AlreadyExists,
            StorageError::NoSuchUser => AuthError::NoSuchUser,
            StorageError::Tombstoned { until_ms } => AuthError::Tombstoned { until_ms },
            StorageError::Backend(m) => AuthError::Temporary(m),
            // Not an account's error (room writes only): a failure to retry, as any backend's.
            e @ StorageError::LeaseLost => AuthError::Temporary(e.to_string()),
        }
    }
}

/// Where accounts and their secrets live.
#[async_trait]
pub trait AuthBackend: Send + Sync {
    /// A short name for logs ("internal", "ldap").
    fn name(&self) -> &'static str;
    /// Whether [`AuthBackend::scram_keys`] can answer (SCRAM mechanisms are offered only then).
    fn supports_scram(&self) -> bool;
    /// `@suffix`es a PLAIN user name may carry and that do not belong to the account name
    /// (a directory's userPrincipalName suffixes), lowercase.
    fn login_suffixes(&self) -> Vec<String> {
        Vec::new()
    }
    /// The SCRAM keys of `user` for `alg`; `Ok(None)` if the user is unknown.
    async fn scram_keys(
        &self,
        user: &UserRef,
        alg: HashAlg,
    ) -> Result<Option<ScramKeys>, AuthError>;
    /// Checks a plaintext password (SASL PLAIN). `Ok(false)` for unknown users and wrong passwords alike.
    async fn check_password(&self, user: &UserRef, password: &str) -> Result<bool, AuthError>;
    async fn user_exists(&self, user: &UserRef) -> Result<bool, AuthError>;
    /// Creates an account. `Unsupported` for read-only backends.
    async fn create_user(&self, user: &UserRef, password: &str) -> Result<(), AuthError>;
    /// Changes a password. `Unsupported` for read-only backends.
    async fn set_password(&self, user: &UserRef, password: &str) -> Result<(), AuthError>;
}

/// Accounts in xmppd's own store.
pub struct InternalBackend {
    store: Arc<dyn CredentialStore>,
    iterations: u32,
}

impl InternalBackend {
    pub fn new(store: Arc<dyn CredentialStore>) -> Self {
        InternalBackend {
            store,
            iterations: DEFAULT_ITERATIONS,
        }
    }

    pub fn with_iterations(store: Arc<dyn CredentialStore>, iterations: u32) -> Self {
        InternalBackend { store, iterations }
    }

    async fn stored_keys(
        &self,
        user: &UserRef,
        alg: HashAlg,
    ) -> Result<Option<ScramKeys>, AuthError> {
        Ok(self
            .store
            .credentials(user, alg.as_str())
            .await?
            .and_then(from_stored))
    }

    /// After a PLAIN login proved `password`: derives the keys of the hashes `stored` lacks
    /// (an account imported with SCRAM-SHA-1 keys only) and stores them beside the others, so
    /// every SCRAM mechanism works from now on. A failure here costs only the upgrade: the
    /// login goes on, and the next PLAIN login tries again.
    async fn complete_keys(&self, user: &UserRef, password: &str, stored: Vec<ScramKeys>) {
        let (pw, iterations) = (password.to_owned(), self.iterations);
        let have: Vec<HashAlg> = stored.iter().map(|k| k.alg).collect();
        let derived = blocking(move || {
            HashAlg::ALL
                .into_iter()
                .filter(|alg| !have.contains(alg))
                .map(|alg| ScramKeys::generate(alg, &pw, iterations))
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
        let added = match derived {
            Ok(Ok(keys)) => keys,
            Ok(Err(e)) => {
                return tracing::warn!(user = %user.jid(), error = %e, "deriving missing SCRAM keys")
            }
            Err(e) => {
                return tracing::warn!(user = %user.jid(), error = %e, "deriving missing SCRAM keys")
            }
        };
        let names: Vec<&str> = added.iter().map(|k| k.alg.as_str()).collect();
        let all: Vec<StoredScram> = stored.iter().chain(&added).map(to_stored).collect();
        match self.store.set_credentials(user, &all).await {
            Ok(()) => {
                tracing::info!(user = %user.jid(), hashes = ?names, "SCRAM keys derived at a PLAIN login")
            }
            Err(e) => tracing::warn!(user = %user.jid(), error = %e, "storing derived SCRAM keys"),
        }
    }

    async fn derive_all_blocking(&self, password: &str) -> Result<Vec<StoredScram>, AuthError> {
        let (password, iterations) = (password.to_owned(), self.iterations);
        blocking(move || derive_all(&password, iterations)).await?
    }
}

/// Runs CPU-heavy key derivation (PBKDF2) on the blocking pool, so that it never stalls the
/// async workers that carry every other connection. Other backends use it too.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AuthError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AuthError::Temporary(format!("key derivation failed: {e}")))
}

/// Keys no password matches in practice (random salt), for timing-equal failures.
fn dummy_keys(iterations: u32) -> ScramKeys {
    ScramKeys {
        alg: HashAlg::Sha256,
        salt: rand_salt(),
        iterations,
        stored_key: vec![0; 32],
        server_key: vec![0; 32],
    }
}

fn rand_salt() -> Vec<u8> {
    (0..16).map(|_| rand::random::<u8>()).collect()
}

/// SCRAM keys for every hash, with fresh salts.
fn derive_all(password: &str, iterations: u32) -> Result<Vec<StoredScram>, AuthError> {
    if password.is_empty() {
        return Err(AuthError::InvalidPassword("empty password".into()));
    }
    HashAlg::ALL
        .iter()
        .map(|alg| {
            ScramKeys::generate(*alg, password, iterations)
                .map(|k| to_stored(&k))
                .map_err(|e| AuthError::InvalidPassword(e.to_string()))
        })
        .collect()
}

/// Converts SASL keys to their stored form.
pub fn to_stored(k: &ScramKeys) -> StoredScram {
    StoredScram {
        hash: k.alg.as_str().to_owned(),
        salt: k.salt.clone(),
        iterations: k.iterations,
        stored_key: k.stored_key.clone(),
        server_key: k.server_key.clone(),
    }
}

/// Converts stored credentials back to SASL keys; `None` for an unknown hash name.
pub fn from_stored(s: StoredScram) -> Option<ScramKeys> {
    Some(ScramKeys {
        alg: HashAlg::parse(&s.hash)?,
        salt: s.salt,
        iterations: s.iterations,
        stored_key: s.stored_key,
        server_key: s.server_key,
    })
}

#[async_trait]
impl AuthBackend for InternalBackend {
    fn name(&self) -> &'static str {
        "internal"
    }

    fn supports_scram(&self) -> bool {
        true
    }

    async fn scram_keys(
        &self,
        user: &UserRef,
        alg: HashAlg,
    ) -> Result<Option<ScramKeys>, AuthError> {
        let keys = self.stored_keys(user, alg).await?;
        if keys.is_none() && self.store.user_exists(user).await? {
            // An account imported with another hash's keys only: this mechanism fails like a
            // wrong password (RFC 6120 §6.5.10 <not-authorized/>) until a PLAIN login derives
            // the keys (`check_password`).
            tracing::info!(
                user = %user.jid(),
                mechanism = %format!("SCRAM-{}", alg.as_str()),
                "the account has no keys for this mechanism yet: it gains them at its next \
                 PLAIN login; until then it can use the hashes it has"
            );
        }
        Ok(keys)
    }

    async fn check_password(&self, user: &UserRef, password: &str) -> Result<bool, AuthError> {
        let mut stored = Vec::new();
        for alg in HashAlg::ALL {
            if let Some(keys) = self.stored_keys(user, alg).await? {
                stored.push(keys);
            }
        }
        // SHA-256 is written for every account made here; an import may have left any hash.
        let preferred = [HashAlg::Sha256, HashAlg::Sha512, HashAlg::Sha1]
            .into_iter()
            .find_map(|alg| stored.iter().find(|k| k.alg == alg).cloned());
        // An unknown user costs the same key derivation as a known one, so the answer's timing
        // does not tell whether the account exists.
        let (keys, known) = match preferred {
            Some(k) => (k, true),
            None => (dummy_keys(self.iterations), false),
        };
        let pw = password.to_owned();
        // PBKDF2 is deliberately slow: off the async workers, so routing never waits for it.
        let ok = blocking(move || keys.verify_password(&pw)).await?;
        if known && ok && stored.len() < HashAlg::ALL.len() {
            self.complete_keys(user, password, stored).await;
        }
        Ok(known && ok)
    }

    async fn user_exists(&self, user: &UserRef) -> Result<bool, AuthError> {
        Ok(self.store.user_exists(user).await?)
    }

    async fn create_user(&self, user: &UserRef, password: &str) -> Result<(), AuthError> {
        let creds = self.derive_all_blocking(password).await?;
        Ok(self.store.create_user(user, &creds).await?)
    }

    async fn set_password(&self, user: &UserRef, password: &str) -> Result<(), AuthError> {
        let creds = self.derive_all_blocking(password).await?;
        Ok(self.store.set_credentials(user, &creds).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmppd_storage::SqliteStore;

    fn backend() -> InternalBackend {
        let store: Arc<dyn CredentialStore> = Arc::new(SqliteStore::open_in_memory().unwrap());
        InternalBackend::with_iterations(store, 64)
    }

    #[tokio::test]
    async fn passwords_are_checked_against_stored_keys_only() {
        let b = backend();
        let alice = UserRef::new("alice", "localhost");
        b.create_user(&alice, "s3cret").await.unwrap();
        assert!(b.check_password(&alice, "s3cret").await.unwrap());
        assert!(!b.check_password(&alice, "wrong").await.unwrap());
        assert!(!b
            .check_password(&UserRef::new("nobody", "localhost"), "s3cret")
            .await
            .unwrap());
        for alg in HashAlg::ALL {
            let keys = b
                .scram_keys(&alice, alg)
                .await
                .unwrap()
                .expect("keys for every hash");
            assert_eq!(keys.iterations, 64);
            assert!(keys.verify_password("s3cret"));
        }
        assert!(matches!(
            b.create_user(&alice, "x").await,
            Err(AuthError::AlreadyExists)
        ));
        b.set_password(&alice, "n3w").await.unwrap();
        assert!(!b.check_password(&alice, "s3cret").await.unwrap());
        assert!(b.check_password(&alice, "n3w").await.unwrap());
        assert!(matches!(
            b.create_user(&alice, "").await,
            Err(AuthError::InvalidPassword(_))
        ));
    }

    #[tokio::test]
    async fn an_account_with_sha1_keys_only_gains_the_others_at_a_plain_login() {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let b = InternalBackend::with_iterations(store.clone(), 64);
        let bob = UserRef::new("bob", "localhost");
        let sha1 = ScramKeys::generate(HashAlg::Sha1, "imported", 64).unwrap();
        store.create_user(&bob, &[to_stored(&sha1)]).await.unwrap();
        assert!(b.scram_keys(&bob, HashAlg::Sha256).await.unwrap().is_none());

        assert!(!b.check_password(&bob, "wrong").await.unwrap());
        assert!(b.scram_keys(&bob, HashAlg::Sha256).await.unwrap().is_none());

        assert!(b.check_password(&bob, "imported").await.unwrap());
        for alg in [HashAlg::Sha256, HashAlg::Sha512] {
            let keys = (b.scram_keys(&bob, alg).await.unwrap()).expect("derived at the login");
            assert!(keys.verify_password("imported"));
        }
        // The keys it came with stay as they were.
        assert_eq!(b.scram_keys(&bob, HashAlg::Sha1).await.unwrap(), Some(sha1));
    }
}
