//! Occupant ids (XEP-0421, `urn:xmpp:occupant-id:0`): a room gives each occupant an id that
//! stays the same across nick changes and visits, and is the same for every session of one
//! user, so that clients (and moderators, XEP-0425) can tell who wrote what without seeing
//! real JIDs. It is an HMAC-SHA-256 of the room's JID and the occupant's real bare JID under a
//! secret of the chat service (kept in storage, so ids survive restarts): stable per user and
//! room, different between rooms, and not reversible to the real JID without the secret
//! (XEP-0421 §4: it must not reveal the real JID).

use std::sync::Arc;

use hmac::{Hmac, Mac};
use jid::BareJid;
use rand::RngCore;
use sha2::Sha256;
use xmppd_storage::{StorageError, UserDataStore, UserRef};

pub const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";

/// Where the secret is kept: the service's own entry of the per-user data (a domain with no
/// user).
const SECRET_KEY: &str = "urn:xmpp:occupant-id:0#secret";

/// The occupant ids of one chat service.
#[derive(Clone)]
pub struct OccupantIds {
    secret: Arc<[u8]>,
}

impl std::fmt::Debug for OccupantIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OccupantIds(…)")
    }
}

impl OccupantIds {
    pub fn new(secret: &[u8]) -> OccupantIds {
        OccupantIds {
            secret: secret.into(),
        }
    }

    /// The secret of the service `domain` from `store`, made and stored the first time.
    pub async fn load(
        store: &dyn UserDataStore,
        domain: &str,
    ) -> Result<OccupantIds, StorageError> {
        let owner = UserRef::new("", domain);
        if let Some(secret) = store.get_data(&owner, SECRET_KEY).await? {
            if let Ok(bytes) = hex::decode(secret.trim()) {
                if !bytes.is_empty() {
                    return Ok(OccupantIds::new(&bytes));
                }
            }
        }
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        store
            .set_data(&owner, SECRET_KEY, &hex::encode(bytes))
            .await?;
        Ok(OccupantIds::new(&bytes))
    }

    /// The id of the user `real` in `room`.
    pub fn id(&self, room: &BareJid, real: &BareJid) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            unreachable!("HMAC takes keys of any length");
        };
        // The separator keeps (room, real) pairs apart: neither JID contains a NUL.
        mac.update(room.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(real.as_str().as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    #[test]
    fn ids_are_stable_per_user_and_room_and_differ_otherwise() {
        let ids = OccupantIds::new(b"secret");
        let (r1, r2) = (jid("a@muc.x"), jid("b@muc.x"));
        let (alice, bob) = (jid("alice@x"), jid("bob@x"));
        let a1 = ids.id(&r1, &alice);
        assert_eq!(a1, OccupantIds::new(b"secret").id(&r1, &alice));
        assert_eq!(a1.len(), 32);
        assert!(!a1.contains("alice"));
        assert_ne!(a1, ids.id(&r1, &bob));
        assert_ne!(a1, ids.id(&r2, &alice));
        assert_ne!(a1, OccupantIds::new(b"other").id(&r1, &alice));
    }

    #[tokio::test]
    async fn the_secret_is_made_once_and_kept() {
        let store = xmppd_storage::SqliteStore::open_in_memory().unwrap();
        let (room, alice) = (jid("a@muc.x"), jid("alice@x"));
        let first = OccupantIds::load(&store, "muc.x").await.unwrap();
        let again = OccupantIds::load(&store, "muc.x").await.unwrap();
        assert_eq!(first.id(&room, &alice), again.id(&room, &alice));
        let other = OccupantIds::load(&store, "muc.y").await.unwrap();
        assert_ne!(first.id(&room, &alice), other.id(&room, &alice));
    }
}
