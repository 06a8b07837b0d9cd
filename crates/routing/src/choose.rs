//! Picking a target from load estimates: power-of-two-choices, and least-loaded as the oracle.
//!
//! Power-of-two-choices samples two distinct candidates uniformly and keeps the less loaded one.
//! Unlike least-loaded it does not send every gateway to the same minimum when their views agree
//! (or are equally stale), yet it still avoids the worst targets: the most loaded one is never
//! chosen. Least-loaded is the policy for a handful of targets, and the reference the simulator
//! compares against. Both share one comparison, [`better`]: lower estimate; estimates within a
//! relative (or absolute) 1e-9 count as equal, and then a local target beats a remote one (no
//! network hop), then the lower index (deterministic; the samplers use a coin instead). A NaN
//! estimate counts as infinitely loaded. [`local_plus_sampled_remote`] is what the gateway uses:
//! all local candidates plus a sample of the remote ones, two or, while the gateway sends most of
//! its work away, eight ([`RemoteSampling`]; docs/simulations.md measures both).

use rand::Rng;

/// A target that may receive the next attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The caller's index of the target; returned by the choosers.
    pub index: usize,
    /// Estimated tokens ahead of a new attempt ([`estimate`](crate::estimate)).
    pub estimate: f64,
    /// Whether the target runs in this process.
    pub is_local: bool,
}

/// Estimates closer than this (relative to the larger, or absolute below 1) are a tie.
const TIE_TOLERANCE: f64 = 1e-9;

/// Power-of-two-choices: the better of two distinct candidates sampled uniformly. `None` only when
/// `candidates` is empty; with one or two candidates no randomness is used. Between two equal
/// estimates of the same locality the first sampled wins, which is a fair coin: breaking such ties
/// by index would send every gateway's ties to the low-numbered actors.
pub fn power_of_two_choices<R: Rng + ?Sized>(candidates: &[Candidate], rng: &mut R) -> Option<usize> {
    match candidates {
        [] => None,
        [only] => Some(only.index),
        [a, b] => Some(pick(a, b).index),
        _ => {
            let (i, j) = sample_two(candidates.len(), rng);
            let (a, b) = (&candidates[i], &candidates[j]);
            Some(if better_ignoring_index(b, a) { b.index } else { a.index })
        }
    }
}

/// Remote actors a gateway compares while most of its work stays on its node.
pub const FEW_REMOTE_SAMPLES: usize = 2;

/// Remote actors a gateway compares while most of its work goes to other nodes.
pub const MANY_REMOTE_SAMPLES: usize = 8;

/// The share of recent placements sent to another node above which a gateway compares
/// [`MANY_REMOTE_SAMPLES`].
const MANY_SAMPLES_ABOVE: f64 = 0.5;

/// How many placements the remote share remembers: the newest weighs `1 / REMOTE_SHARE_MEMORY`.
const REMOTE_SHARE_MEMORY: f64 = 512.0;

/// How many remote candidates one gateway samples: [`FEW_REMOTE_SAMPLES`], or
/// [`MANY_REMOTE_SAMPLES`] while more than half of its recent placements went to another node.
///
/// A gateway that keeps most work local compares two remote actors: when a burst sends every
/// gateway's work away at once, gateways comparing more values a few hundred milliseconds old
/// pick the same few actors that only look empty. A gateway that sends most of its work away all
/// the time (every client enters it, or its node is the slow one) gains from comparing more: for
/// it the decision that matters is which remote actor, and its own answers keep those values
/// fresh. The share is remembered over hundreds of placements so that a burst does not switch it
/// (docs/simulations.md measures fixed and adaptive counts).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RemoteSampling {
    remote_share: f64,
}

impl RemoteSampling {
    /// Remote candidates to sample for the next placement.
    pub fn samples(&self) -> usize {
        if self.remote_share > MANY_SAMPLES_ABOVE {
            MANY_REMOTE_SAMPLES
        } else {
            FEW_REMOTE_SAMPLES
        }
    }

    /// Notes where the estimates sent a first placement (retries and hedges are not counted: a
    /// hedge always leaves the node; nor is an idle notice that replaced the choice: it says
    /// nothing about what comparing more remote actors would change).
    pub fn record(&mut self, went_remote: bool) {
        let remote = if went_remote { 1.0 } else { 0.0 };
        self.remote_share += (remote - self.remote_share) / REMOTE_SHARE_MEMORY;
    }

    /// The weighted share of recent first placements that went to another node.
    pub fn remote_share(&self) -> f64 {
        self.remote_share
    }
}

/// The gateway's placement: every local candidate (its load is exact and costs nothing to read)
/// and `remote_samples` distinct remote candidates sampled uniformly (all of them when there are
/// no more); the best of these wins. Local actors get work without a hop unless a sampled remote
/// one is estimated lighter, and a remote estimate includes the hop's cost
/// ([`estimate`](crate::estimate)), so that means lighter by more than the hop. Remote actors are
/// still sampled, not all compared, so stale gossip cannot send every gateway to the same one.
/// Ties: local first, then the earlier sampled. `None` when nothing is compared: no candidates,
/// or no local ones and `remote_samples` 0.
pub fn local_plus_sampled_remote<R: Rng + ?Sized>(
    candidates: &[Candidate],
    remote_samples: usize,
    rng: &mut R,
) -> Option<usize> {
    let remote: Vec<&Candidate> = candidates.iter().filter(|c| !c.is_local).collect();
    let sampled: Vec<&Candidate> = if remote.len() <= remote_samples {
        remote
    } else if remote_samples == 2 {
        // The gateway's case, without `index::sample`'s allocation on the request path.
        let (i, j) = sample_two(remote.len(), rng);
        vec![remote[i], remote[j]]
    } else {
        rand::seq::index::sample(rng, remote.len(), remote_samples).into_iter().map(|i| remote[i]).collect()
    };
    let mut best: Option<&Candidate> = None;
    for candidate in candidates.iter().filter(|c| c.is_local).chain(sampled) {
        best = match best {
            Some(current) if !better_ignoring_index(candidate, current) => Some(current),
            _ => Some(candidate),
        };
    }
    best.map(|c| c.index)
}

/// The least-loaded candidate, ties broken as in [`power_of_two_choices`]. `None` when empty.
///
/// Ties are resolved among the candidates roughly equal to the minimum rather than by folding
/// `better` over the slice: "roughly equal" is not transitive, and a fold could drift up a chain
/// of near-ties away from the minimum.
pub fn least_loaded(candidates: &[Candidate]) -> Option<usize> {
    let lowest = candidates.iter().map(load).min_by(f64::total_cmp)?;
    candidates.iter().filter(|c| roughly_equal(load(c), lowest)).reduce(pick).map(|c| c.index)
}

/// The better of two candidates (`a` unless `b` is strictly better).
fn pick<'a>(a: &'a Candidate, b: &'a Candidate) -> &'a Candidate {
    if better(b, a) {
        b
    } else {
        a
    }
}

/// Whether `a` should be chosen over `b`: lower estimate, then local, then lower index.
fn better(a: &Candidate, b: &Candidate) -> bool {
    let (load_a, load_b) = (load(a), load(b));
    if !roughly_equal(load_a, load_b) {
        return load_a < load_b;
    }
    if a.is_local != b.is_local {
        return a.is_local;
    }
    a.index < b.index
}

/// Like [`better`] without the index rule: equal estimates of the same locality are not better.
fn better_ignoring_index(a: &Candidate, b: &Candidate) -> bool {
    let (load_a, load_b) = (load(a), load(b));
    if !roughly_equal(load_a, load_b) {
        return load_a < load_b;
    }
    a.is_local && !b.is_local
}

/// The estimate, with NaN (a bug upstream) read as infinitely loaded rather than poisoning comparisons.
fn load(candidate: &Candidate) -> f64 {
    if candidate.estimate.is_nan() {
        f64::INFINITY
    } else {
        candidate.estimate
    }
}

fn roughly_equal(a: f64, b: f64) -> bool {
    if a.is_infinite() || b.is_infinite() {
        return a == b; // A relative tolerance of infinity would tie everything.
    }
    (a - b).abs() <= TIE_TOLERANCE * a.abs().max(b.abs()).max(1.0)
}

/// Two distinct positions in `0..n` (n >= 2), every ordered pair equally likely.
fn sample_two<R: Rng + ?Sized>(n: usize, rng: &mut R) -> (usize, usize) {
    let first = rng.random_range(0..n);
    let second = rng.random_range(0..n - 1);
    (first, if second >= first { second + 1 } else { second })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    fn remote(index: usize, estimate: f64) -> Candidate {
        Candidate { index, estimate, is_local: false }
    }

    fn local(index: usize, estimate: f64) -> Candidate {
        Candidate { index, estimate, is_local: true }
    }

    #[test]
    fn a_gateway_that_sends_most_work_away_compares_more_remote_actors_and_a_burst_does_not_switch_it() {
        let mut sampling = RemoteSampling::default();
        assert_eq!(sampling.samples(), FEW_REMOTE_SAMPLES);
        // A burst: 100 placements in a row go away, after a long run that stayed local.
        for _ in 0..5_000 {
            sampling.record(false);
        }
        for _ in 0..100 {
            sampling.record(true);
        }
        assert_eq!(sampling.samples(), FEW_REMOTE_SAMPLES, "share {}", sampling.remote_share());
        // Every client on this gateway: nearly all its work goes away, for good.
        for _ in 0..1_000 {
            sampling.record(true);
        }
        assert_eq!(sampling.samples(), MANY_REMOTE_SAMPLES, "share {}", sampling.remote_share());
        // Back to mostly local (three in four): two samples again.
        for i in 0..2_000 {
            sampling.record(i % 4 == 0);
        }
        assert_eq!(sampling.samples(), FEW_REMOTE_SAMPLES, "share {}", sampling.remote_share());
    }

    #[test]
    fn p2c_ties_are_a_fair_coin_not_the_lower_index() {
        let cands: Vec<Candidate> = (0..8).map(|i| remote(i, 0.0)).collect();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut hits = [0u32; 8];
        for _ in 0..80_000 {
            hits[power_of_two_choices(&cands, &mut rng).unwrap()] += 1;
        }
        assert!(hits.iter().all(|&h| (9_000..11_000).contains(&h)), "{hits:?}");
    }

    #[test]
    fn small_inputs() {
        let mut rng = SmallRng::seed_from_u64(7);
        assert_eq!(power_of_two_choices(&[], &mut rng), None);
        assert_eq!(power_of_two_choices(&[remote(4, 9.0)], &mut rng), Some(4));
        assert_eq!(power_of_two_choices(&[remote(4, 9.0), remote(8, 3.0)], &mut rng), Some(8));
        assert_eq!(power_of_two_choices(&[remote(4, 3.0), local(8, 3.0)], &mut rng), Some(8), "tie goes local");
        assert_eq!(power_of_two_choices(&[remote(4, 3.0), remote(2, 3.0)], &mut rng), Some(2), "then low index");
        assert_eq!(least_loaded(&[]), None);
    }

    #[test]
    fn near_ties_prefer_local_but_stay_at_the_minimum() {
        assert_eq!(least_loaded(&[remote(0, 1000.0), local(1, 1000.0 + 1e-7)]), Some(1));
        assert_eq!(least_loaded(&[remote(0, 1000.0), local(1, 1000.0 + 1e-3)]), Some(0));
        // Each neighbour ties with the next, so a pairwise fold would walk up to index 0; only index 2
        // ties with the minimum itself.
        let chain = [local(3, 0.0), local(2, 0.9e-9), local(1, 1.8e-9), local(0, 2.7e-9)];
        assert_eq!(least_loaded(&chain), Some(2));
        assert_eq!(least_loaded(&[remote(0, f64::NAN), remote(1, 1e12)]), Some(1), "NaN is never least loaded");
    }

    #[test]
    fn p2c_never_picks_the_worst_and_favours_the_best() {
        let candidates = [remote(0, 10.0), remote(1, 20.0), remote(2, 30.0)];
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[power_of_two_choices(&candidates, &mut rng).unwrap()] += 1;
        }
        // Of the 3 equally likely pairs, the best is in two and the middle wins one.
        assert_eq!(counts[2], 0);
        assert!((19_000..21_000).contains(&counts[0]), "{counts:?}");
    }

    /// Candidates with small integer estimates (so ties are common) and scattered indices.
    fn candidates(max_len: usize) -> impl Strategy<Value = Vec<Candidate>> {
        prop::collection::vec((0u8..4, any::<bool>()), 0..max_len).prop_map(|v| {
            let to_candidate = |i, (est, is_local)| Candidate { index: i * 3 + 1, estimate: f64::from(est), is_local };
            v.into_iter().enumerate().map(|(i, c)| to_candidate(i, c)).collect()
        })
    }

    proptest! {
        #[test]
        fn choices_are_input_indices_and_none_only_when_empty(cands in candidates(12), seed in any::<u64>()) {
            let mut rng = SmallRng::seed_from_u64(seed);
            for chosen in [power_of_two_choices(&cands, &mut rng), least_loaded(&cands)] {
                prop_assert_eq!(chosen.is_none(), cands.is_empty());
                prop_assert!(chosen.is_none_or(|i| cands.iter().any(|c| c.index == i)));
            }
        }

        #[test]
        fn least_loaded_is_the_minimum_preferring_local_then_low_index(cands in candidates(12)) {
            let expected = cands.iter().min_by_key(|c| (c.estimate as u8, !c.is_local, c.index)).map(|c| c.index);
            prop_assert_eq!(least_loaded(&cands), expected);
        }

        #[test]
        fn p2c_keeps_the_better_of_its_two_samples(cands in candidates(12), seed in any::<u64>()) {
            prop_assume!(cands.len() > 2);
            let (i, j) = sample_two(cands.len(), &mut SmallRng::seed_from_u64(seed));
            prop_assert_ne!(i, j);
            let chosen = power_of_two_choices(&cands, &mut SmallRng::seed_from_u64(seed)).unwrap();
            let other = if chosen == cands[i].index { &cands[j] } else { &cands[i] };
            prop_assert!(chosen == cands[i].index || chosen == cands[j].index);
            let chosen = cands.iter().find(|c| c.index == chosen).unwrap();
            prop_assert!(!better_ignoring_index(other, chosen), "{other:?} beats the chosen {chosen:?}");
        }

        #[test]
        fn local_plus_sampled_remote_never_loses_to_a_local_candidate(cands in candidates(12), seed in any::<u64>()) {
            let chosen = local_plus_sampled_remote(&cands, FEW_REMOTE_SAMPLES, &mut SmallRng::seed_from_u64(seed));
            prop_assert_eq!(chosen.is_none(), cands.is_empty());
            if let Some(chosen) = chosen {
                let chosen = cands.iter().find(|c| c.index == chosen).unwrap();
                for local in cands.iter().filter(|c| c.is_local) {
                    prop_assert!(!better_ignoring_index(local, chosen), "{local:?} beats the chosen {chosen:?}");
                }
            }
        }

        #[test]
        fn sampling_more_remote_candidates_never_loses_to_a_local_one_and_all_of_them_finds_the_minimum(
            cands in candidates(12), samples in 0usize..6, seed in any::<u64>(),
        ) {
            let chosen = local_plus_sampled_remote(&cands, samples, &mut SmallRng::seed_from_u64(seed));
            prop_assert_eq!(chosen.is_none(), cands.is_empty() || (samples == 0 && cands.iter().all(|c| !c.is_local)));
            if let Some(chosen) = chosen {
                let chosen = cands.iter().find(|c| c.index == chosen).unwrap();
                for local in cands.iter().filter(|c| c.is_local) {
                    prop_assert!(!better_ignoring_index(local, chosen), "{local:?} beats the chosen {chosen:?}");
                }
            }
            // Sampling at least as many as there are remote candidates compares every candidate.
            let remote = cands.iter().filter(|c| !c.is_local).count();
            let everyone = local_plus_sampled_remote(&cands, remote, &mut SmallRng::seed_from_u64(seed));
            if let Some(everyone) = everyone {
                let everyone = cands.iter().find(|c| c.index == everyone).unwrap();
                for other in &cands {
                    prop_assert!(!better_ignoring_index(other, everyone), "{other:?} beats {everyone:?}");
                }
            }
        }

        #[test]
        fn p2c_never_picks_the_unique_maximum(
            estimates in Just((0..10).map(f64::from).collect::<Vec<_>>()).prop_shuffle(),
            len in 2usize..10,
            seed in any::<u64>(),
        ) {
            let cands: Vec<_> = estimates[..len].iter().enumerate().map(|(i, &e)| remote(i, e)).collect();
            let worst = cands.iter().max_by(|a, b| a.estimate.total_cmp(&b.estimate)).unwrap().index;
            prop_assert_ne!(power_of_two_choices(&cands, &mut SmallRng::seed_from_u64(seed)), Some(worst));
        }
    }
}
