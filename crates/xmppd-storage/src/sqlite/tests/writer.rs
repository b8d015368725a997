use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_are_group_committed() {
    let (_dir, store) = file_store();
    let store = Arc::new(store);
    let (release, gate) = hold_writer(&store).await;
    let commits_before = store.commit_count();
    let submitted_before = store.submitted.load(Ordering::SeqCst);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = store.clone();
            let user = UserRef::new(format!("u{}", i % 7), "example.org");
            tokio::spawn(async move { s.push_offline(&user, i, &format!("<m{i}/>"), 1000).await })
        })
        .collect();
    wait_submitted(&store, submitted_before + 200).await;
    release.send(()).unwrap();
    gate.await.unwrap().unwrap();
    for t in tasks {
        assert!(t.await.unwrap().unwrap());
    }
    // The held batch, then all 200 pushes in a single transaction.
    assert_eq!(store.commit_count() - commits_before, 2);

    let mut ids = HashSet::new();
    let mut xml = HashSet::new();
    for u in 0..7 {
        for m in store
            .offline_messages(&UserRef::new(format!("u{u}"), "example.org"))
            .await
            .unwrap()
        {
            assert!(ids.insert(m.id), "duplicate id {}", m.id);
            xml.insert(m.xml);
        }
    }
    assert_eq!((ids.len(), xml.len()), (200, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_respect_the_cap() {
    let (_dir, store) = file_store();
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move { s.push_offline(&alice(), i, "<m/>", 150).await })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        stored += usize::from(t.await.unwrap().unwrap());
    }
    assert_eq!(stored, 150);
    assert_eq!(store.offline_count(&alice()).await.unwrap(), 150);
    assert!(store.commit_count() <= 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_job_does_not_fail_its_batch() {
    let (_dir, store) = file_store();
    let store = Arc::new(store);
    store.create_user(&alice(), &[]).await.unwrap();
    let (release, gate) = hold_writer(&store).await;
    let commits_before = store.commit_count();
    let base = store.submitted.load(Ordering::SeqCst);

    let s = store.clone();
    let first = tokio::spawn(async move { s.push_offline(&bob(), 1, "<first/>", 10).await });
    wait_submitted(&store, base + 1).await;
    let s = store.clone();
    let failing = tokio::spawn(async move {
        s.write(|c| {
            c.execute(
                "INSERT INTO user_data VALUES ('example.org', 'bob', 'half', 'done')",
                [],
            )?;
            Err::<(), _>(StorageError::Backend("job failed after writing".into()))
        })
        .await
    });
    wait_submitted(&store, base + 2).await;
    let s = store.clone();
    let duplicate = tokio::spawn(async move { s.create_user(&alice(), &[]).await });
    wait_submitted(&store, base + 3).await;
    let s = store.clone();
    let bad_sql = tokio::spawn(async move {
        s.write(|c| Ok(c.execute("INSERT INTO no_such_table VALUES (1)", [])?))
            .await
    });
    wait_submitted(&store, base + 4).await;
    let s = store.clone();
    let last = tokio::spawn(async move { s.set_data(&bob(), "last", "yes").await });
    wait_submitted(&store, base + 5).await;

    release.send(()).unwrap();
    gate.await.unwrap().unwrap();
    assert!(first.await.unwrap().unwrap());
    assert!(matches!(
        failing.await.unwrap(),
        Err(StorageError::Backend(_))
    ));
    assert!(matches!(
        duplicate.await.unwrap(),
        Err(StorageError::AlreadyExists)
    ));
    assert!(matches!(
        bad_sql.await.unwrap(),
        Err(StorageError::Backend(_))
    ));
    last.await.unwrap().unwrap();
    assert_eq!(
        store.commit_count() - commits_before,
        2,
        "one batch after the held one"
    );

    assert_eq!(store.offline_count(&bob()).await.unwrap(), 1);
    assert_eq!(
        store.get_data(&bob(), "last").await.unwrap().as_deref(),
        Some("yes")
    );
    assert_eq!(
        store.get_data(&bob(), "half").await.unwrap(),
        None,
        "rolled back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_do_not_wait_for_a_running_batch() {
    let (_dir, store) = file_store();
    let store = Arc::new(store);
    store.set_data(&alice(), "k", "committed").await.unwrap();
    let (release, gate) = hold_writer(&store).await;
    // The writer is stuck inside an open transaction; a read must still complete.
    assert_eq!(
        store.get_data(&alice(), "k").await.unwrap().as_deref(),
        Some("committed")
    );
    release.send(()).unwrap();
    gate.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xmppd.db");
    let server = Arc::new(SqliteStore::open(&path).unwrap());
    let cli = Arc::new(SqliteStore::open(&path).unwrap());

    cli.create_user(&alice(), &[scram("SHA-256", 4)])
        .await
        .unwrap();
    assert!(server.user_exists(&alice()).await.unwrap());
    let dup = server.create_user(&alice(), &[]).await;
    assert!(matches!(dup, Err(StorageError::AlreadyExists)), "{dup:?}");
    server.set_data(&alice(), "k", "from server").await.unwrap();
    assert_eq!(
        cli.get_data(&alice(), "k").await.unwrap().as_deref(),
        Some("from server")
    );

    // Both write at once: the busy timeout serialises them without errors.
    let mut tasks = Vec::new();
    for store in [server.clone(), cli.clone()] {
        for i in 0..50 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.push_offline(&alice(), i, "<m/>", 1000).await
            }));
        }
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap());
    }
    assert_eq!(server.offline_count(&alice()).await.unwrap(), 100);
    cli.remove_account(&alice(), None).await.unwrap();
    assert!(!server.user_exists(&alice()).await.unwrap());
    assert_eq!(server.offline_count(&alice()).await.unwrap(), 0);
}

#[tokio::test]
async fn dropping_the_store_runs_queued_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xmppd.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        use std::future::Future;
        // Queue a write whose caller gives up before the answer arrives.
        let user = alice();
        let pending = store.set_data(&user, "k", "queued");
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut pending = std::pin::pin!(pending);
        let _ = pending.as_mut().poll(&mut cx);
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.get_data(&alice(), "k").await.unwrap().as_deref(),
        Some("queued")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deferred_parts_run_after_the_batch_and_fail_it_whole() {
    let (_dir, store) = file_store();
    let store = Arc::new(store);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = |order: &Arc<std::sync::Mutex<Vec<&'static str>>>, what| {
        order.lock().unwrap().push(what);
    };
    let deferring = |what: &'static str, fail: bool| {
        let order = order.clone();
        move |c: &Connection| -> Result<((), Option<Deferred>)> {
            log(&order, what);
            c.execute(
                "INSERT INTO user_data VALUES ('example.org', 'bob', ?1, 'job')",
                [what],
            )?;
            let then: Deferred = Box::new(move |c: &Connection| {
                log(&order, "end");
                c.execute(
                    "INSERT INTO user_data VALUES ('example.org', 'bob', ?1, 'end')",
                    [format!("{what}-end")],
                )?;
                if fail {
                    return Err(StorageError::Backend("index full".into()));
                }
                Ok(())
            });
            Ok(((), Some(then)))
        }
    };
    let plain = |what: &'static str| {
        let order = order.clone();
        move |c: &Connection| -> Result<()> {
            log(&order, what);
            c.execute(
                "INSERT INTO user_data VALUES ('example.org', 'bob', ?1, 'job')",
                [what],
            )?;
            Ok(())
        }
    };

    for fail in [false, true] {
        order.lock().unwrap().clear();
        let (release, gate) = hold_writer(&store).await;
        let commits_before = store.commit_count();
        let base = store.submitted.load(Ordering::SeqCst);
        let (a, b) = if fail { ("c", "d") } else { ("a", "b") };
        let s = store.clone();
        let first = tokio::spawn({
            let f = deferring(a, fail);
            async move { s.write_deferring(f).await }
        });
        wait_submitted(&store, base + 1).await;
        let s = store.clone();
        let second = tokio::spawn({
            let f = plain(b);
            async move { s.write(f).await }
        });
        wait_submitted(&store, base + 2).await;
        release.send(()).unwrap();
        gate.await.unwrap().unwrap();
        let (first, second) = (first.await.unwrap(), second.await.unwrap());
        assert_eq!(
            *order.lock().unwrap(),
            [a, b, "end"],
            "the end part after every job"
        );
        let stored = |key: String| {
            let store = store.clone();
            async move { store.get_data(&bob(), &key).await.unwrap() }
        };
        if fail {
            assert!(first.is_err() && second.is_err(), "the whole batch fails");
            assert_eq!(
                store.commit_count() - commits_before,
                1,
                "the held batch only"
            );
            for key in ["c", "c-end", "d"] {
                assert_eq!(stored(key.into()).await, None, "{key} rolled back");
            }
        } else {
            first.unwrap();
            second.unwrap();
            assert_eq!(
                store.commit_count() - commits_before,
                2,
                "the held batch, then one"
            );
            for key in ["a", "a-end", "b"] {
                assert!(stored(key.into()).await.is_some(), "{key} committed");
            }
        }
    }
}

/// A job dropped without its batch's outcome (the writer thread gone) still answers, with an
/// error; a job that was answered is not answered again when dropped.
#[test]
fn a_job_answers_once_even_when_dropped_unrun() {
    use crate::sqlite::writer::{Job, WriteJob};
    let (tx, rx) = std::sync::mpsc::channel();
    let answers =
        move |tx: std::sync::mpsc::Sender<bool>| move |r: Result<i32>| tx.send(r.is_ok()).unwrap();
    let unrun = Job::new(
        |_: &rusqlite::Connection| -> Result<(i32, Option<crate::Deferred>)> { Ok((1, None)) },
        answers(tx.clone()),
    );
    drop(unrun);
    assert_eq!(rx.try_recv(), Ok(false), "dropped unrun: an error");
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    let mut job = Box::new(Job::new(
        |_: &rusqlite::Connection| -> Result<(i32, Option<crate::Deferred>)> { Ok((1, None)) },
        answers(tx),
    ));
    assert!(job.run(&conn));
    job.finish(&Ok(()));
    assert_eq!(rx.try_recv(), Ok(true), "run and committed: its value");
    assert!(rx.try_recv().is_err(), "answered once");
}
