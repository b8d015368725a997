//! One account's block list and the JID matching of XEP-0191 §5, which is that of privacy
//! lists (XEP-0016 §2.1): an item `user@domain/resource` matches that full JID only,
//! `user@domain` any resource of that account, `domain/resource` that resource of the domain
//! itself, and `domain` the domain and every address on it.

use std::collections::HashSet;

use jid::Jid;
use xmppd_core::address::Bare;

/// The JIDs an account blocks, in the order they were blocked, normalised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockList {
    items: Vec<Jid>,
    /// The items' strings, for matching in a few lookups whatever the list's length.
    index: HashSet<String>,
}

impl BlockList {
    pub fn new(items: impl IntoIterator<Item = Jid>) -> BlockList {
        let mut list = BlockList::default();
        list.add(items);
        list
    }

    pub fn items(&self) -> &[Jid] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn contains(&self, jid: &Jid) -> bool {
        self.index.contains(jid.as_str())
    }

    /// Whether an item matches `entity` (XEP-0016 §2.1): its full JID, its bare JID, or its
    /// domain, each looked up as an item.
    pub fn blocks(&self, entity: &Jid) -> bool {
        if self.index.is_empty() {
            return false;
        }
        // A full JID with a node is `user@domain/resource`; without one, `domain/resource`:
        // either way the whole address is one of the four forms.
        self.index.contains(entity.as_str())
            || (entity.node().is_some() && self.index.contains(entity.bare().as_str()))
            || self.index.contains(entity.domain().as_str())
    }

    /// Adds the items not yet in the list; returns those it added.
    pub fn add(&mut self, items: impl IntoIterator<Item = Jid>) -> Vec<Jid> {
        let mut added = Vec::new();
        for jid in items {
            if self.index.insert(jid.as_str().to_owned()) {
                self.items.push(jid.clone());
                added.push(jid);
            }
        }
        added
    }

    /// Removes the given items; returns those that were in the list.
    pub fn remove(&mut self, items: &[Jid]) -> Vec<Jid> {
        let gone: Vec<Jid> = (items.iter())
            .filter(|j| self.index.remove(j.as_str()))
            .cloned()
            .collect();
        self.items.retain(|j| !gone.contains(j));
        gone
    }

    /// Empties the list; returns what it held.
    pub fn clear(&mut self) -> Vec<Jid> {
        self.index.clear();
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Jid {
        Jid::new(s).unwrap()
    }

    fn list(items: &[&str]) -> BlockList {
        BlockList::new(items.iter().map(|s| j(s)))
    }

    #[test]
    fn a_full_jid_item_matches_that_resource_only() {
        let l = list(&["bob@x/phone"]);
        assert!(l.blocks(&j("bob@x/phone")));
        assert!(!l.blocks(&j("bob@x/laptop")));
        assert!(!l.blocks(&j("bob@x")));
        assert!(!l.blocks(&j("x")));
    }

    #[test]
    fn a_bare_jid_item_matches_every_resource_of_the_account() {
        let l = list(&["bob@x"]);
        assert!(l.blocks(&j("bob@x")));
        assert!(l.blocks(&j("bob@x/phone")));
        assert!(!l.blocks(&j("bobby@x/phone")));
        assert!(!l.blocks(&j("bob@y")));
        assert!(!l.blocks(&j("x")));
        assert!(!l.blocks(&j("x/phone")));
    }

    #[test]
    fn a_domain_resource_item_matches_that_resource_of_the_domain_itself() {
        let l = list(&["x/bot"]);
        assert!(l.blocks(&j("x/bot")));
        assert!(!l.blocks(&j("x")));
        assert!(!l.blocks(&j("bob@x/bot")));
        assert!(!l.blocks(&j("x/other")));
    }

    #[test]
    fn a_domain_item_matches_everything_on_the_domain() {
        let l = list(&["spam.example"]);
        assert!(l.blocks(&j("spam.example")));
        assert!(l.blocks(&j("spam.example/r")));
        assert!(l.blocks(&j("a@spam.example")));
        assert!(l.blocks(&j("a@spam.example/r")));
        assert!(!l.blocks(&j("a@sub.spam.example")));
        assert!(!l.blocks(&j("a@example")));
    }

    #[test]
    fn an_empty_list_blocks_nothing() {
        assert!(!BlockList::default().blocks(&j("a@b/c")));
    }

    #[test]
    fn add_keeps_order_and_skips_repeats() {
        let mut l = list(&["a@x"]);
        let added = l.add([j("b@x"), j("a@x"), j("c@x"), j("b@x")]);
        assert_eq!(added, vec![j("b@x"), j("c@x")]);
        assert_eq!(l.items(), &[j("a@x"), j("b@x"), j("c@x")]);
    }

    #[test]
    fn remove_takes_only_what_was_there_and_clear_empties() {
        let mut l = list(&["a@x", "b@x", "c@x"]);
        assert_eq!(l.remove(&[j("b@x"), j("z@x")]), vec![j("b@x")]);
        assert_eq!(l.items(), &[j("a@x"), j("c@x")]);
        assert!(!l.blocks(&j("b@x/r")));
        assert_eq!(l.clear(), vec![j("a@x"), j("c@x")]);
        assert!(l.is_empty());
        assert!(!l.blocks(&j("a@x")));
    }
}
