//! The session fuzz target's model (fuzz/fuzz_targets/session_model.rs) under `cargo test`:
//! replays its corpus (fuzz/corpus/session) and a seeded random run, so its invariants are
//! checked on every CI run even without cargo-fuzz.

#[path = "../fuzz/fuzz_targets/session_model.rs"]
mod session_model;

/// xorshift: deterministic, no dependency.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn corpus_replays_clean() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/session");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("the session corpus is in the repo") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        session_model::run(&data);
        n += 1;
    }
    assert!(n > 0, "empty corpus");
}

#[test]
fn seeded_random_runs_keep_the_invariants() {
    for seed in 0..3_000u64 {
        let n = 16 + (seed as usize * 37) % 3_000;
        session_model::run(&bytes(seed, n));
    }
}
