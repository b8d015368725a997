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
//! When a refresh changes a group, [`SharedRoster::refresh_and_notify`] tells the online users
//! whose shared contacts changed, through [`xmppd_im::shared_roster_item_changed`]: a roster push
//! and presence between the two accounts, in both directions.
//!
//! A user's shared items are also part of their roster version (RFC 6121 §2.6):
//! [`Module::roster_items_version`] fingerprints the groups the user is in, so a client's cached
//! roster is sent again after a change that nobody was told about (an offline user, a change
//! made while xmppd was down).
//!
//! Deliberately not here: storing anything — the items are never written to the user's stored
//! roster — and telling offline users (they read the current groups at their next login).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use jid::BareJid;
use xmppd_core::module::{Hooks, Module};
use xmppd_core::{Context, Server};
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

/// One member set per source, in the order of the sources.
type Snapshot = Arc<Groups>;

/// The members read from each source, and a fingerprint of each member set.
#[derive(Default)]
struct Groups {
    members: Vec<HashSet<BareJid>>,
    /// Same order as `members`; see [`fingerprint`].
    fingerprints: Vec<u64>,
}

impl Groups {
    fn new(members: Vec<HashSet<BareJid>>) -> Self {
        let fingerprints = members.iter().map(fingerprint).collect();
        Groups {
            members,
            fingerprints,
        }
    }
}

/// A value that changes when the member set does, whatever order the set is walked in: the
/// same for the same members across restarts (the hasher has fixed keys).
fn fingerprint(members: &HashSet<BareJid>) -> u64 {
    let hash = |j: &BareJid| {
        let mut h = DefaultHasher::new();
        j.as_str().hash(&mut h);
        h.finish()
    };
    let sum = members.iter().map(hash).fold(0u64, u64::wrapping_add);
    let mut h = DefaultHasher::new();
    (sum, members.len()).hash(&mut h);
    h.finish()
}

/// The shared roster module: group sources and the last membership read from each.
pub struct SharedRoster {
    sources: Vec<Arc<dyn GroupSource>>,
    /// One member set per source, same order as `sources`; swapped whole by `refresh`.
    groups: RwLock<Snapshot>,
}

impl SharedRoster {
    /// A module with no members read yet: call [`SharedRoster::refresh`] before serving.
    pub fn new(sources: Vec<Arc<dyn GroupSource>>) -> Self {
        let empty = Groups::new(vec![HashSet::new(); sources.len()]);
        SharedRoster {
            sources,
            groups: RwLock::new(Arc::new(empty)),
        }
    }

    /// Reads every source once; returns how many failed (those keep their previous members).
    /// Nobody is told about changes: for the first read, before anyone is online.
    pub async fn refresh(&self) -> usize {
        self.reload().await.0
    }

    /// [`SharedRoster::refresh`], then a roster push and presence for each online user whose
    /// shared contacts changed.
    pub async fn refresh_and_notify(&self, server: &Arc<Server>) -> usize {
        let (failed, previous, next) = self.reload().await;
        let online = |user: &BareJid| server.router().resource_count(user) > 0;
        for change in changes(&self.sources, &previous.members, &next.members, online) {
            xmppd_im::shared_roster_item_changed(
                server,
                &change.user,
                &change.item,
                change.removed,
            )
            .await;
        }
        failed
    }

    /// Reads every source and installs the result; returns the failures and both member sets.
    async fn reload(&self) -> (usize, Snapshot, Snapshot) {
        let previous = self.snapshot();
        let mut next = Vec::with_capacity(self.sources.len());
        let mut failed = 0;
        for (i, source) in self.sources.iter().enumerate() {
            match source.members().await {
                Ok(members) => next.push(members.into_iter().collect()),
                Err(e) => {
                    tracing::warn!(group = source.name(), error = %e, "shared group not refreshed");
                    failed += 1;
                    next.push(previous.members.get(i).cloned().unwrap_or_default());
                }
            }
        }
        let next = Arc::new(Groups::new(next));
        if let Ok(mut slot) = self.groups.write() {
            *slot = Arc::clone(&next);
        }
        (failed, previous, next)
    }

    /// Calls [`SharedRoster::refresh_and_notify`] every `period` (the first time after one
    /// period), until `server` is gone.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        server: Weak<Server>,
        period: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let roster = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                // Held only for one refresh: the task must not keep a stopped server alive.
                let Some(server) = server.upgrade() else {
                    return;
                };
                roster.refresh_and_notify(&server).await;
            }
        })
    }

    /// The contacts `user` shares a group with, each once with all the groups shared.
    pub fn items_for(&self, user: &BareJid) -> Vec<RosterItem> {
        items_in(&self.sources, &self.snapshot().members, user)
    }

    fn snapshot(&self) -> Snapshot {
        match self.groups.read() {
            Ok(s) => Arc::clone(&s),
            // A writer never panics while holding the lock; an empty view is the safe answer.
            Err(_) => Arc::default(),
        }
    }
}

#[async_trait]
impl Module for SharedRoster {
    fn name(&self) -> &'static str {
        "shared-roster"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            roster: true,
            ..Hooks::NONE
        }
    }

    async fn roster_items(&self, _cx: &Context<'_>, user: &BareJid) -> Vec<RosterItem> {
        self.items_for(user)
    }

    async fn has_roster_item(&self, _cx: &Context<'_>, user: &BareJid, contact: &BareJid) -> bool {
        // O(groups): asked for every presence probe.
        user != contact
            && (self.snapshot().members.iter())
                .any(|members| members.contains(user) && members.contains(contact))
    }

    async fn roster_items_version(&self, _cx: &Context<'_>, user: &BareJid) -> u64 {
        // O(groups), asked for every roster push: `user`'s shared items follow from the name
        // and the members of each group `user` is in, so their fingerprints stand for them.
        let snapshot = self.snapshot();
        let mut h = DefaultHasher::new();
        let groups = self
            .sources
            .iter()
            .zip(&snapshot.members)
            .zip(&snapshot.fingerprints);
        for ((source, members), fingerprint) in groups {
            if members.contains(user) {
                (source.name(), fingerprint).hash(&mut h);
            }
        }
        h.finish()
    }
}

/// One roster item of `user` that a membership change added, changed or removed.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    user: BareJid,
    item: RosterItem,
    removed: bool,
}

/// The contacts `user` shares a group with in `snapshot` (see [`SharedRoster::items_for`]).
fn items_in(
    sources: &[Arc<dyn GroupSource>],
    snapshot: &[HashSet<BareJid>],
    user: &BareJid,
) -> Vec<RosterItem> {
    let mut contacts: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (source, members) in sources.iter().zip(snapshot.iter()) {
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

/// What changed between two member sets, for the users `online` says to tell. Only members
/// (old or new) of groups whose membership changed can see a difference, so only they are
/// compared; each side of a pair is its own change, so both users get their push.
fn changes(
    sources: &[Arc<dyn GroupSource>],
    previous: &[HashSet<BareJid>],
    next: &[HashSet<BareJid>],
    online: impl Fn(&BareJid) -> bool,
) -> Vec<Change> {
    let empty = HashSet::new();
    let mut affected: Vec<&BareJid> = (0..next.len())
        .map(|i| (previous.get(i).unwrap_or(&empty), &next[i]))
        .filter(|(old, new)| old != new)
        .flat_map(|(old, new)| old.iter().chain(new.iter()))
        .collect::<HashSet<_>>()
        .into_iter()
        .filter(|user| online(user))
        .collect();
    affected.sort();
    let mut out = Vec::new();
    for user in affected {
        let before = items_in(sources, previous, user);
        let after = items_in(sources, next, user);
        let change = |item: &RosterItem, removed| Change {
            user: user.clone(),
            item: item.clone(),
            removed,
        };
        for item in &after {
            if !before.contains(item) {
                out.push(change(item, false));
            }
        }
        for item in &before {
            if !after.iter().any(|i| i.jid == item.jid) {
                out.push(change(item, true));
            }
        }
    }
    out
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
    async fn membership_answers_match_the_item_lists() {
        let staff = StaticGroup::new("Staff", vec![jid("a@x.org"), jid("b@x.org")]);
        let ops = StaticGroup::new("Ops", vec![jid("c@x.org"), jid("d@x.org")]);
        let roster = SharedRoster::new(vec![Arc::new(staff), Arc::new(ops)]);
        roster.refresh().await;
        let server = xmppd_core::Server::builder(
            xmppd_core::CoreConfig::default(),
            Arc::new(xmppd_storage::SqliteStore::open_in_memory().unwrap()),
        )
        .build();
        let mut scratch = xmppd_core::testing::Scratch::new();
        let cx = scratch.context(&server);
        for (u, c) in [("a", "b"), ("a", "c"), ("c", "d"), ("a", "a"), ("e", "a")] {
            let (u, c) = (jid(&format!("{u}@x.org")), jid(&format!("{c}@x.org")));
            let listed = roster.items_for(&u).iter().any(|i| i.jid == c.as_str());
            assert_eq!(
                roster.has_roster_item(&cx, &u, &c).await,
                listed,
                "{u} / {c}"
            );
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

    #[tokio::test]
    async fn the_items_version_follows_the_groups_the_user_is_in() {
        let server = xmppd_core::Server::builder(
            xmppd_core::CoreConfig::default(),
            Arc::new(xmppd_storage::SqliteStore::open_in_memory().unwrap()),
        )
        .build();
        let group = |name: &str, members: &[&str]| -> Arc<dyn GroupSource> {
            Arc::new(StaticGroup::new(
                name,
                members.iter().map(|m| jid(m)).collect(),
            ))
        };
        let (staff, ops) = (
            group("Staff", &["a@x.org", "b@x.org"]),
            group("Ops", &["c@x.org", "d@x.org"]),
        );
        let roster = SharedRoster::new(vec![staff, ops]);
        roster.refresh().await;
        let mut scratch = xmppd_core::testing::Scratch::new();
        let cx = scratch.context(&server);
        let a = roster.roster_items_version(&cx, &jid("a@x.org")).await;
        let c = roster.roster_items_version(&cx, &jid("c@x.org")).await;
        let outsider = roster.roster_items_version(&cx, &jid("x@x.org")).await;
        assert_ne!(a, c);
        assert_ne!(a, outsider);

        // The same groups read again (in whatever order): the same versions, also in another
        // process.
        let again = SharedRoster::new(vec![
            group("Staff", &["b@x.org", "a@x.org"]),
            group("Ops", &["d@x.org", "c@x.org"]),
        ]);
        again.refresh().await;
        assert_eq!(again.roster_items_version(&cx, &jid("a@x.org")).await, a);

        // A member joins Ops: only its members' versions move.
        let grown = SharedRoster::new(vec![
            group("Staff", &["a@x.org", "b@x.org"]),
            group("Ops", &["c@x.org", "d@x.org", "e@x.org"]),
        ]);
        grown.refresh().await;
        assert_eq!(grown.roster_items_version(&cx, &jid("a@x.org")).await, a);
        assert_ne!(grown.roster_items_version(&cx, &jid("c@x.org")).await, c);
    }

    #[test]
    fn changes_reach_both_sides_and_only_online_users() {
        let staff: Arc<dyn GroupSource> = Arc::new(StaticGroup::new("Staff", vec![]));
        let ops: Arc<dyn GroupSource> = Arc::new(StaticGroup::new("Ops", vec![]));
        let sources = [staff, ops];
        let set = |v: &[&str]| v.iter().map(|s| jid(s)).collect::<HashSet<_>>();
        let before = [set(&["a@x.org", "b@x.org"]), set(&["a@x.org", "c@x.org"])];
        // d joins Staff, c leaves Ops, Ops gains b (a already sees b through Staff).
        let after = [
            set(&["a@x.org", "b@x.org", "d@x.org"]),
            set(&["a@x.org", "b@x.org"]),
        ];
        let all = changes(&sources, &before, &after, |_| true);
        let summary: Vec<(String, String, bool, Vec<String>)> = all
            .iter()
            .map(|c| {
                let groups = c.item.groups.clone();
                (c.user.to_string(), c.item.jid.clone(), c.removed, groups)
            })
            .collect();
        let row = |u: &str, j: &str, removed, g: &[&str]| {
            let groups = g.iter().map(|s| s.to_string()).collect();
            (u.to_owned(), j.to_owned(), removed, groups)
        };
        assert_eq!(
            summary,
            [
                row("a@x.org", "b@x.org", false, &["Ops", "Staff"]),
                row("a@x.org", "d@x.org", false, &["Staff"]),
                row("a@x.org", "c@x.org", true, &["Ops"]),
                row("b@x.org", "a@x.org", false, &["Ops", "Staff"]),
                row("b@x.org", "d@x.org", false, &["Staff"]),
                row("c@x.org", "a@x.org", true, &["Ops"]),
                row("d@x.org", "a@x.org", false, &["Staff"]),
                row("d@x.org", "b@x.org", false, &["Staff"]),
            ]
        );
        assert!(all
            .iter()
            .all(|c| c.item.subscription == Subscription::Both));

        let only_a = changes(&sources, &before, &after, |u| u.as_str() == "a@x.org");
        assert!(only_a.iter().all(|c| c.user.as_str() == "a@x.org"));
        assert_eq!(only_a.len(), 3);
        assert!(changes(&sources, &after, &after, |_| true).is_empty());
    }
}
