//! Replays the committed fuzz corpus through the fuzzing oracle on stable Rust, under every
//! chunk size a corpus file could select, plus seeded random mutations of each file: a smoke run
//! of the fuzz target that CI can afford.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use xmppd_stream::fuzzing::check;

/// Bytes that make mutations hit the XML grammar rather than only text.
const XML_BYTES: &[u8] = b"<>/='\"&;:x \n?!-[";

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/stream_framer");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).expect("corpus file"),
            )
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "the seed corpus is missing: {}",
        dir.display()
    );
    files
}

#[test]
fn corpus_passes_the_oracle_at_every_chunk_size() {
    for (name, data) in corpus() {
        let Some((_, stream)) = data.split_first() else {
            continue;
        };
        for chunk in [0u8, 1, 2, 3, 7, 16, 64, 255] {
            let mut input = vec![chunk];
            input.extend_from_slice(stream);
            let r = std::panic::catch_unwind(|| check(&input));
            assert!(
                r.is_ok(),
                "{name} failed the oracle with chunk size {chunk}"
            );
        }
    }
}

#[test]
fn mutated_corpus_passes_the_oracle() {
    let mut rng = StdRng::seed_from_u64(0x0078_6d70_7064);
    for (name, data) in corpus() {
        for round in 0..200 {
            let mut input = data.clone();
            for _ in 0..rng.gen_range(1..8) {
                if input.is_empty() {
                    break;
                }
                let at = rng.gen_range(0..input.len());
                match rng.gen_range(0..3) {
                    0 => input[at] = rng.gen(),
                    1 => {
                        input.remove(at);
                    }
                    _ => input.insert(at, XML_BYTES[rng.gen_range(0..XML_BYTES.len())]),
                }
            }
            let r = std::panic::catch_unwind(|| check(&input));
            assert!(
                r.is_ok(),
                "{name} mutation {round} failed the oracle: {input:?}"
            );
        }
    }
}
