//! What the `fulltext` field (XEP-0431) promises on every engine; docs/STORAGE.md says it and
//! what differs.

use xmppd_mam::store::{Filter, Paging, With};

use crate::{filtered, ids, msg, search, Engine};

pub async fn words_match_whatever_their_case_and_order(db: &dyn Engine) {
    let a = db.open().await;
    let (x1, _) = a
        .append(msg("b@x", "a@x", "Hello there, General Kenobi!"))
        .await
        .unwrap();
    let (x2, _) = a
        .append(msg("b@x", "a@x", "hello again; kenobi"))
        .await
        .unwrap();
    let (x3, _) = a
        .append(msg("b@x", "a@x", "Un éclair au CAFÉ"))
        .await
        .unwrap();
    a.append(msg("b@x", "a@x", "nothing to see")).await.unwrap();
    assert_eq!(search(&*a, "b@x", "HELLO").await, [x1, x2]);
    assert_eq!(
        search(&*a, "b@x", "kenobi hello").await,
        [x1, x2],
        "any order"
    );
    assert_eq!(
        search(&*a, "b@x", "general KENOBI").await,
        [x1],
        "every word"
    );
    assert_eq!(search(&*a, "b@x", "there general").await, [x1]);
    assert_eq!(search(&*a, "b@x", "  again \t hello ").await, [x2]);
    // Punctuation separates words, in the body and in the query.
    assert_eq!(search(&*a, "b@x", "there,").await, [x1]);
    assert_eq!(search(&*a, "b@x", "again;").await, [x2]);
    // Letters beyond ASCII fold their case too.
    assert_eq!(search(&*a, "b@x", "ÉCLAIR café").await, [x3]);
    // Whole words: no prefixes, no stemming.
    assert!(search(&*a, "b@x", "hell").await.is_empty());
    assert!(search(&*a, "b@x", "kenobis").await.is_empty());
    assert!(search(&*a, "b@x", "hello missing").await.is_empty());
}

pub async fn short_words_and_common_words_are_found(db: &dyn Engine) {
    let a = db.open().await;
    let (x1, _) = a
        .append(msg("b@x", "a@x", "ok so it is the one"))
        .await
        .unwrap();
    let (x2, _) = a
        .append(msg("b@x", "a@x", "who said what about 42"))
        .await
        .unwrap();
    // Words of one and two letters, and the words stopword lists drop, are words.
    assert_eq!(search(&*a, "b@x", "ok").await, [x1]);
    assert_eq!(search(&*a, "b@x", "it is").await, [x1]);
    assert_eq!(search(&*a, "b@x", "the one").await, [x1]);
    assert_eq!(search(&*a, "b@x", "who about").await, [x2]);
    assert_eq!(search(&*a, "b@x", "42").await, [x2]);
    assert_eq!(search(&*a, "b@x", "so what").await, Vec::<i64>::new());
}

pub async fn query_syntax_is_taken_as_text(db: &dyn Engine) {
    let a = db.open().await;
    let (x1, _) = a.append(msg("b@x", "a@x", "hello kenobi")).await.unwrap();
    // The engines' operators are nothing but punctuation here: no exclusion, no prefix
    // search, no phrase, no error.
    assert_eq!(search(&*a, "b@x", "+hello* -kenobi").await, [x1]);
    assert_eq!(
        search(&*a, "b@x", "kenobi | hello & !x").await,
        Vec::<i64>::new()
    );
    assert_eq!(search(&*a, "b@x", "(hello) \"kenobi\"").await, [x1]);
    assert!(search(&*a, "b@x", "\"unbalanced OR (").await.is_empty());
    assert!(search(&*a, "b@x", "hel*").await.is_empty());
    assert!(search(&*a, "b@x", "kenobi NOT hello OR").await.is_empty());
    // A field with no word in it does not filter.
    let f = Filter {
        fulltext: Some("   ".into()),
        ..Default::default()
    };
    assert_eq!(ids(&a.query("b@x", filtered(f)).await.unwrap()), [x1]);
}

pub async fn search_is_scoped_to_the_owner_and_the_other_filters(db: &dyn Engine) {
    let a = db.open().await;
    let (x1, _) = a.append(msg("b@x", "a@x", "needle one")).await.unwrap();
    let (x2, _) = a.append(msg("b@x", "c@x", "needle two")).await.unwrap();
    let (theirs, _) = a.append(msg("c@x", "a@x", "needle three")).await.unwrap();
    let (x3, _) = a.append(msg("b@x", "a@x", "needle four")).await.unwrap();
    assert_eq!(search(&*a, "b@x", "needle").await, [x1, x2, x3]);
    assert_eq!(search(&*a, "c@x", "needle").await, [theirs]);
    let f = Filter {
        with: Some(With {
            bare: "a@x".into(),
            resource: None,
        }),
        fulltext: Some("needle".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(&a.query("b@x", filtered(f.clone())).await.unwrap()),
        [x1, x3]
    );
    // Paged backward: the latest match first.
    let mut req = filtered(f);
    req.paging = Paging::Backward { before: None };
    req.max = 1;
    let p = a.query("b@x", req).await.unwrap();
    assert_eq!((ids(&p), p.complete), (vec![x3], false));
}

pub async fn rows_copied_without_their_index_are_found(db: &dyn Engine) {
    let body = |text: &str| {
        format!(
            "<message xmlns='jabber:client' from='peer@x' to='b@x'><body>{text}</body></message>"
        )
    };
    let tomb = "<message xmlns='jabber:client' from='peer@x' to='b@x'>\
                <retracted xmlns='urn:xmpp:message-retract:1' by='peer@x'/></message>";
    if db
        .copy_in(1000, "b@x", &body("migrated needle"))
        .await
        .is_none()
    {
        return; // SQLite: the engine copies come from.
    }
    db.copy_in(1001, "b@x", tomb).await.unwrap();
    db.copy_in(1002, "b@x", "not even xml").await.unwrap();
    let a = db.open().await;
    assert_eq!(search(&*a, "b@x", "needle migrated").await, [1000]);
    assert!(search(&*a, "b@x", "retracted").await.is_empty());
    // New ids follow the copied ones.
    let (next, _) = a.append(msg("b@x", "a@x", "needle new")).await.unwrap();
    assert!(next > 1002, "{next}");
    assert_eq!(search(&*a, "b@x", "needle").await, [1000, next]);
}
