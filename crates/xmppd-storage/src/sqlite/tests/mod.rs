//! Tests of the SQLite store, by concern; the helpers they share.

use std::collections::HashSet;

use tempfile::TempDir;

use super::migrations::MIGRATIONS;
use super::*;
use crate::{
    CredentialStore, OfflineStore, RoomAffiliation, RoomStore, RosterItem, RosterStore, StoredRoom,
    StoredScram, Subscription, UserDataStore, UserRef,
};

fn alice() -> UserRef {
    UserRef::new("alice", "example.org")
}

fn bob() -> UserRef {
    UserRef::new("bob", "example.org")
}

fn scram(hash: &str, seed: u8) -> StoredScram {
    StoredScram {
        hash: hash.into(),
        salt: vec![seed; 16],
        iterations: 4096 + u32::from(seed),
        stored_key: vec![seed.wrapping_add(1); 32],
        server_key: vec![seed.wrapping_add(2); 32],
    }
}

fn item(jid: &str, sub: Subscription, groups: &[&str]) -> RosterItem {
    RosterItem {
        jid: jid.into(),
        name: Some(format!("name of {jid}")),
        subscription: sub,
        ask: sub == Subscription::None,
        approved: sub == Subscription::To,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn file_store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("xmppd.db")).unwrap();
    (dir, store)
}

/// Occupies the writer with a job that waits until the returned sender fires, so the
/// following jobs pile up in the queue and form one batch.
async fn hold_writer(
    store: &Arc<SqliteStore>,
) -> (mpsc::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let before = store.submitted.load(Ordering::SeqCst);
    let s = store.clone();
    let handle = tokio::spawn(async move {
        s.write(move |_| {
            let _ = entered_tx.send(());
            let _ = release_rx.recv();
            Ok(())
        })
        .await
    });
    entered_rx.await.unwrap();
    // The writer may enter the job before its submitter has counted it: wait for the count,
    // or a caller's own count would take the hold's late increment for one of its jobs.
    wait_submitted(store, before + 1).await;
    (release_tx, handle)
}

async fn wait_submitted(store: &SqliteStore, n: u64) {
    while store.submitted.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn room(name: &str, affs: &[(&str, &str)]) -> StoredRoom {
    StoredRoom {
        domain: "conference.example.org".into(),
        name: name.into(),
        config: format!("<x>{name}</x>"),
        subject: "hello".into(),
        affiliations: affs
            .iter()
            .map(|(jid, a)| RoomAffiliation {
                jid: (*jid).into(),
                affiliation: (*a).into(),
                nick: (*a == "member").then(|| "nick".into()),
                reason: None,
            })
            .collect(),
    }
}

mod file;
mod rooms;
mod roster;
mod writer;
