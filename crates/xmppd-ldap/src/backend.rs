//! [`LdapBackend`]: accounts live in the directory; xmppd only asks.
//!
//! PLAIN: search the user, bind as the entry. SCRAM needs keys derived from the password,
//! which a directory does not give out; with the SCRAM cache enabled, the keys are derived at
//! each successful PLAIN login and kept in the user-data store, and SCRAM logins use them after
//! checking that the user still exists in the directory. A password changed in the directory
//! therefore keeps working over SCRAM until the next PLAIN login replaces the cached keys.

use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use xmppd_auth::{AuthBackend, AuthError, DEFAULT_ITERATIONS};
use xmppd_sasl::{HashAlg, ScramKeys};
use xmppd_storage::{UserDataStore, UserRef};

use crate::directory::{Directory, Login};
use crate::LdapError;

/// User-data key prefix of the cached SCRAM keys; the hash name follows (`…:SHA-256`).
pub const SCRAM_CACHE_KEY_PREFIX: &str = "xmppd:ldap-scram:";

/// Authentication against an LDAP directory, optionally with cached SCRAM keys.
pub struct LdapBackend {
    dir: Arc<Directory>,
    /// Where SCRAM keys are cached; `None`: PLAIN only.
    scram_cache: Option<Arc<dyn UserDataStore>>,
}

impl LdapBackend {
    /// PLAIN only: nothing derived from passwords is kept.
    pub fn new(dir: Arc<Directory>) -> Self {
        LdapBackend {
            dir,
            scram_cache: None,
        }
    }

    /// Also offers SCRAM, with keys cached in `store` at each successful PLAIN login.
    pub fn with_scram_cache(dir: Arc<Directory>, store: Arc<dyn UserDataStore>) -> Self {
        LdapBackend {
            dir,
            scram_cache: Some(store),
        }
    }
}

/// Replaces the cached keys unless the cached SHA-256 keys already match `password`
/// (deriving three key sets on every login would cost more than checking one).
async fn refresh_cache(store: &dyn UserDataStore, user: &UserRef, password: &str) {
    let current = cached(store, user, HashAlg::Sha256).await.ok().flatten();
    let password = password.to_owned();
    let derived = match xmppd_auth::blocking(move || keys_to_cache(current, &password)).await {
        Ok(Some(derived)) => derived,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not derive SCRAM keys to cache");
            return;
        }
    };
    for keys in derived {
        if let Err(e) = store
            .set_data(user, &cache_key(keys.alg), &encode(&keys))
            .await
        {
            // The login itself succeeded; only the next SCRAM attempt will fail.
            tracing::warn!(error = %e, "could not cache SCRAM keys");
        }
    }
}

/// The PBKDF2 work of [`refresh_cache`], for the blocking pool: `None` when `current` already
/// matches `password`, else fresh keys for every hash.
fn keys_to_cache(current: Option<ScramKeys>, password: &str) -> Option<Vec<ScramKeys>> {
    #[cfg(test)]
    tests::note_derivation_thread();
    if current.is_some_and(|keys| keys.verify_password(password)) {
        return None;
    }
    let generate = |alg| ScramKeys::generate(alg, password, DEFAULT_ITERATIONS).ok();
    Some(HashAlg::ALL.into_iter().filter_map(generate).collect())
}

#[async_trait]
impl AuthBackend for LdapBackend {
    fn name(&self) -> &'static str {
        "ldap"
    }

    fn supports_scram(&self) -> bool {
        self.scram_cache.is_some()
    }

    fn login_suffixes(&self) -> Vec<String> {
        self.dir.upn_suffixes().to_vec()
    }

    async fn scram_keys(
        &self,
        user: &UserRef,
        alg: HashAlg,
    ) -> Result<Option<ScramKeys>, AuthError> {
        let Some(store) = &self.scram_cache else {
            return Ok(None);
        };
        // The cache never outlives the directory entry: a removed user cannot log in.
        if self
            .dir
            .find_user(&user.user)
            .await
            .map_err(temporary)?
            .is_none()
        {
            forget(store.as_ref(), user).await;
            return Ok(None);
        }
        cached(store.as_ref(), user, alg).await
    }

    async fn check_password(&self, user: &UserRef, password: &str) -> Result<bool, AuthError> {
        match self
            .dir
            .check_password(&user.user, password)
            .await
            .map_err(temporary)?
        {
            Login::Accepted => {
                if let Some(store) = &self.scram_cache {
                    refresh_cache(store.as_ref(), user, password).await;
                }
                Ok(true)
            }
            Login::WrongPassword => Ok(false),
            Login::Disabled => Err(AuthError::AccountDisabled),
            Login::UnknownUser => {
                if let Some(store) = &self.scram_cache {
                    forget(store.as_ref(), user).await;
                }
                Ok(false)
            }
        }
    }

    async fn user_exists(&self, user: &UserRef) -> Result<bool, AuthError> {
        let dn = self.dir.find_user(&user.user).await.map_err(temporary)?;
        Ok(dn.is_some())
    }

    async fn create_user(&self, _user: &UserRef, _password: &str) -> Result<(), AuthError> {
        Err(AuthError::Unsupported)
    }

    async fn set_password(&self, _user: &UserRef, _password: &str) -> Result<(), AuthError> {
        Err(AuthError::Unsupported)
    }
}

fn temporary(e: LdapError) -> AuthError {
    AuthError::Temporary(e.to_string())
}

fn cache_key(alg: HashAlg) -> String {
    format!("{SCRAM_CACHE_KEY_PREFIX}{}", alg.as_str())
}

async fn cached(
    store: &dyn UserDataStore,
    user: &UserRef,
    alg: HashAlg,
) -> Result<Option<ScramKeys>, AuthError> {
    let value = store.get_data(user, &cache_key(alg)).await?;
    Ok(value.and_then(|v| decode(alg, &v)))
}

async fn forget(store: &dyn UserDataStore, user: &UserRef) {
    for alg in HashAlg::ALL {
        if let Err(e) = store.remove_data(user, &cache_key(alg)).await {
            tracing::warn!(error = %e, "could not remove cached SCRAM keys");
        }
    }
}

/// `iterations salt stored-key server-key`, the binary parts in base64.
fn encode(k: &ScramKeys) -> String {
    format!(
        "{} {} {} {}",
        k.iterations,
        B64.encode(&k.salt),
        B64.encode(&k.stored_key),
        B64.encode(&k.server_key)
    )
}

fn decode(alg: HashAlg, value: &str) -> Option<ScramKeys> {
    let mut parts = value.split(' ');
    let iterations = parts.next()?.parse().ok()?;
    let mut bytes = || B64.decode(parts.next()?).ok();
    let (salt, stored_key, server_key) = (bytes()?, bytes()?, bytes()?);
    let sized = stored_key.len() == alg.output_len() && server_key.len() == alg.output_len();
    sized.then_some(ScramKeys {
        alg,
        salt,
        iterations,
        stored_key,
        server_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::thread::ThreadId;
    use xmppd_storage::SqliteStore;

    static DERIVATION_THREADS: Mutex<Vec<ThreadId>> = Mutex::new(Vec::new());

    pub(super) fn note_derivation_thread() {
        DERIVATION_THREADS
            .lock()
            .unwrap()
            .push(std::thread::current().id());
    }

    #[tokio::test]
    async fn cache_keys_are_derived_off_the_async_worker() {
        // A current-thread runtime: its only worker is this thread, which carries every
        // connection; PBKDF2 must run elsewhere.
        let store = SqliteStore::open_in_memory().unwrap();
        let user = UserRef::new("alice", "corp.example");
        refresh_cache(&store, &user, "pencil").await;
        let keys = cached(&store, &user, HashAlg::Sha512).await.unwrap();
        assert!(keys.expect("cached").verify_password("pencil"));
        refresh_cache(&store, &user, "pencil").await; // only checks the cached keys
        let threads = DERIVATION_THREADS.lock().unwrap().clone();
        assert_eq!(threads.len(), 2);
        let worker = std::thread::current().id();
        assert!(
            threads.iter().all(|t| *t != worker),
            "PBKDF2 ran on the worker"
        );
    }

    #[test]
    fn cached_keys_round_trip_and_garbage_is_ignored() {
        for alg in HashAlg::ALL {
            let keys = ScramKeys::generate(alg, "pw", 64).unwrap();
            let back = decode(alg, &encode(&keys)).expect("decodes");
            assert!(back.verify_password("pw"));
            assert!(!back.verify_password("other"));
            assert_eq!(back.iterations, 64);
        }
        let sha1 = encode(&ScramKeys::generate(HashAlg::Sha1, "pw", 64).unwrap());
        assert!(decode(HashAlg::Sha256, &sha1).is_none(), "wrong key size");
        for bad in ["", "x", "10 !! a b", "10 YQ== YQ=="] {
            assert!(decode(HashAlg::Sha1, bad).is_none(), "{bad:?}");
        }
        assert_eq!(cache_key(HashAlg::Sha256), "xmppd:ldap-scram:SHA-256");
    }
}
