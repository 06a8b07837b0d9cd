//! A token budget that caps extra attempts (retries, or hedges) at a fraction of real requests.
//!
//! The Envoy/Finagle retry budget: every new request deposits `ratio` tokens, every extra attempt
//! withdraws one whole token and is refused when less than one is left. The budget starts with a
//! reserve of `min_reserve` tokens so that a quiet gateway can still retry, and never holds more
//! than `cap`, so a long calm period cannot buy an unbounded retry storm later. Hence, over any
//! history, extra attempts <= min_reserve + ratio * requests: when a node dies and every attempt on
//! it fails, the cluster sees at most `1 + ratio` times its normal traffic, not a multiple.
//! The same type serves as the hedging budget (ratio 0.05 instead of 0.2).
//!
//! The balance is kept in millionths of a token (integers): no float drift over millions of
//! deposits, and rounding `ratio` down keeps the bound above exact.

/// Fixed-point scale: one token.
const TOKEN: u64 = 1_000_000;

/// Extra attempts allowed per request, with a reserve and a cap. Owned by one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryBudget {
    /// Added by each deposit, in millionths of a token.
    ratio: u64,
    /// The most the balance may hold, in millionths of a token (at least the reserve).
    cap: u64,
    /// Tokens available now, in millionths of a token.
    balance: u64,
}

impl RetryBudget {
    /// A full reserve of `min_reserve` tokens, then `ratio` tokens per request, holding at most `cap`
    /// (raised to `min_reserve` if lower). Negative or NaN arguments count as zero.
    pub fn new(ratio: f64, min_reserve: f64, cap: f64) -> Self {
        let reserve = to_fixed(min_reserve);
        Self { ratio: to_fixed(ratio), cap: to_fixed(cap).max(reserve), balance: reserve }
    }

    /// Called once per new request (not per attempt).
    pub fn deposit(&mut self) {
        self.balance = self.balance.saturating_add(self.ratio).min(self.cap);
    }

    /// Takes one token for an extra attempt; `false` (and nothing taken) when less than one is left.
    pub fn try_withdraw(&mut self) -> bool {
        match self.balance.checked_sub(TOKEN) {
            Some(rest) => {
                self.balance = rest;
                true
            }
            None => false,
        }
    }

    /// Whether [`try_withdraw`](Self::try_withdraw) would succeed now; takes nothing.
    pub fn can_withdraw(&self) -> bool {
        self.balance >= TOKEN
    }

    /// Tokens available now.
    pub fn balance(&self) -> f64 {
        self.balance as f64 / TOKEN as f64
    }
}

/// Millionths of a token, rounded down; saturates for huge values, zero for negative or NaN.
fn to_fixed(tokens: f64) -> u64 {
    (tokens * TOKEN as f64).floor() as u64
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn reserve_then_one_retry_per_five_requests() {
        let mut budget = RetryBudget::new(0.2, 2.0, 100.0);
        assert_eq!(budget.balance(), 2.0);
        assert!(budget.try_withdraw() && budget.try_withdraw());
        assert!(!budget.try_withdraw(), "reserve spent");
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(!budget.try_withdraw(), "0.8 tokens");
        budget.deposit();
        assert!(budget.try_withdraw());
        assert_eq!(budget.balance(), 0.0);
    }

    #[test]
    fn deposits_stop_at_the_cap() {
        let mut budget = RetryBudget::new(0.2, 10.0, 100.0);
        for _ in 0..10_000 {
            budget.deposit();
        }
        assert_eq!(budget.balance(), 100.0);
        assert_eq!(RetryBudget::new(0.2, 10.0, 1.0).balance(), 10.0, "the cap never cuts the reserve");
        assert_eq!(RetryBudget::new(f64::NAN, -1.0, 5.0).balance(), 0.0);
    }

    proptest! {
        #[test]
        fn withdrawals_never_exceed_reserve_plus_ratio_times_deposits(
            ratio in 0.0..1.5f64, min_reserve in 0.0..20.0f64, cap in 0.0..200.0f64,
            ops in prop::collection::vec(any::<bool>(), 0..2_000),
        ) {
            let mut budget = RetryBudget::new(ratio, min_reserve, cap);
            let (mut deposits, mut withdrawals) = (0u32, 0u32);
            for deposit in ops {
                if deposit {
                    budget.deposit();
                    deposits += 1;
                } else if budget.try_withdraw() {
                    withdrawals += 1;
                }
                // The slack only absorbs rounding in the float right-hand side.
                let bound = min_reserve + ratio * f64::from(deposits) + 1e-9;
                prop_assert!(f64::from(withdrawals) <= bound, "{withdrawals} > {bound}");
                prop_assert!(budget.balance() <= cap.max(min_reserve) + 1e-9);
            }
        }
    }
}
