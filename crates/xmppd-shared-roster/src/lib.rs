//! Shared roster groups: everyone in a group sees the group's other members in their roster,
//! with presence, without subscription requests.
//!
//! [`SharedRoster`] is a core [`Module`]: its [`Module::roster_items`] answer is merged by the
//! core into roster results, and the core treats those contacts as mutual subscriptions for
//! presence broadcasts and probes. Memberships come from [`GroupSource`]s: [`StaticGroup`] for
//! groups listed in the configuration, and directory-backed sources (the LDAP crate has one).
//!
//! Memberships are held in memory and replaced by [`SharedRoster::refresh`], which a
//! background task calls on a schedule ([`SharedRoster::spawn_refresher`]). The presence path
//! therefore never waits for a directory: it reads a snapshot. A source that fails to answer
//! keeps its previous members, so a directory outage does not empty everybody's roster.
//!
//! Deliberately not here: pushing roster changes to online users when a membership changes
//! (clients see the new members at their next roster fetch), and storing anything — the items
//! are never written to the user's stored roster.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use jid::BareJid;
use xmppd_core::module::Module;
use xmppd_core::Server;
use xmppd_storage::{RosterItem, Subscription};

/// Where the members of one shared group come from.
#[async_trait]
pub trait GroupSource: Send + Sync {
    /// The group's name, shown to clients as the roster group of its members.
    fn name(&self) -> &str;
    /// The current members. An error leaves the members last read in place.
    async fn members(&self) -> Result<Vec<BareJid>, String>;
}

/// A group whose members are listed in the configuration.
pub struct StaticGroup {
    name: String,
    members: Vec<BareJid>,
}

impl StaticGroup {
    pub fn new(name: impl Into<String>, members: Vec<BareJid>) -> Self {
        StaticGroup {
            name: name.into(),
            members,
        }
    }
}

#[async_trait]
impl GroupSource for StaticGroup {
    fn name(&self) -> &str {
        &self.name
    }

    async fn members(&self) -> Result<Vec<BareJid>, String> {
        Ok(self.members.clone())
    }
}

/// The shared roster module: group sources and the last membership read from each.
pub struct SharedRoster {
    sources: Vec<Arc<dyn GroupSource>>,
    /// One member set per source, same order as `sources`; swapped whole by `refresh`.
    members: RwLock<Arc<Vec<HashSet<BareJid>>>>,
}

impl SharedRoster {
    /// A module with no members read yet: call [`SharedRoster::refresh`] before serving.
    pub fn new(sources: Vec<Arc<dyn GroupSource>>) -> Self {
        let empty = vec![HashSet::new(); sources.len()];
        SharedRoster {
            sources,
            members: RwLock::new(Arc::new(empty)),
        }
    }

    /// Reads every source once; returns how many failed (those keep their previous members).
    pub async fn refresh(&self) -> usize {
        let previous = self.snapshot();
        let mut next = Vec::with_capacity(self.sources.len());
        let mut failed = 0;
        for (i, source) in self.sources.iter().enumerate() {
            match source.members().await {
                Ok(members) => next.push(members.into_iter().collect()),
                Err(e) => {
                    tracing::warn!(group = source.name(), error = %e, "shared group not refreshed");
                    failed += 1;
                    next.push(previous.get(i).cloned().unwrap_or_default());
                }
            }
        }
        if let Ok(mut slot) = self.members.write() {
            *slot = Arc::new(next);
        }
        failed
    }

    /// Calls [`SharedRoster::refresh`] every `period` (the first time after one period).
    pub fn spawn_refresher(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let roster = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                roster.refresh().await;
            }
        })
    }

    /// The contacts `user` shares a group with, each once with all the groups shared.
    pub fn items_for(&self, user: &BareJid) -> Vec<RosterItem> {
        let snapshot = self.snapshot();
        let mut contacts: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (source, members) in self.sources.iter().zip(snapshot.iter()) {
            if !members.contains(user) {
                continue;
            }
            for member in members.iter().filter(|m| *m != user) {
                contacts
                    .entry(member.as_str())
                    .or_default()
                    .push(source.name().to_owned());
            }
        }
        contacts
            .into_iter()
            .map(|(jid, mut groups)| {
                groups.sort();
                groups.dedup();
                RosterItem {
                    jid: jid.to_owned(),
                    name: None,
                    subscription: Subscription::Both,
                    ask: false,
                    approved: false,
                    groups,
                }
            })
            .collect()
    }

    fn snapshot(&self) -> Arc<Vec<HashSet<BareJid>>> {
        match self.members.read() {
            Ok(s) => Arc::clone(&s),
            // A writer never panics while holding the lock; an empty view is the safe answer.
            Err(_) => Arc::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Module for SharedRoster {
    fn name(&self) -> &'static str {
        "shared-roster"
    }

    async fn roster_items(&self, _server: &Arc<Server>, user: &BareJid) -> Vec<RosterItem> {
        self.items_for(user)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    fn jids(items: &[RosterItem]) -> Vec<&str> {
        items.iter().map(|i| i.jid.as_str()).collect()
    }

    /// A source whose answer the test switches between a membership and an outage.
    struct Flaky {
        members: Vec<BareJid>,
        down: AtomicBool,
    }

    #[async_trait]
    impl GroupSource for Flaky {
        fn name(&self) -> &str {
            "Flaky"
        }

        async fn members(&self) -> Result<Vec<BareJid>, String> {
            if self.down.load(Ordering::SeqCst) {
                return Err("directory down".into());
            }
            Ok(self.members.clone())
        }
    }

    #[tokio::test]
    async fn members_see_each_other_once_with_every_shared_group() {
        let staff = StaticGroup::new(
            "Staff",
            vec![jid("a@x.org"), jid("b@x.org"), jid("c@x.org")],
        );
        let ops = StaticGroup::new("Ops", vec![jid("a@x.org"), jid("b@x.org")]);
        let roster = SharedRoster::new(vec![Arc::new(staff), Arc::new(ops)]);
        assert!(
            roster.items_for(&jid("a@x.org")).is_empty(),
            "nothing before refresh"
        );
        assert_eq!(roster.refresh().await, 0);

        let items = roster.items_for(&jid("a@x.org"));
        assert_eq!(jids(&items), ["b@x.org", "c@x.org"]);
        assert_eq!(items[0].groups, ["Ops", "Staff"]);
        assert_eq!(items[1].groups, ["Staff"]);
        assert!(items
            .iter()
            .all(|i| i.subscription == Subscription::Both && !i.ask));

        assert_eq!(
            jids(&roster.items_for(&jid("c@x.org"))),
            ["a@x.org", "b@x.org"]
        );
        assert!(roster.items_for(&jid("outsider@x.org")).is_empty());
    }

    #[tokio::test]
    async fn a_failing_source_keeps_its_previous_members() {
        let flaky = Arc::new(Flaky {
            members: vec![jid("a@x.org"), jid("b@x.org")],
            down: AtomicBool::new(true),
        });
        let roster = SharedRoster::new(vec![flaky.clone()]);
        assert_eq!(roster.refresh().await, 1);
        assert!(roster.items_for(&jid("a@x.org")).is_empty());

        flaky.down.store(false, Ordering::SeqCst);
        assert_eq!(roster.refresh().await, 0);
        assert_eq!(jids(&roster.items_for(&jid("a@x.org"))), ["b@x.org"]);

        flaky.down.store(true, Ordering::SeqCst);
        assert_eq!(roster.refresh().await, 1);
        assert_eq!(jids(&roster.items_for(&jid("a@x.org"))), ["b@x.org"]);
    }
}
