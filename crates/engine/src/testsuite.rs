//! Helpers for tests of every crate (feature `testsuite`; never in the binary).

use std::time::Duration;

/// Polls `condition` until it holds; panics naming `what` after `limit`. It waits on tokio's
/// clock, so under paused time (`start_paused = true`) the polls cost nothing and the limit is
/// exact. Polls every `limit / 200`, between 1 ms and 50 ms.
pub async fn wait_until(limit: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    wait_until_ok(limit, what, async || if condition().await { Ok(()) } else { Err("not yet".to_owned()) }).await
}

/// [`wait_until`] for checks that can say what is still wrong: polls `check` until it returns
/// `Ok`; after `limit`, panics naming `what` and the last problem `check` reported.
pub async fn wait_until_ok(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> Result<(), String>) {
    let until = tokio::time::Instant::now() + limit;
    let poll = (limit / 200).clamp(Duration::from_millis(1), Duration::from_millis(50));
    loop {
        match check().await {
            Ok(()) => return,
            Err(problem) => assert!(
                tokio::time::Instant::now() < until,
                "timed out after {limit:?} waiting until {what}; last: {problem}"
            ),
        }
        tokio::time::sleep(poll).await;
    }
}

/// Cases per decoder of a fuzz test: `SENTI_FUZZ_CASES` if set (`make fuzz` sets a million),
/// else `default` (the short run of `make test`).
pub fn fuzz_cases(default: u64) -> u64 {
    std::env::var("SENTI_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `cases` byte strings for a decoder, deterministic from `seed`: every third one random (up to
/// `max_len` bytes), the others a valid `seeds` input mutated by one to four edits (a flipped
/// bit, a byte set to 0, 0xff or a random value, a cut, an inserted run of bytes, a copy of
/// another part of the input). Mutations keep the structure mostly intact, so they reach past
/// the first length or tag check, where random bytes rarely get.
pub fn fuzz_inputs(seeds: &[Vec<u8>], cases: u64, seed: u64, max_len: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut state = seed ^ 0x5EED_F022;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..cases).map(move |case| {
        if case % 3 == 0 || seeds.is_empty() {
            let len = (next() % (max_len as u64 + 1)) as usize;
            return (0..len).map(|_| next() as u8).collect();
        }
        let mut bytes = seeds[(next() % seeds.len() as u64) as usize].clone();
        for _ in 0..=(next() % 4) {
            let at = if bytes.is_empty() { 0 } else { (next() % bytes.len() as u64) as usize };
            match next() % 6 {
                0 if !bytes.is_empty() => bytes[at] ^= 1 << (next() % 8),
                1 if !bytes.is_empty() => bytes[at] = [0x00, 0xff, next() as u8][(next() % 3) as usize],
                2 => bytes.truncate(at),
                3 => {
                    let run: Vec<u8> = (0..=(next() % 8)).map(|_| next() as u8).collect();
                    bytes.splice(at..at, run);
                }
                4 if !bytes.is_empty() => {
                    let from = (next() % bytes.len() as u64) as usize;
                    let len = ((next() % 16) as usize).min(bytes.len() - from);
                    let part = bytes[from..from + len].to_vec();
                    bytes.splice(at..at, part);
                }
                _ => {
                    let value = next() as u8;
                    bytes.push(value);
                }
            }
        }
        bytes.truncate(max_len.max(1) * 2);
        bytes
    })
}
