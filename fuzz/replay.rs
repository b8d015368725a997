//! Replays a fuzz target's committed corpus on stable Rust, plus seeded mutations of it: the
//! smoke run of a fuzz target that CI can afford.
//!
//! Each crate that holds a fuzzing oracle includes this file in its `tests/fuzz_corpus.rs`
//! with `#[path]`: those crates share no test dependency, and the corpus lives here.

#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// The files of `fuzz/corpus/<target>/`, sorted by name. Fewer than `min` means the seeds are
/// missing, which must not pass as a clean run.
pub fn corpus(target: &str, min: usize) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).expect("corpus file");
            (p.display().to_string(), data)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= min,
        "the seed corpus is missing: {}",
        dir.display()
    );
    files
}

/// `fuzz/corpus/<target>/`, from the crate whose test includes this file.
fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// The seed `fuzz/corpus/<target>/<name>`.
pub fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = corpus_dir(target).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("seed {}: {e}", path.display()))
}

/// Runs `check` on `input`; on a violation, fails naming the input and showing it.
pub fn replay(what: &str, input: &[u8], check: impl Fn(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
        panic!(
            "{what} failed the oracle: {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

/// Runs `check` on every corpus file and on `rounds` mutations of each: one to seven edits
/// (a random byte, a deletion, or one of `tokens`, the pieces that matter to the grammar under
/// test). The generator is seeded, so a failure reproduces.
pub fn replay_corpus(
    target: &str,
    min: usize,
    rounds: usize,
    tokens: &[&[u8]],
    check: impl Fn(&[u8]),
) {
    let mut rng = SplitMix(0x0078_6d70_7064 ^ target.len() as u64);
    for (name, data) in corpus(target, min) {
        replay(&name, &data, &check);
        for round in 0..rounds {
            let input = mutate(&mut rng, &data, tokens);
            replay(&format!("{name} mutation {round}"), &input, &check);
        }
    }
}

fn mutate(rng: &mut SplitMix, data: &[u8], tokens: &[&[u8]]) -> Vec<u8> {
    let mut input = data.to_vec();
    for _ in 0..1 + rng.below(7) {
        let at = rng.below(input.len() + 1);
        match rng.below(3) {
            0 if at < input.len() => input[at] = rng.next() as u8,
            1 if at < input.len() => {
                input.remove(at);
            }
            _ if !tokens.is_empty() => {
                let token = tokens[rng.below(tokens.len())];
                input.splice(at..at, token.iter().copied());
            }
            _ => input.insert(at, rng.next() as u8),
        }
    }
    input
}

/// SplitMix64: a few lines, no dependency, good enough to pick edits.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
