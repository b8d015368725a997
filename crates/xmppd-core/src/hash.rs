//! The hash tables the routing path looks up for every stanza: the session registry, and the
//! per-account state of the modules that look at every message (carbons, blocking).
//!
//! Keyed by addresses that peers choose, they need a hasher seeded at random per process,
//! which std's SipHash is; foldhash (the hasher `hashbrown` uses by default) is too, at a
//! fraction of the cost: on the one-to-one message path SipHash took about 1 700 of the
//! message's instructions (callgrind, `cargo xtask bench --callgrind`).

/// The hasher of the tables below: foldhash's quality variant, seeded per process.
pub type Hasher = foldhash::quality::RandomState;

/// A concurrent map with [`Hasher`]; made with `DashMap::default()`.
pub type DashMap<K, V> = dashmap::DashMap<K, V, Hasher>;

/// A concurrent set with [`Hasher`]; made with `DashSet::default()`.
pub type DashSet<K> = dashmap::DashSet<K, Hasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_tables_hash_the_same_key_apart() {
        use std::hash::BuildHasher;
        // Seeded per table: what one peer learns of one table's layout says nothing of another.
        let (a, b) = (Hasher::default(), Hasher::default());
        let keys = ["juliet@example.org", "romeo@example.org", "example.org"];
        let same = keys
            .iter()
            .filter(|k| a.hash_one(k) == b.hash_one(k))
            .count();
        assert!(same < keys.len());
        let map: DashMap<&str, u8> = DashMap::default();
        map.insert("juliet@example.org", 1);
        assert_eq!(map.get("juliet@example.org").map(|v| *v), Some(1));
    }
}
