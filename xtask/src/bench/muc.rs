//! The MUC fan-out scenario: one room that every client joins.

use anyhow::{anyhow, Context as _, Result};
use std::sync::Arc;
use tokio::sync::Semaphore;

use super::client::{wait_for, Session};
use super::{LOGIN_CONCURRENCY, LOGIN_TIMEOUT};

/// The room of the MUC mode.
pub(super) const BENCH_ROOM: &str = "bench@conference.localhost";

/// MUC mode: the first session creates and configures the room (instant room, no message
/// limit), then every other one joins; returns once each has seen its own presence.
pub(super) async fn join_room(sessions: Vec<Session>) -> Result<Vec<Session>> {
    let mut it = sessions.into_iter().enumerate();
    let Some((_, first)) = it.next() else {
        return Ok(Vec::new());
    };
    let mut owner = enter_room(first, 0).await.context("creating the room")?;
    let form = "<query xmlns='http://jabber.org/protocol/muc#owner'>\
                <x xmlns='jabber:x:data' type='submit'/></query>";
    owner
        .send(&format!(
            "<iq type='set' id='cfg' to='{BENCH_ROOM}'>{form}</iq>"
        ))
        .await?;
    wait_for(&mut owner, |el| {
        el.name() == "iq" && el.attr("id") == Some("cfg")
    })
    .await
    .context("configuring the room")?;
    let mut joined = vec![owner];
    let gate = Arc::new(Semaphore::new(LOGIN_CONCURRENCY));
    let mut tasks = Vec::new();
    for (i, s) in it {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            enter_room(s, i).await
        }));
    }
    for t in tasks {
        joined.push(t.await.context("join task died")??);
    }
    eprintln!("bench: {} occupants in {BENCH_ROOM}", joined.len());
    Ok(joined)
}

async fn enter_room(mut s: Session, index: usize) -> Result<Session> {
    let me = format!("{BENCH_ROOM}/u{index}");
    let join = format!(
        "<presence to='{me}'><x xmlns='http://jabber.org/protocol/muc'>\
         <history maxstanzas='0'/></x></presence>"
    );
    s.send(&join).await?;
    tokio::time::timeout(
        LOGIN_TIMEOUT,
        wait_for(&mut s, |el| {
            el.name() == "presence" && el.attr("from") == Some(me.as_str())
        }),
    )
    .await
    .map_err(|_| anyhow!("joining {me} timed out"))??;
    Ok(s)
}
