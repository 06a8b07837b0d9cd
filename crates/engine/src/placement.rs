//! Placement decisions as pure functions over load snapshots (unit- and property-tested).
//!
//! One node: the least-loaded actor wins, ties to the lowest index. The cluster issue extends this
//! with gossiped remote loads, power-of-two-choices and ejection.

/// A placement candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The target's index.
    pub index: usize,
    /// Estimated work ahead of a new arrival (tokens, plus outstanding attempts).
    pub load: u64,
}

/// The least-loaded candidate; ties go to the lowest index. `None` when there are none.
pub fn least_loaded(candidates: impl IntoIterator<Item = Candidate>) -> Option<usize> {
    candidates.into_iter().min_by_key(|c| (c.load, c.index)).map(|c| c.index)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn picks_least_loaded_and_breaks_ties_low() {
        let c = |index, load| Candidate { index, load };
        assert_eq!(least_loaded([c(0, 5), c(1, 3), c(2, 3)]), Some(1));
        assert_eq!(least_loaded([]), None);
    }

    proptest! {
        #[test]
        fn no_candidate_is_less_loaded_than_the_choice(loads in prop::collection::vec(0u64..100, 1..20)) {
            let chosen = least_loaded(loads.iter().enumerate().map(|(index, &load)| Candidate { index, load })).unwrap();
            prop_assert!(loads.iter().all(|&l| l >= loads[chosen]));
        }
    }
}
