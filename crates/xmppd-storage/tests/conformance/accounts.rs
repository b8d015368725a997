use super::*;

pub async fn create_user_and_read_credentials(db: &dyn Db) {
    let store = db.open().await;
    assert!(!store.user_exists(&alice()).await.unwrap());
    store
        .create_user(&alice(), &[scram("SHA-1", 1), scram("SHA-256", 2)])
        .await
        .unwrap();
    assert!(store.user_exists(&alice()).await.unwrap());
    assert!(!store
        .user_exists(&UserRef::new("alice", "other.org"))
        .await
        .unwrap());
    assert_eq!(
        store.credentials(&alice(), "SHA-1").await.unwrap(),
        Some(scram("SHA-1", 1))
    );
    assert_eq!(
        store.credentials(&alice(), "SHA-256").await.unwrap(),
        Some(scram("SHA-256", 2))
    );
    assert_eq!(store.credentials(&alice(), "SHA-512").await.unwrap(), None);
    assert_eq!(store.credentials(&bob(), "SHA-1").await.unwrap(), None);
}

pub async fn create_user_twice_is_already_exists_and_keeps_credentials(db: &dyn Db) {
    let store = db.open().await;
    store
        .create_user(&alice(), &[scram("SHA-1", 1)])
        .await
        .unwrap();
    let again = store.create_user(&alice(), &[scram("SHA-1", 9)]).await;
    assert!(
        matches!(again, Err(StorageError::AlreadyExists)),
        "{again:?}"
    );
    assert_eq!(
        store.credentials(&alice(), "SHA-1").await.unwrap(),
        Some(scram("SHA-1", 1))
    );
}

pub async fn set_credentials_replaces_all_entries(db: &dyn Db) {
    let store = db.open().await;
    store
        .create_user(&alice(), &[scram("SHA-1", 1), scram("SHA-256", 2)])
        .await
        .unwrap();
    store
        .set_credentials(&alice(), &[scram("SHA-512", 3)])
        .await
        .unwrap();
    assert_eq!(store.credentials(&alice(), "SHA-1").await.unwrap(), None);
    assert_eq!(store.credentials(&alice(), "SHA-256").await.unwrap(), None);
    assert_eq!(
        store.credentials(&alice(), "SHA-512").await.unwrap(),
        Some(scram("SHA-512", 3))
    );
}

pub async fn missing_user_is_no_such_user(db: &dyn Db) {
    let store = db.open().await;
    let set = store.set_credentials(&alice(), &[scram("SHA-1", 1)]).await;
    assert!(matches!(set, Err(StorageError::NoSuchUser)), "{set:?}");
    let del = store.remove_account(&alice(), Some(i64::MAX)).await;
    assert!(matches!(del, Err(StorageError::NoSuchUser)), "{del:?}");
    // Only a removal keeps a name.
    assert_eq!(store.tombstone(&alice()).await.unwrap(), None);
    // The failed set_credentials must not have left credentials behind.
    assert_eq!(store.credentials(&alice(), "SHA-1").await.unwrap(), None);
    assert!(!store.user_exists(&alice()).await.unwrap());
}

pub async fn list_users_is_per_domain_and_sorted(db: &dyn Db) {
    let store = db.open().await;
    for name in ["zoe", "bob", "alice"] {
        store
            .create_user(&UserRef::new(name, "example.org"), &[])
            .await
            .unwrap();
    }
    store
        .create_user(&UserRef::new("carl", "other.org"), &[])
        .await
        .unwrap();
    assert_eq!(
        store.list_users("example.org").await.unwrap(),
        ["alice", "bob", "zoe"]
    );
    assert_eq!(store.list_users("other.org").await.unwrap(), ["carl"]);
    assert!(store.list_users("nowhere.org").await.unwrap().is_empty());
}

pub async fn remove_account_removes_everything_of_that_user_only(db: &dyn Db) {
    let store = db.open().await;
    for u in [alice(), bob()] {
        store.create_user(&u, &[scram("SHA-1", 1)]).await.unwrap();
        store
            .set_roster_item(
                &u,
                &item("carol@example.com", Subscription::Both, &["a", "b"]),
            )
            .await
            .unwrap();
        store
            .add_pending_subscription(&u, "dave@example.com", "<presence/>")
            .await
            .unwrap();
        assert!(store.push_offline(&u, 1, "<message/>", 10).await.unwrap());
        store
            .set_data(&u, "jabber:iq:private", "<x/>")
            .await
            .unwrap();
    }
    store.remove_account(&alice(), None).await.unwrap();

    assert!(!store.user_exists(&alice()).await.unwrap());
    assert_eq!(store.credentials(&alice(), "SHA-1").await.unwrap(), None);
    // The version counter stays and moves on: a cached roster of the old account is stale.
    assert_eq!(store.roster(&alice()).await.unwrap(), (2, vec![]));
    assert!(store
        .pending_subscriptions(&alice())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.offline_count(&alice()).await.unwrap(), 0);
    assert_eq!(
        store.get_data(&alice(), "jabber:iq:private").await.unwrap(),
        None
    );
    assert_eq!(store.tombstone(&alice()).await.unwrap(), None);

    // Bob is untouched.
    assert!(store.user_exists(&bob()).await.unwrap());
    let (version, items) = store.roster(&bob()).await.unwrap();
    assert_eq!((version, items.len()), (1, 1));
    assert_eq!(items[0].groups, ["a", "b"]);
    assert_eq!(store.offline_count(&bob()).await.unwrap(), 1);
    assert_eq!(store.pending_subscriptions(&bob()).await.unwrap().len(), 1);

    // A re-created account starts empty.
    store.create_user(&alice(), &[]).await.unwrap();
    assert_eq!(store.roster(&alice()).await.unwrap(), (2, vec![]));
}

/// alice@example.org's footprint in others' data: rosters (both directions, a request she
/// has not answered, a pre-approval), a request of hers waiting at erin, and rooms of two
/// chat services.
async fn alice_with_footprint(store: &dyn FullStore) {
    let dave = UserRef::new("dave", "other.org");
    let named = |sub, ask, approved| RosterItem {
        name: Some("Al".into()),
        ask,
        approved,
        ..item("alice@example.org", sub, &["friends"])
    };
    for (user, it) in [
        (bob(), named(Subscription::Both, false, false)),
        (carol(), named(Subscription::None, true, true)),
        (dave.clone(), named(Subscription::From, false, false)),
    ] {
        store.create_user(&user, &[]).await.unwrap();
        store.set_roster_item(&user, &it).await.unwrap();
    }
    store.create_user(&alice(), &[]).await.unwrap();
    for it in [
        item("bob@example.org", Subscription::Both, &[]),
        item("dave@other.org", Subscription::To, &[]),
    ] {
        store.set_roster_item(&alice(), &it).await.unwrap();
    }
    let erin = UserRef::new("erin", "example.org");
    for from in ["alice@example.org", "bob@example.org"] {
        store
            .add_pending_subscription(&erin, from, "<presence/>")
            .await
            .unwrap();
    }
    store
        .add_pending_subscription(&alice(), "erin@example.org", "<presence/>")
        .await
        .unwrap();
    let owned = room(
        "a",
        &[
            ("alice@example.org", "owner"),
            ("bob@example.org", "member"),
        ],
    );
    store.save_room(&owned).await.unwrap();
    store
        .save_room(&room("b", &[("bob@example.org", "owner")]))
        .await
        .unwrap();
    let mut banned = room("c", &[("alice@example.org", "outcast")]);
    banned.domain = "conference.other.org".into();
    store.save_room(&banned).await.unwrap();
}

pub async fn removing_an_account_cancels_its_subscriptions_requests_and_affiliations(db: &dyn Db) {
    let store = db.open().await;
    alice_with_footprint(&*store).await;
    let own_roster = store.roster(&alice()).await.unwrap().1;
    let before: Vec<RosterItem> = {
        let mut v = Vec::new();
        for u in [bob(), carol(), UserRef::new("dave", "other.org")] {
            v.push(
                store
                    .roster_item(&u, "alice@example.org")
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        v
    };
    let until = now_ms() + 3_600_000;
    let removal = store.remove_account(&alice(), Some(until)).await.unwrap();

    assert_eq!(removal.roster, own_roster);
    let holders: Vec<UserRef> = removal.contacts.iter().map(|(u, _)| u.clone()).collect();
    assert_eq!(holders, [bob(), carol(), UserRef::new("dave", "other.org")]);
    let was: Vec<RosterItem> = removal.contacts.iter().map(|(_, i)| i.clone()).collect();
    assert_eq!(was, before);
    for holder in &holders {
        let (version, items) = store.roster(holder).await.unwrap();
        // RFC 6121 §3.2, §3.3: as if alice had sent unsubscribe and unsubscribed; the item
        // itself (name, groups) is the contact's to keep or remove.
        assert_eq!(version, 2, "{holder:?}");
        assert_eq!(
            items,
            [RosterItem {
                name: Some("Al".into()),
                ask: false,
                approved: false,
                ..item("alice@example.org", Subscription::None, &["friends"])
            }]
        );
    }
    let erin = UserRef::new("erin", "example.org");
    assert_eq!(removal.requests_dropped, std::slice::from_ref(&erin));
    let left: Vec<String> = (store.pending_subscriptions(&erin).await.unwrap())
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(left, ["bob@example.org"]);

    assert_eq!(
        removal.rooms,
        [
            ("conference.example.org".to_owned(), "a".to_owned()),
            ("conference.other.org".to_owned(), "c".to_owned())
        ]
    );
    let dom = "conference.example.org";
    let a = store.room(dom, "a").await.unwrap().unwrap();
    assert_eq!(
        a.affiliations,
        room("a", &[("bob@example.org", "member")]).affiliations
    );
    let b = store.room(dom, "b").await.unwrap().unwrap();
    assert_eq!(b, room("b", &[("bob@example.org", "owner")]));
    let c = store.room("conference.other.org", "c").await.unwrap();
    assert!(c.unwrap().affiliations.is_empty());

    // The name is kept until the tombstone ends, unless an administrator lifts it.
    assert_eq!(store.tombstone(&alice()).await.unwrap(), Some(until));
    let again = store.create_user(&alice(), &[scram("SHA-1", 1)]).await;
    assert!(
        matches!(again, Err(StorageError::Tombstoned { until_ms }) if until_ms == until),
        "{again:?}"
    );
    assert!(!store.user_exists(&alice()).await.unwrap());
    store.clear_tombstone(&alice()).await.unwrap();
    store
        .create_user(&alice(), &[scram("SHA-1", 1)])
        .await
        .unwrap();
    assert_eq!(store.tombstone(&alice()).await.unwrap(), None);
}

pub async fn a_new_account_of_a_removed_name_starts_empty(db: &dyn Db) {
    let store = db.open().await;
    alice_with_footprint(&*store).await;
    // A tombstone that has ended does not hold the name.
    let removal = store.remove_account(&alice(), Some(now_ms() - 1)).await;
    assert_eq!(removal.unwrap().contacts.len(), 3);
    assert_eq!(store.tombstone(&alice()).await.unwrap(), None);
    // What the last sessions of the old account wrote after its removal.
    store
        .set_roster_item(&alice(), &item("bob@example.org", Subscription::Both, &[]))
        .await
        .unwrap();
    store
        .set_data(&alice(), "urn:xmpp:last", "1")
        .await
        .unwrap();
    store
        .add_pending_subscription(&alice(), "bob@example.org", "<presence/>")
        .await
        .unwrap();

    store
        .create_user(&alice(), &[scram("SHA-1", 1)])
        .await
        .unwrap();
    assert!(store.roster(&alice()).await.unwrap().1.is_empty());
    assert_eq!(
        store.get_data(&alice(), "urn:xmpp:last").await.unwrap(),
        None
    );
    assert!(store
        .pending_subscriptions(&alice())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.tombstone(&alice()).await.unwrap(), None);
    assert_eq!(
        store.credentials(&alice(), "SHA-1").await.unwrap(),
        Some(scram("SHA-1", 1))
    );
}

pub async fn iterations_use_the_full_u32_range(db: &dyn Db) {
    let store = db.open().await;
    let creds = StoredScram {
        iterations: u32::MAX,
        ..scram("SHA-256", 7)
    };
    store
        .create_user(&alice(), std::slice::from_ref(&creds))
        .await
        .unwrap();
    assert_eq!(
        store.credentials(&alice(), "SHA-256").await.unwrap(),
        Some(creds)
    );
}

pub async fn names_and_keys_match_exactly(db: &dyn Db) {
    // The caller normalises; the store compares what it was given byte for byte, so names
    // that differ only in case or accents are different accounts, contacts and keys.
    let store = db.open().await;
    let names = ["alice", "Alice", "alicé", "alice "];
    for name in names {
        store
            .create_user(&UserRef::new(name, "example.org"), &[scram("SHA-256", 1)])
            .await
            .unwrap();
    }
    let mut listed = store.list_users("example.org").await.unwrap();
    listed.sort();
    let mut want: Vec<String> = names.map(String::from).to_vec();
    want.sort();
    assert_eq!(listed, want);
    assert!(!store
        .user_exists(&UserRef::new("ALICE", "example.org"))
        .await
        .unwrap());
    for contact in ["bob@x", "Bob@x", "böb@x"] {
        store
            .set_roster_item(&alice(), &item(contact, Subscription::Both, &[]))
            .await
            .unwrap();
    }
    assert_eq!(store.roster_len(&alice()).await.unwrap(), 3);
    store.set_data(&alice(), "k", "lower").await.unwrap();
    store.set_data(&alice(), "K", "upper").await.unwrap();
    assert_eq!(
        store.get_data(&alice(), "k").await.unwrap().as_deref(),
        Some("lower")
    );
}
