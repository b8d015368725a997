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
        Ok(self
            .store
            .credentials(user, alg.as_str())
            .await?
            .and_then(from_stored))
    }

    async fn check_password(&self, user: &UserRef, password: &str) -> Result<bool, AuthError> {
        // SHA-256 entry is always written; fall back to any hash an import may have left.
        let mut found = None;
        for alg in [HashAlg::Sha256, HashAlg::Sha512, HashAlg::Sha1] {
            if let Some(keys) = self.scram_keys(user, alg).await? {
                found = Some(keys);
                break;
            }
        }
        // An unknown user costs the same key derivation as a known one, so the answer's timing
        // does not tell whether the account exists.
        let (keys, known) = match found {
            Some(k) => (k, true),
            None => (dummy_keys(self.iterations), false),
        };
        let password = password.to_owned();
        // PBKDF2 is deliberately slow: off the async workers, so routing never waits for it.
        let ok = blocking(move || keys.verify_password(&password)).await?;
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
}
