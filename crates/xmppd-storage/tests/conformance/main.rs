//! The contract of the storage traits, written once and run against every engine: each case
//! below runs on SQLite (`on_sqlite::`), on a real PostgreSQL (`on_postgres::`) and on a real
//! MariaDB (`on_mariadb::`); the last two are skipped with a message where the server cannot
//! be installed, a failure under CI. A new engine
//! passes these before the server may use it.

use xmppd_dbtest as support;

mod accounts;
mod data;
mod leases;
mod offline;
mod rooms;
mod roster;
mod shared;

use std::time::{SystemTime, UNIX_EPOCH};

use support::{Db, FullStore};
use xmppd_storage::{
    RoomAffiliation, RosterItem, SessionRecord, StorageError, StoredRoom, StoredScram,
    Subscription, UserRef,
};

fn alice() -> UserRef {
    UserRef::new("alice", "example.org")
}

fn bob() -> UserRef {
    UserRef::new("bob", "example.org")
}

fn carol() -> UserRef {
    UserRef::new("carol", "example.org")
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One test per case and engine.
macro_rules! conformance {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = crate::support::SqliteDb::new();
                    crate::$module::$case(&db).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = crate::support::PgDb::new().await else { return };
                    crate::$module::$case(&db).await;
                }
            )*
        }
        mod on_mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = crate::support::MariaDb::new().await else { return };
                    crate::$module::$case(&db).await;
                }
            )*
        }
    };
}

conformance!(
    accounts::create_user_and_read_credentials,
    accounts::create_user_twice_is_already_exists_and_keeps_credentials,
    accounts::set_credentials_replaces_all_entries,
    accounts::missing_user_is_no_such_user,
    accounts::list_users_is_per_domain_and_sorted,
    accounts::remove_account_removes_everything_of_that_user_only,
    accounts::removing_an_account_cancels_its_subscriptions_requests_and_affiliations,
    accounts::a_new_account_of_a_removed_name_starts_empty,
    accounts::iterations_use_the_full_u32_range,
    accounts::names_and_keys_match_exactly,
    roster::roster_versions_and_items,
    roster::roster_length_and_bare_version_bumps,
    roster::roster_groups_keep_odd_names_and_order,
    roster::pending_subscriptions_add_replace_remove,
    offline::offline_cap_order_and_removal,
    offline::offline_pages_follow_the_cursor_and_both_bounds,
    offline::offline_ids_are_not_reused_after_removal,
    offline::taking_offline_messages_removes_them_in_order,
    offline::concurrent_pushes_from_two_stores_respect_each_cap_and_keep_order,
    data::user_data_roundtrip,
    data::sessions_open_close_clear,
    rooms::rooms_save_replace_list_delete,
    rooms::queued_room_writes_commit_in_order,
    leases::a_room_lease_has_one_holder_until_released,
    leases::an_expired_lease_goes_to_another_node_with_a_new_epoch,
    leases::writes_under_a_lost_lease_are_refused,
    leases::renewal_extends_only_the_nodes_own_live_leases,
    leases::nodes_leasing_one_room_at_once_get_it_once,
    shared::two_stores_open_a_new_database_at_once,
    shared::an_account_created_by_one_store_is_seen_by_the_other,
    shared::concurrent_pushes_from_two_stores_respect_the_cap,
    shared::offline_messages_are_taken_once_across_stores,
    shared::the_same_name_created_at_once_by_two_stores_exists_once,
    shared::concurrent_roster_adds_count_each_item_once,
);
