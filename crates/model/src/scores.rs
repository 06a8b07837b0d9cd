//! Logits to calibrated probabilities: softmax of logits divided by the manifest's temperature.

use crate::Manifest;

/// The outcome for one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Index of the most probable label.
    pub label: usize,
    /// Calibrated probability per label (sums to 1).
    pub probabilities: Vec<f32>,
}

impl Scores {
    /// Temperature-scaled softmax; ties go to the lower index.
    pub fn from_logits(logits: &[f32], manifest: &Manifest) -> Self {
        let t = manifest.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = logits.iter().map(|&z| ((z - max) / t).exp()).collect();
        let sum: f32 = exps.iter().sum();
        let probabilities: Vec<f32> = exps.iter().map(|e| e / sum).collect();
        let label =
            probabilities.iter().enumerate().fold(0, |best, (i, &p)| if p > probabilities[best] { i } else { best });
        Self { label, probabilities }
    }

    /// Probability of the chosen label.
    pub fn score(&self) -> f32 {
        self.probabilities[self.label]
    }
}
