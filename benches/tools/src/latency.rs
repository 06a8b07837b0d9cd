//! Latency histograms: microseconds into an HdrHistogram (3 significant digits, 1 us to 1 hour),
//! summarised in milliseconds. One recorder per worker thread or task, merged at the end, so
//! recording never takes a lock.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest value the histogram tracks exactly: one hour in microseconds. Longer samples are
/// clamped to it (a benchmark never runs that long).
const MAX_MICROS: u64 = 3_600_000_000;

/// Latencies of one worker, or of several merged.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        let histogram =
            Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid. This is a bug.");
        Self { histogram }
    }
}

impl LatencyRecorder {
    /// Records one sample (clamped to 1 us .. 1 h).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
        self.histogram.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyRecorder) {
        // Same bounds on both sides, so `add` cannot fail.
        self.histogram.add(&other.histogram).expect("recorders share their bounds. This is a bug.");
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// Mean, percentiles and maximum in milliseconds (all zero without samples).
    pub fn summary(&self) -> LatencySummary {
        if self.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        let h = &self.histogram;
        LatencySummary {
            samples: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub samples: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut recorder = LatencyRecorder::default();
        for ms in 1..=100 {
            recorder.record(Duration::from_millis(ms));
        }
        let s = recorder.summary();
        assert_eq!(s.samples, 100);
        assert!((s.p50 - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99 - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max - 100.0).abs() < 0.1, "{s:?}");
        assert!((s.mean - 50.5).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn merge_adds_samples_and_empty_is_zero() {
        let mut a = LatencyRecorder::default();
        let mut b = LatencyRecorder::default();
        assert_eq!(a.summary(), LatencySummary::default());
        a.record(Duration::from_micros(10));
        b.record(Duration::from_secs(7200)); // clamped, not dropped
        a.merge(&b);
        assert_eq!(a.len(), 2);
        assert!(a.summary().max >= 3_599_000.0);
    }
}
