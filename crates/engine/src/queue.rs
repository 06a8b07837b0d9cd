//! The batching queue of one inference actor: pure data structure, no I/O, no clock of its own.
//!
//! Texts wait here while the model thread is busy; when it is free the actor takes the next batch.
//! The rule (after TEI's queue, plus length grouping):
//! 1. entries past their deadline leave first (the caller answers them with an error);
//! 2. the oldest entry always goes into the next batch, so nothing starves;
//! 3. the rest of the batch is filled from the next `window` entries, closest in length to the
//!    oldest first, while the padded size (longest x count) stays within the token budget and the
//!    count within `max_size`. Similar lengths mean little padding, so the budget buys real work.

use std::collections::VecDeque;
use std::time::Instant;

/// A queued text.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<P> {
    /// The caller's payload (request id, position, token ids...).
    pub payload: P,
    /// Tokens, special tokens included.
    pub tokens: usize,
    /// After this instant the entry is not run.
    pub deadline: Instant,
}

/// Limits of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Padded tokens: longest entry x entries. A single entry above it still runs alone.
    pub max_tokens: usize,
    /// Entries.
    pub max_size: usize,
    /// How many queued entries, oldest first, are considered for one batch.
    pub window: usize,
}

/// What [`BatchQueue::next_batch`] hands out.
#[derive(Debug)]
pub struct Taken<P> {
    /// To run now, in queue order.
    pub batch: Vec<Entry<P>>,
    /// Past their deadline: to be answered with an error, not run.
    pub expired: Vec<Entry<P>>,
}

/// FIFO of texts with length-grouped batch selection.
#[derive(Debug)]
pub struct BatchQueue<P> {
    entries: VecDeque<Entry<P>>,
    /// Sum of `tokens` over `entries`; kept so load reports are O(1).
    tokens: usize,
}

impl<P> Default for BatchQueue<P> {
    fn default() -> Self {
        Self { entries: VecDeque::new(), tokens: 0 }
    }
}

impl<P> BatchQueue<P> {
    /// Appends at the back.
    pub fn push(&mut self, entry: Entry<P>) {
        self.tokens += entry.tokens;
        self.entries.push_back(entry);
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The oldest entry: the one the next batch starts with.
    pub fn front(&self) -> Option<&Entry<P>> {
        self.entries.front()
    }

    /// Tokens waiting (unpadded).
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Removes every entry whose payload matches (e.g. a request whose client went away).
    pub fn remove_where(&mut self, mut matches: impl FnMut(&P) -> bool) -> Vec<Entry<P>> {
        self.drain_where(|entry| matches(&entry.payload))
    }

    /// Takes the next batch (see the module doc); `now` decides what has expired.
    pub fn next_batch(&mut self, now: Instant, limits: BatchLimits) -> Taken<P> {
        let expired = self.remove_expired(now);
        if self.entries.is_empty() {
            return Taken { batch: Vec::new(), expired };
        }
        let window = limits.window.max(1).min(self.entries.len());
        let anchor_len = self.entries[0].tokens;
        // Candidates after the anchor, closest in length first; ties keep queue order.
        let mut candidates: Vec<usize> = (1..window).collect();
        candidates.sort_by_key(|&i| (self.entries[i].tokens.abs_diff(anchor_len), i));
        let mut chosen = vec![0_usize];
        let mut longest = anchor_len;
        for i in candidates {
            if chosen.len() >= limits.max_size.max(1) {
                break;
            }
            let new_longest = longest.max(self.entries[i].tokens);
            if new_longest * (chosen.len() + 1) > limits.max_tokens {
                continue;
            }
            longest = new_longest;
            chosen.push(i);
        }
        chosen.sort_unstable();
        // Remove chosen indices from the back so earlier indices stay valid.
        let mut batch = Vec::with_capacity(chosen.len());
        for &i in chosen.iter().rev() {
            let entry = self.entries.remove(i).expect("chosen index is in the queue. This is a bug.");
            self.tokens -= entry.tokens;
            batch.push(entry);
        }
        batch.reverse();
        Taken { batch, expired }
    }

    fn remove_expired(&mut self, now: Instant) -> Vec<Entry<P>> {
        if self.entries.iter().all(|e| e.deadline > now) {
            return Vec::new();
        }
        self.drain_where(|entry| entry.deadline <= now)
    }

    /// Removes and returns the entries that match, keeping the others in order.
    fn drain_where(&mut self, mut matches: impl FnMut(&Entry<P>) -> bool) -> Vec<Entry<P>> {
        let mut removed = Vec::new();
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for entry in self.entries.drain(..) {
            if matches(&entry) {
                self.tokens -= entry.tokens;
                removed.push(entry);
            } else {
                kept.push_back(entry);
            }
        }
        self.entries = kept;
        removed
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    const LIMITS: BatchLimits = BatchLimits { max_tokens: 64, max_size: 4, window: 16 };

    fn entry(id: usize, tokens: usize, deadline: Instant) -> Entry<usize> {
        Entry { payload: id, tokens, deadline }
    }

    #[test]
    fn groups_similar_lengths_with_the_oldest() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let mut q = BatchQueue::default();
        for (id, tokens) in [(0, 10), (1, 60), (2, 11), (3, 12), (4, 9)].into_iter() {
            q.push(entry(id, tokens, later));
        }
        let taken = q.next_batch(t0, LIMITS);
        let ids: Vec<_> = taken.batch.iter().map(|e| e.payload).collect();
        assert_eq!(ids, vec![0, 2, 3, 4], "the 60-token text waits for a batch of its own");
        assert_eq!(q.len(), 1);
        assert_eq!(q.tokens(), 60);
    }

    #[test]
    fn oversized_oldest_runs_alone() {
        let t0 = Instant::now();
        let mut q = BatchQueue::default();
        q.push(entry(0, 500, t0 + Duration::from_secs(1)));
        q.push(entry(1, 5, t0 + Duration::from_secs(1)));
        let taken = q.next_batch(t0, LIMITS);
        assert_eq!(taken.batch.len(), 1);
        assert_eq!(taken.batch[0].payload, 0);
    }

    #[test]
    fn expired_entries_are_not_run() {
        let t0 = Instant::now();
        let mut q = BatchQueue::default();
        q.push(entry(0, 5, t0));
        q.push(entry(1, 5, t0 + Duration::from_secs(1)));
        let taken = q.next_batch(t0, LIMITS);
        assert_eq!(taken.expired.iter().map(|e| e.payload).collect::<Vec<_>>(), vec![0]);
        assert_eq!(taken.batch.iter().map(|e| e.payload).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn remove_where_drops_a_cancelled_request() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut q = BatchQueue::default();
        for id in 0..5 {
            q.push(entry(id, id + 1, t0));
        }
        let removed = q.remove_where(|id| id % 2 == 0);
        assert_eq!(removed.len(), 3);
        assert_eq!(q.len(), 2);
        assert_eq!(q.tokens(), 2 + 4);
    }

    proptest! {
        /// Whatever arrives leaves exactly once; every batch respects the limits or is a lone
        /// oversized text; the oldest live entry is always in the next batch; nothing expired runs.
        #[test]
        fn every_entry_leaves_once_within_limits(
            ops in prop::collection::vec((1usize..120, 0u64..50, any::<bool>()), 1..200),
            max_tokens in 16usize..400,
            max_size in 1usize..16,
            window in 1usize..40,
        ) {
            let limits = BatchLimits { max_tokens, max_size, window };
            let t0 = Instant::now();
            let mut q = BatchQueue::default();
            let mut seen = BTreeSet::new();
            let mut pushed = 0usize;
            let mut clock = 0u64;
            for (id, (tokens, ttl, take)) in ops.iter().enumerate() {
                q.push(entry(id, *tokens, t0 + Duration::from_millis(clock + ttl)));
                pushed += 1;
                if *take {
                    clock += 3;
                    let now = t0 + Duration::from_millis(clock);
                    let oldest_live = q.entries.iter().find(|e| e.deadline > now).map(|e| e.payload);
                    let taken = q.next_batch(now, limits);
                    for e in &taken.expired {
                        prop_assert!(e.deadline <= now);
                        prop_assert!(seen.insert(e.payload));
                    }
                    for e in &taken.batch {
                        prop_assert!(e.deadline > now, "expired entry was batched");
                        prop_assert!(seen.insert(e.payload));
                    }
                    prop_assert_eq!(taken.batch.first().map(|e| e.payload), oldest_live);
                    prop_assert!(taken.batch.len() <= max_size);
                    let longest = taken.batch.iter().map(|e| e.tokens).max().unwrap_or(0);
                    prop_assert!(taken.batch.len() <= 1 || longest * taken.batch.len() <= max_tokens);
                    prop_assert!(taken.batch.windows(2).all(|w| w[0].payload < w[1].payload), "queue order kept");
                }
            }
            let now = t0 + Duration::from_millis(clock);
            while !q.is_empty() {
                let taken = q.next_batch(now, limits);
                for e in taken.batch.iter().chain(&taken.expired) {
                    prop_assert!(seen.insert(e.payload));
                }
            }
            prop_assert_eq!(seen.len(), pushed);
            prop_assert_eq!(q.tokens(), 0);
        }
    }
}
