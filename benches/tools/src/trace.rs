//! Which texts each request of a load run sends: the trace.
//!
//! - [`Trace::Cycle`] (the default): the payload's texts in order, wrapping around. A run longer
//!   than the payload sends every text again, so a server with a result cache answers the second
//!   pass from it: fine for measuring the model and the request path with the cache off, not for
//!   measuring the cache.
//! - [`Trace::Repeats`]: trace position `i` is normally a new text, the payload's text `i`; with
//!   probability `share` it repeats the text of an earlier position instead, picked with a Zipf
//!   popularity of exponent 1 (position `j < i` with probability `ln((j+2)/(j+1)) / ln(i+1)`,
//!   about `1/(j+1.5)`: the earliest texts are the most popular, as templates like 好评 would be).
//!   So `share` of the requests repeat a text sent before (the hit rate of an unbounded cache),
//!   and the others are distinct as long as the payload lasts ([`Requests::wrapped`] says when it
//!   did not). `share = 1` sends the first text over and over.
//!
//! Every choice is a pure function of the seed and the position (no state shared between
//! workers), so both sides of an A/B comparison replay the same trace, and a run can continue an
//! earlier run's trace where it stopped (`start`), so a server's cache never sees one run's new
//! texts again in the next.

use std::sync::Arc;

use bytes::Bytes;

use crate::load::Route;
use crate::payload::splitmix64;

/// How trace positions map to texts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trace {
    /// Position `i` is text `i` (wrapping around the payload).
    Cycle,
    /// Position `i` repeats an earlier position's text with probability `share`, else is new.
    Repeats {
        /// Share of positions that repeat an earlier text, 0 to 1.
        share: f64,
        /// Seed of the choices (independent of the payload's shuffle).
        seed: u64,
    },
}

impl Trace {
    /// The text (an index into an endless sequence of new texts) sent at trace position
    /// `position`: the position itself for a new text, else the text of an earlier position.
    pub fn text_at(&self, position: u64) -> u64 {
        let Trace::Repeats { share, seed } = *self else {
            return position;
        };
        let mut i = position;
        // Each step goes to a strictly earlier position, and position 0 is always new.
        while i > 0 {
            let mut state = seed ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93);
            if unit(splitmix64(&mut state)) >= share {
                return i;
            }
            // Inverse of the continuous 1/x law on [1, i+1): floor((i+1)^v) is 1..=i.
            let v = unit(splitmix64(&mut state));
            let rank = ((i as f64 + 1.0).powf(v).floor() as u64).clamp(1, i);
            i = rank - 1;
        }
        0
    }
}

/// A uniform number in [0, 1) from 53 random bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1_u64 << 53) as f64
}

/// The request bodies of a run: ticket `k` (the run's `k`-th request) is request `start + k` of
/// the trace, and carries the texts of trace positions `(start + k) * n .. (start + k + 1) * n`
/// for `n` texts per request. Cheap to clone (the texts and bodies are shared).
#[derive(Debug, Clone)]
pub struct Requests {
    route: Route,
    texts: Arc<[String]>,
    /// [`Trace::Cycle`]: the route's bodies ([`Route::bodies`]); [`Trace::Repeats`] on `/analyze`:
    /// one per text; on `/v1/classify`: none, each body is built when sent (a few microseconds).
    bodies: Arc<[Bytes]>,
    trace: Trace,
    start: u64,
}

impl Requests {
    /// The bodies for `route` over `texts` in `trace` order, from trace request `start` on.
    pub fn new(route: Route, texts: Vec<String>, trace: Trace, start: u64) -> Self {
        let bodies = match (trace, route) {
            (Trace::Cycle, _) => route.bodies(&texts),
            (Trace::Repeats { .. }, Route::Analyze) => Route::Analyze.bodies(&texts),
            (Trace::Repeats { .. }, Route::Classify { .. }) => Vec::new(),
        };
        Self { route, texts: texts.into(), bodies: bodies.into(), trace, start }
    }

    /// The body of the run's request `ticket`; `None` without texts.
    pub fn body(&self, ticket: u64) -> Option<Bytes> {
        let request = self.start.checked_add(ticket)?;
        let len = self.texts.len() as u64;
        match (self.trace, self.route) {
            (Trace::Cycle, _) => self.bodies.get(request.checked_rem(self.bodies.len() as u64)? as usize).cloned(),
            (Trace::Repeats { .. }, Route::Analyze) => {
                self.bodies.get(self.trace.text_at(request).checked_rem(len)? as usize).cloned()
            }
            (Trace::Repeats { .. }, Route::Classify { .. }) => {
                let per = self.route.texts_per_request() as u64;
                let texts: Option<Vec<&str>> = (0..per)
                    .map(|j| {
                        let text = self.trace.text_at(request.checked_mul(per)?.checked_add(j)?).checked_rem(len)?;
                        Some(self.texts[text as usize].as_str())
                    })
                    .collect();
                Some(Bytes::from(serde_json::json!({ "texts": texts? }).to_string()))
            }
        }
    }

    /// Whether the run's first `requests` requests needed a new text past the payload's last
    /// one, so that some texts meant to be new had been sent before (in this run or an earlier
    /// part of the trace); for [`Trace::Cycle`], whether the run went round more than once.
    pub fn wrapped(&self, requests: u64) -> bool {
        let end = self.start.saturating_add(requests).saturating_mul(self.route.texts_per_request() as u64);
        let len = self.texts.len() as u64;
        match self.trace {
            Trace::Cycle => end > len,
            // A position is new exactly when it sends its own text.
            Trace::Repeats { .. } => (len..end).any(|position| self.trace.text_at(position) == position),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn texts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i}")).collect()
    }

    #[test]
    fn the_share_of_repeats_is_the_one_asked_for() {
        for share in [0.0, 0.005, 0.3, 0.9] {
            let trace = Trace::Repeats { share, seed: 7 };
            let positions = 200_000_u64;
            let mut seen = HashSet::new();
            let repeats = (0..positions).filter(|&i| !seen.insert(trace.text_at(i))).count();
            let measured = repeats as f64 / positions as f64;
            assert!((measured - share).abs() < 0.01, "share {share}: measured {measured}");
        }
    }

    #[test]
    fn a_repeat_is_of_an_earlier_text_and_early_texts_are_the_popular_ones() {
        let trace = Trace::Repeats { share: 0.3, seed: 1 };
        let mut counts = vec![0_u32; 20_000];
        for i in 0..20_000_u64 {
            let text = trace.text_at(i);
            assert!(text <= i, "position {i} sent text {text}");
            counts[text as usize] += 1;
        }
        assert_eq!(trace.text_at(0), 0);
        let first: u32 = counts[..10].iter().sum();
        let later: u32 = counts[10_000..10_010].iter().sum();
        assert!(first > 10 * later, "the first texts are the popular ones: {first} against {later}");
        assert_eq!(Trace::Repeats { share: 1.0, seed: 3 }.text_at(12_345), 0, "share 1: one text");
        assert_eq!(Trace::Cycle.text_at(12_345), 12_345);
    }

    #[test]
    fn the_trace_is_fixed_by_its_seed() {
        let a = Trace::Repeats { share: 0.3, seed: 1 };
        let b = Trace::Repeats { share: 0.3, seed: 2 };
        let sent = |t: Trace| (0..1_000).map(|i| t.text_at(i)).collect::<Vec<_>>();
        assert_eq!(sent(a), sent(a));
        assert_ne!(sent(a), sent(b));
    }

    #[test]
    fn bodies_follow_the_trace_from_the_start_request() {
        let cycle = Requests::new(Route::Analyze, texts(3), Trace::Cycle, 1);
        assert_eq!(cycle.body(0), Some(Bytes::from(r#"{"text":"t1"}"#)));
        assert_eq!(cycle.body(2), Some(Bytes::from(r#"{"text":"t0"}"#)), "wraps");
        assert!(!cycle.wrapped(2) && cycle.wrapped(3));

        let distinct = Trace::Repeats { share: 0.0, seed: 1 };
        let analyze = Requests::new(Route::Analyze, texts(10), distinct, 4);
        assert_eq!(analyze.body(1), Some(Bytes::from(r#"{"text":"t5"}"#)));
        let classify = Requests::new(Route::Classify { texts_per_request: 2 }, texts(10), distinct, 1);
        assert_eq!(classify.body(1), Some(Bytes::from(r#"{"texts":["t4","t5"]}"#)));
        assert!(!classify.wrapped(4) && classify.wrapped(5));

        let one = Requests::new(Route::Analyze, texts(10), Trace::Repeats { share: 1.0, seed: 1 }, 0);
        assert!((0..50).all(|k| one.body(k) == Some(Bytes::from(r#"{"text":"t0"}"#))));
        assert!(!one.wrapped(50), "one text never runs out");
        assert_eq!(Requests::new(Route::Analyze, Vec::new(), distinct, 0).body(0), None);
    }
}
