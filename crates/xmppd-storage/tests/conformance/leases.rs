//! The leases of chat rooms: which process hosts a room when several share the database.
//! Each store here stands for one process (its node name), as two servers on one database.

use std::time::{Duration, Instant};

use xmppd_storage::{LeaseToken, RoomLease};

use super::*;

const DOM: &str = "conference.example.org";
const MINUTE: i64 = 60_000;

fn granted(lease: RoomLease) -> i64 {
    match lease {
        RoomLease::Granted { epoch } => epoch,
        other => panic!("expected the lease, got {other:?}"),
    }
}

fn token(node: &str, epoch: i64) -> LeaseToken {
    LeaseToken {
        node: node.into(),
        epoch,
    }
}

pub async fn a_room_lease_has_one_holder_until_released(db: &dyn Db) {
    let (a, b) = (db.open().await, db.open().await);
    // A stored room: its lease's epoch grows from holder to holder.
    a.save_room(&room("r", &[("o@x", "owner")])).await.unwrap();
    let first = granted(a.lease_room(DOM, "r", "node-a", MINUTE).await.unwrap());
    // Renewed by its holder: the same epoch.
    let again = granted(a.lease_room(DOM, "r", "node-a", MINUTE).await.unwrap());
    assert_eq!(again, first);
    match b.lease_room(DOM, "r", "node-b", MINUTE).await.unwrap() {
        RoomLease::Held { node, remaining_ms } => {
            assert_eq!(node, "node-a");
            assert!(remaining_ms > 0 && remaining_ms <= MINUTE, "{remaining_ms}");
        }
        other => panic!("node-b got {other:?}"),
    }
    // Another room is free.
    granted(b.lease_room(DOM, "other", "node-b", MINUTE).await.unwrap());
    // The same name on another service is another room.
    granted(
        b.lease_room("chat.example.org", "r", "node-b", MINUTE)
            .await
            .unwrap(),
    );
    a.release_room(DOM, "r", "node-a").await.unwrap();
    // Released only by its holder: node-b's release of a room it does not hold is nothing.
    b.release_room(DOM, "other", "node-a").await.unwrap();
    assert!(matches!(
        a.lease_room(DOM, "other", "node-a", MINUTE).await.unwrap(),
        RoomLease::Held { .. }
    ));
    let taken = granted(b.lease_room(DOM, "r", "node-b", MINUTE).await.unwrap());
    assert_ne!(taken, first);
    match a.lease_room(DOM, "r", "node-a", MINUTE).await.unwrap() {
        RoomLease::Held { node, .. } => assert_eq!(node, "node-b"),
        other => panic!("node-a got {other:?}"),
    }
}

pub async fn an_expired_lease_goes_to_another_node_with_a_new_epoch(db: &dyn Db) {
    let (a, b) = (db.open().await, db.open().await);
    a.save_room(&room("r", &[("o@x", "owner")])).await.unwrap();
    let first = granted(a.lease_room(DOM, "r", "node-a", 200).await.unwrap());
    // node-a stops renewing; once the lease ends on the database's clock node-b gets it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let taken = loop {
        match b.lease_room(DOM, "r", "node-b", MINUTE).await.unwrap() {
            RoomLease::Granted { epoch } => break epoch,
            RoomLease::Held { node, remaining_ms } => {
                assert_eq!(node, "node-a");
                assert!(remaining_ms <= 200, "{remaining_ms}");
            }
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(taken > first, "{taken} after {first}");
    // node-a's renewal finds nothing of its own any more.
    assert!(a
        .renew_room_leases("node-a", MINUTE)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        a.lease_room(DOM, "r", "node-a", MINUTE).await.unwrap(),
        RoomLease::Held { .. }
    ));
}

pub async fn writes_under_a_lost_lease_are_refused(db: &dyn Db) {
    let (a, b) = (db.open().await, db.open().await);
    let epoch_a = granted(a.lease_room(DOM, "r", "node-a", MINUTE).await.unwrap());
    let by_a = room("r", &[("o@x", "owner")]);
    a.save_leased_room(&by_a, &token("node-a", epoch_a))
        .await
        .unwrap();
    // A write without the room's lease is refused (a stale epoch, or another node's name).
    let mut stray = by_a.clone();
    stray.subject = "stray".into();
    for bad in [token("node-a", epoch_a + 1), token("node-b", epoch_a)] {
        assert!(matches!(
            a.save_leased_room(&stray, &bad).await,
            Err(StorageError::LeaseLost)
        ));
    }
    a.release_room(DOM, "r", "node-a").await.unwrap();
    let epoch_b = granted(b.lease_room(DOM, "r", "node-b", MINUTE).await.unwrap());
    // node-a's writes queued under its old lease change nothing now.
    let mut late = by_a.clone();
    late.subject = "late".into();
    let late_save = a.save_leased_room(&late, &token("node-a", epoch_a));
    let late_delete = a.delete_leased_room(DOM, "r", &token("node-a", epoch_a));
    assert!(matches!(late_save.await, Err(StorageError::LeaseLost)));
    assert!(matches!(late_delete.await, Err(StorageError::LeaseLost)));
    assert_eq!(b.room(DOM, "r").await.unwrap(), Some(by_a.clone()));
    let mut by_b = by_a.clone();
    by_b.subject = "by b".into();
    b.save_leased_room(&by_b, &token("node-b", epoch_b))
        .await
        .unwrap();
    assert_eq!(a.room(DOM, "r").await.unwrap(), Some(by_b));
    b.delete_leased_room(DOM, "r", &token("node-b", epoch_b))
        .await
        .unwrap();
    assert_eq!(a.room(DOM, "r").await.unwrap(), None);
}

pub async fn renewal_extends_only_the_nodes_own_live_leases(db: &dyn Db) {
    let (a, b) = (db.open().await, db.open().await);
    for name in ["r2", "r1"] {
        granted(a.lease_room(DOM, name, "node-a", MINUTE).await.unwrap());
    }
    granted(b.lease_room(DOM, "r3", "node-b", MINUTE).await.unwrap());
    let mine = |names: &[&str]| -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (DOM.to_owned(), n.to_string()))
            .collect()
    };
    assert_eq!(
        a.renew_room_leases("node-a", MINUTE).await.unwrap(),
        mine(&["r1", "r2"])
    );
    a.release_room(DOM, "r1", "node-a").await.unwrap();
    assert_eq!(
        a.renew_room_leases("node-a", MINUTE).await.unwrap(),
        mine(&["r2"])
    );
    // At shutdown a node gives up all its rooms at once; the others keep theirs.
    a.release_room_leases("node-a").await.unwrap();
    assert!(a
        .renew_room_leases("node-a", MINUTE)
        .await
        .unwrap()
        .is_empty());
    granted(b.lease_room(DOM, "r2", "node-b", MINUTE).await.unwrap());
    assert_eq!(
        b.renew_room_leases("node-b", MINUTE).await.unwrap(),
        mine(&["r2", "r3"])
    );
}

pub async fn nodes_leasing_one_room_at_once_get_it_once(db: &dyn Db) {
    let stores = [db.open().await, db.open().await];
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let node = format!("node-{i}");
            (
                store.lease_room(DOM, "r", &node, MINUTE).await.unwrap(),
                node,
            )
        }));
    }
    let mut winners = Vec::new();
    let mut holders = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (RoomLease::Granted { .. }, node) => winners.push(node),
            (RoomLease::Held { node, .. }, _) => holders.push(node),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert!(holders.iter().all(|h| *h == winners[0]), "{holders:?}");
}
