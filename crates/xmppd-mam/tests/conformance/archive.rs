//! Archiving, queries, ids, preferences, retention and removal.

use std::time::Duration;

use xmppd_mam::retention::{purge_once, Retention};
use xmppd_mam::store::{Filter, PageRequest, Paging, With};
use xmppd_mam::{ArchiveError, DefaultPolicy, Prefs};

use crate::{filtered, ids, msg, page, search, ten, Engine};

pub async fn ids_grow_and_stamps_never_go_back(db: &dyn Engine) {
    let a = db.open().await;
    let mut last = (0, 0);
    for i in 0..20 {
        let got = a.append(msg("b@x", "a@x", &format!("n{i}"))).await.unwrap();
        assert!(got.0 > last.0 && got.1 >= last.1, "{got:?} after {last:?}");
        last = got;
    }
}

pub async fn messages_queued_together_share_a_stamp_and_keep_their_order(db: &dyn Engine) {
    let a = db.open().await;
    // Both copies of one message: one transaction, ids in order, one stamp.
    let both = a
        .append_all(vec![
            msg("a@x", "b@x", "shared words"),
            msg("b@x", "a@x", "shared words"),
        ])
        .await
        .unwrap();
    assert!(both[0].0 < both[1].0 && both[0].1 == both[1].1, "{both:?}");
    assert_eq!(search(&*a, "a@x", "words").await, [both[0].0]);
    assert_eq!(search(&*a, "b@x", "words").await, [both[1].0]);
    // Many appends queued at once (they share transactions where the engine batches): each
    // resolves to its own id, in the order they were queued, and all are there.
    let queued: Vec<_> = (0..300)
        .map(|i| a.append_all(vec![msg("c@x", "a@x", &format!("burst{i}"))]))
        .collect();
    let mut got = Vec::new();
    for q in queued {
        let ids = q.await.unwrap();
        assert_eq!(ids.len(), 1);
        got.push(ids[0]);
    }
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    let p = a
        .query("c@x", page(Paging::Forward { after: None }, 1000))
        .await
        .unwrap();
    assert_eq!(ids(&p), got.iter().map(|g| g.0).collect::<Vec<_>>());
    assert!(p.items[0].stanza.contains("burst0"));
    assert!(a.append_all(Vec::new()).await.unwrap().is_empty());
}

pub async fn a_message_the_database_refuses_fails_alone(db: &dyn Engine) {
    let Some(bad) = db.refused() else { return };
    let a = db.open().await;
    // Queued together, so that they would share a transaction.
    let mut queued = Vec::new();
    for i in 0..20 {
        let m = if i == 10 {
            bad.clone()
        } else {
            msg("b@x", "a@x", &format!("good{i}"))
        };
        queued.push(a.append_all(vec![m]));
    }
    let mut archived = Vec::new();
    for (i, q) in queued.into_iter().enumerate() {
        match q.await {
            Ok(ids) if i != 10 => archived.push(ids[0].0),
            Err(_) if i == 10 => {}
            other => panic!("append {i}: {other:?}"),
        }
    }
    let p = a
        .query("b@x", page(Paging::Forward { after: None }, 50))
        .await
        .unwrap();
    assert_eq!(ids(&p), archived);
    let good: u64 = (0..20)
        .filter(|i| *i != 10)
        .map(|i| msg("b@x", "a@x", &format!("good{i}")).stanza.len() as u64)
        .sum();
    assert_eq!(a.total_bytes().await.unwrap(), good);
}

pub async fn pages_forward_and_backward_to_the_end(db: &dyn Engine) {
    let a = db.open().await;
    let all = ten(&*a).await;
    // Forward, four at a time.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let p = a
            .query("b@x", page(Paging::Forward { after }, 4))
            .await
            .unwrap();
        seen.extend(ids(&p));
        after = p.items.last().map(|i| i.id);
        if p.complete {
            break;
        }
    }
    assert_eq!(seen, all);
    // Backward from the latest page (empty <before/>).
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let p = a
            .query("b@x", page(Paging::Backward { before }, 4))
            .await
            .unwrap();
        let mut got = ids(&p);
        got.extend(seen);
        seen = got;
        before = p.items.first().map(|i| i.id);
        if p.complete {
            break;
        }
    }
    assert_eq!(seen, all);
    let latest = a
        .query("b@x", page(Paging::Backward { before: None }, 3))
        .await
        .unwrap();
    assert_eq!(ids(&latest), all[7..]);
    assert!(!latest.complete);
    assert!(latest.items[2].stanza.contains("<body>m9</body>"));
    // An exact fit is complete; max 0 only tells whether anything is there.
    let p = a
        .query("b@x", page(Paging::Forward { after: None }, 10))
        .await
        .unwrap();
    assert!(p.complete);
    let p = a
        .query("b@x", page(Paging::Forward { after: None }, 0))
        .await
        .unwrap();
    assert!(p.items.is_empty() && !p.complete);
    // Another owner's archive is empty.
    let p = a
        .query("c@x", page(Paging::Forward { after: None }, 5))
        .await
        .unwrap();
    assert!(p.items.is_empty() && p.complete);
}

pub async fn filters_combine(db: &dyn Engine) {
    let a = db.open().await;
    let (x1, _) = a
        .append(msg("b@x", "a@x/phone", "hello there"))
        .await
        .unwrap();
    let (x2, _) = a
        .append(msg("b@x", "a@x/laptop", "general kenobi"))
        .await
        .unwrap();
    let (x3, _) = a.append(msg("b@x", "c@x", "hello again")).await.unwrap();
    a.append(msg("c@x", "a@x", "hello from elsewhere"))
        .await
        .unwrap();
    for (id, stamp) in [(x1, 1_000), (x2, 2_000), (x3, 3_000)] {
        db.restamp(id, stamp).await;
    }
    let run = |f: Filter| {
        let a = &a;
        async move { ids(&a.query("b@x", filtered(f)).await.unwrap()) }
    };
    let with = |bare: &str, resource: Option<&str>| With {
        bare: bare.into(),
        resource: resource.map(Into::into),
    };
    let cases: Vec<(Filter, Vec<i64>)> = vec![
        (
            Filter {
                with: Some(with("a@x", None)),
                ..Default::default()
            },
            vec![x1, x2],
        ),
        (
            Filter {
                with: Some(with("a@x", Some("laptop"))),
                ..Default::default()
            },
            vec![x2],
        ),
        (
            Filter {
                start_ms: Some(2_000),
                ..Default::default()
            },
            vec![x2, x3],
        ),
        (
            Filter {
                end_ms: Some(2_000),
                ..Default::default()
            },
            vec![x1, x2],
        ),
        (
            Filter {
                start_ms: Some(1_500),
                end_ms: Some(2_500),
                ..Default::default()
            },
            vec![x2],
        ),
        (
            Filter {
                after_id: Some(x1),
                before_id: Some(x3),
                ..Default::default()
            },
            vec![x2],
        ),
        (
            Filter {
                ids: Some(vec![x3, x1]),
                ..Default::default()
            },
            vec![x1, x3],
        ),
        (
            Filter {
                with: Some(with("a@x", None)),
                fulltext: Some("kenobi".into()),
                ..Default::default()
            },
            vec![x2],
        ),
        (
            Filter {
                with: Some(with("c@x", None)),
                fulltext: Some("hello".into()),
                start_ms: Some(500),
                ..Default::default()
            },
            vec![x3],
        ),
    ];
    for (f, want) in cases {
        assert_eq!(run(f.clone()).await, want, "{f:?}");
    }
    // Filters and paging together: the latest of a@x's, then the one before it.
    let req = PageRequest {
        filter: Filter {
            with: Some(with("a@x", None)),
            ..Default::default()
        },
        paging: Paging::Backward { before: None },
        max: 1,
    };
    let p = a.query("b@x", req.clone()).await.unwrap();
    assert_eq!((ids(&p), p.complete), (vec![x2], false));
    let req = PageRequest {
        paging: Paging::Backward { before: Some(x2) },
        ..req
    };
    let p = a.query("b@x", req).await.unwrap();
    assert_eq!((ids(&p), p.complete), (vec![x1], true));
}

pub async fn unknown_ids_are_refused(db: &dyn Engine) {
    let a = db.open().await;
    let (x1, _) = a.append(msg("b@x", "a@x", "mine")).await.unwrap();
    let (other, _) = a.append(msg("c@x", "a@x", "not hers")).await.unwrap();
    // Ids of another archive, and ids that never were, are unknown.
    for bad in [other, other + 9_999] {
        let refused = |r: Result<_, ArchiveError>| matches!(r, Err(ArchiveError::UnknownId));
        let f = Filter {
            after_id: Some(bad),
            ..Default::default()
        };
        assert!(refused(a.query("b@x", filtered(f)).await));
        let f = Filter {
            before_id: Some(bad),
            ..Default::default()
        };
        assert!(refused(a.query("b@x", filtered(f)).await));
        let r = a
            .query("b@x", page(Paging::Forward { after: Some(bad) }, 5))
            .await;
        assert!(refused(r));
        let r = a
            .query("b@x", page(Paging::Backward { before: Some(bad) }, 5))
            .await;
        assert!(refused(r));
        let f = Filter {
            ids: Some(vec![x1, bad]),
            ..Default::default()
        };
        assert!(refused(a.query("b@x", filtered(f)).await));
    }
    // The same id named twice is known.
    let f = Filter {
        after_id: Some(x1),
        ids: Some(vec![x1, x1]),
        ..Default::default()
    };
    let r = a
        .query(
            "b@x",
            PageRequest {
                paging: Paging::Forward { after: Some(x1) },
                ..filtered(f)
            },
        )
        .await
        .unwrap();
    assert!(r.items.is_empty() && r.complete);
}

pub async fn bounds_prefs_and_removal(db: &dyn Engine) {
    let a = db.open().await;
    assert_eq!(a.bounds("b@x").await.unwrap(), None);
    let (only, stamp) = a.append(msg("b@x", "a@x", "first")).await.unwrap();
    assert_eq!(
        a.bounds("b@x").await.unwrap(),
        Some(((only, stamp), (only, stamp)))
    );
    let all = ten(&*a).await;
    a.append(msg("keep@x", "a@x", "kept words")).await.unwrap();
    let ((first, _), (last, _)) = a.bounds("b@x").await.unwrap().unwrap();
    assert_eq!((first, last), (only, all[9]));

    assert_eq!(a.prefs("b@x").await.unwrap(), None);
    let p = Prefs {
        default: DefaultPolicy::Roster,
        always: vec!["a@x".into()],
        never: vec!["n@x".into(), "m@x".into()],
    };
    a.set_prefs("b@x", &p).await.unwrap();
    assert_eq!(a.prefs("b@x").await.unwrap(), Some(p));
    let p = Prefs::with_default(DefaultPolicy::Never);
    a.set_prefs("b@x", &p).await.unwrap();
    assert_eq!(a.prefs("b@x").await.unwrap(), Some(p), "replaced");

    let before = a.total_bytes().await.unwrap();
    assert_eq!(a.remove_owner("b@x").await.unwrap(), 11);
    assert_eq!(a.bounds("b@x").await.unwrap(), None);
    assert_eq!(a.prefs("b@x").await.unwrap(), None);
    let after = a.total_bytes().await.unwrap();
    let kept = msg("keep@x", "a@x", "kept words").stanza.len() as u64;
    assert!(before > after, "{before} -> {after}");
    assert_eq!(after, kept, "the count is the bytes of the stanzas left");
    // The other owner's message, and its index entry, stay.
    assert_eq!(search(&*a, "keep@x", "kept").await.len(), 1);
    assert_eq!(a.remove_owner("b@x").await.unwrap(), 0);
}

pub async fn retention_purges_by_age_and_size_in_batches(db: &dyn Engine) {
    let a = db.open().await;
    let all = ten(&*a).await;
    for (i, id) in all.iter().enumerate() {
        db.restamp(*id, 1_000 * (i as i64 + 1)).await;
    }
    let r = Retention {
        max_age: Some(Duration::from_millis(5_500)),
        max_bytes: None,
        interval: Duration::from_secs(1),
        batch: 2,
    };
    // At 10 s, what is older than 4.5 s goes: stamps 1..=4 s.
    assert_eq!(purge_once(&*a, &r, 10_000).await.unwrap(), 4);
    let p = a
        .query("b@x", page(Paging::Forward { after: None }, 50))
        .await
        .unwrap();
    assert_eq!(ids(&p), all[4..]);
    // The full-text entries of purged messages went with them.
    assert_eq!(search(&*a, "b@x", "m2").await, Vec::<i64>::new());
    assert_eq!(search(&*a, "b@x", "m5").await, [all[5]]);
    // One batch deletes at most its size.
    assert_eq!(a.purge_older(9_500, 3).await.unwrap(), 3);
    assert_eq!(a.purge_older(9_500, 3).await.unwrap(), 2);
    assert_eq!(a.purge_older(9_500, 3).await.unwrap(), 0);

    // A size cap: only the newest that fit stay.
    let more = ten(&*a).await;
    let one = a.total_bytes().await.unwrap() / 11;
    let r = Retention {
        max_age: None,
        max_bytes: Some(one * 2),
        ..r
    };
    purge_once(&*a, &r, 10_000).await.unwrap();
    let p = a
        .query("b@x", page(Paging::Forward { after: None }, 50))
        .await
        .unwrap();
    assert_eq!(ids(&p), more[8..]);
    assert!(a.total_bytes().await.unwrap() <= one * 2);
    assert_eq!(
        a.trim_to_bytes(one * 2, 5).await.unwrap(),
        0,
        "under the cap"
    );
}

pub async fn purge_of_one_owner_keeps_the_others_and_the_prefs(db: &dyn Engine) {
    let a = db.open().await;
    let all = ten(&*a).await;
    let (theirs, _) = a.append(msg("c@x", "a@x", "other")).await.unwrap();
    for id in all.iter().chain([&theirs]) {
        db.restamp(*id, 1_000).await;
    }
    a.set_prefs("b@x", &Prefs::with_default(DefaultPolicy::Roster))
        .await
        .unwrap();
    assert_eq!(a.purge_owner("b@x", 2_000, 4).await.unwrap(), 4);
    let p = a
        .query("b@x", page(Paging::Forward { after: None }, 50))
        .await
        .unwrap();
    assert_eq!(ids(&p), all[4..], "the oldest went first");
    let n = xmppd_mam::retention::purge(&*a, Some("b@x"), 2_000, 4)
        .await
        .unwrap();
    assert_eq!(n, 6);
    assert_eq!(a.bounds("b@x").await.unwrap(), None);
    assert!(a.prefs("b@x").await.unwrap().is_some());
    assert_eq!(
        ids(&a
            .query("c@x", page(Paging::Forward { after: None }, 5))
            .await
            .unwrap()),
        [theirs]
    );
}

pub async fn a_tombstone_replaces_the_stanza_and_is_found_no_more(db: &dyn Engine) {
    let a = db.open().await;
    let (id, stamp) = a
        .append(msg("b@x", "a@x", "regrettable words"))
        .await
        .unwrap();
    let (other, _) = a
        .append(msg("c@x", "a@x", "regrettable too"))
        .await
        .unwrap();
    let before = a.total_bytes().await.unwrap();
    let tomb = "<message xmlns='jabber:client' from='a@x' to='b@x'>\
                <retracted xmlns='urn:xmpp:message-retract:1' by='a@x'/></message>";
    assert!(a.replace_stanza("b@x", id, tomb.into()).await.unwrap());
    // Not another owner's message, not an id that is not there.
    assert!(!a.replace_stanza("b@x", other, tomb.into()).await.unwrap());
    assert!(!a
        .replace_stanza("b@x", other + 100, tomb.into())
        .await
        .unwrap());
    let p = a
        .query("b@x", page(Paging::Forward { after: None }, 5))
        .await
        .unwrap();
    assert_eq!(p.items.len(), 1);
    assert_eq!(
        (
            p.items[0].id,
            p.items[0].stamp_ms,
            p.items[0].stanza.as_str()
        ),
        (id, stamp, tomb),
        "same id and stamp"
    );
    assert!(search(&*a, "b@x", "regrettable").await.is_empty());
    assert_eq!(search(&*a, "c@x", "regrettable").await, [other]);
    let old = msg("b@x", "a@x", "regrettable words").stanza.len() as u64;
    assert_eq!(
        a.total_bytes().await.unwrap(),
        before - old + tomb.len() as u64
    );
}

pub async fn find_latest_looks_back_past_what_does_not_match(db: &dyn Engine) {
    use xmppd_mam::store::Direction;
    let a = db.open().await;
    let mut origin = msg("b@x", "a@x", "to be retracted");
    origin.stanza = origin.stanza.replace(
        "</message>",
        "<origin-id xmlns='urn:xmpp:sid:0' id='o-1'/></message>",
    );
    let (wanted, _) = a.append(origin.clone()).await.unwrap();
    // More than one chunk of later messages with the same needle that the matcher refuses.
    let mut later = Vec::new();
    for i in 0..450 {
        let mut m = origin.clone();
        m.stanza = m.stanza.replace("to be retracted", &format!("copy {i}"));
        later.push(m);
    }
    for chunk in later.chunks(100) {
        a.append_all(chunk.to_vec()).await.unwrap();
    }
    let found = a
        .find_latest(
            "b@x",
            "a@x",
            Direction::Incoming,
            "o-1",
            Box::new(|s| s.contains("to be retracted")),
        )
        .await
        .unwrap();
    assert_eq!(found.map(|f| f.0), Some(wanted));
    let newest = a
        .find_latest("b@x", "a@x", Direction::Incoming, "o-1", Box::new(|_| true))
        .await
        .unwrap()
        .unwrap();
    assert!(newest.1.contains("copy 449"));
    for (owner, with, dir) in [
        ("c@x", "a@x", Direction::Incoming),
        ("b@x", "z@x", Direction::Incoming),
        ("b@x", "a@x", Direction::Outgoing),
    ] {
        let none = a
            .find_latest(owner, with, dir, "o-1", Box::new(|_| true))
            .await
            .unwrap();
        assert!(none.is_none(), "{owner} {with} {dir:?}");
    }
    let none = a
        .find_latest("b@x", "a@x", Direction::Incoming, "o-2", Box::new(|_| true))
        .await
        .unwrap();
    assert!(none.is_none());
}

pub async fn the_archive_survives_a_restart_and_ids_are_never_reused(db: &dyn Engine) {
    let last = {
        let a = db.open().await;
        let all = ten(&*a).await;
        a.set_prefs("b@x", &Prefs::with_default(DefaultPolicy::Never))
            .await
            .unwrap();
        a.remove_owner("c@x").await.unwrap();
        let (kept, _) = a.append(msg("c@x", "a@x", "after removal")).await.unwrap();
        a.remove_owner("b@x").await.unwrap();
        let (last, _) = a.append(msg("b@x", "a@x", "kept")).await.unwrap();
        assert!(last > kept && kept > all[9]);
        last
    };
    let a = db.open().await;
    let p = a
        .query("b@x", page(Paging::Forward { after: None }, 50))
        .await
        .unwrap();
    assert_eq!(ids(&p), [last]);
    assert_eq!(search(&*a, "b@x", "kept").await, [last]);
    let (next, _) = a.append(msg("b@x", "a@x", "new")).await.unwrap();
    assert!(next > last);
}
