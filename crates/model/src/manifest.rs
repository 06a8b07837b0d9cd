//! model.toml: what the server needs to know about a model folder (format in docs/models.md).
//!
//! The manifest is written by `models/train/train.py` and `models/export/export.py`; every file it
//! names has its sha256 here, and [`Manifest::verify`] refuses a folder whose files do not match.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::ModelError;

/// The parsed model.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Model name, reported in every response.
    pub name: String,
    /// Model version, reported in every response.
    pub version: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Most tokens per text, [CLS] and [SEP] included; longer texts are truncated.
    pub max_length: usize,
    /// Logits are divided by this before the softmax (calibration; 1.0 means none).
    pub temperature: f32,
    /// The tokenizer file (Hugging Face tokenizers JSON).
    pub tokenizer: String,
    /// The variant served unless configured otherwise.
    pub default_variant: String,
    /// Variant name (`fp32`, `int8`, ...) to ONNX file.
    pub variants: BTreeMap<String, String>,
    /// Graph input and output names.
    pub io: IoNames,
    /// Labels in logit index order.
    pub labels: Vec<Label>,
    /// File name to lowercase hex sha256.
    pub sha256: BTreeMap<String, String>,
}

/// Names of the ONNX graph's inputs and output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoNames {
    /// int64 [batch, sequence] token ids.
    pub input_ids: String,
    /// int64 [batch, sequence], 1 for real tokens.
    pub attention_mask: String,
    /// int64 [batch, sequence] segment ids; absent for models without them.
    pub token_type_ids: Option<String>,
    /// float [batch, labels].
    pub logits: String,
}

/// One output class.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// Index in the logits.
    pub index: usize,
    /// English name (`negative`, `positive`).
    pub name: String,
    /// Chinese name (负面, 正面).
    pub name_zh: String,
}

impl Manifest {
    /// Parses and checks internal consistency (labels in order, variants hashed, sane numbers).
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        let manifest: Manifest = toml::from_str(text).map_err(|err| ModelError::Manifest(err.to_string()))?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::Manifest(msg));
        if self.labels.len() < 2 {
            return bad(format!("`labels` needs at least 2 entries, got {}", self.labels.len()));
        }
        if let Some((pos, label)) = self.labels.iter().enumerate().find(|(pos, l)| l.index != *pos) {
            return bad(format!("`labels[{pos}].index` must be {pos}, got {}", label.index));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!("`temperature` must be a positive number, got {}", self.temperature));
        }
        if self.max_length < 3 {
            return bad(format!("`max_length` must be at least 3, got {}", self.max_length));
        }
        if !self.variants.contains_key(&self.default_variant) {
            return bad(format!("`default_variant` {:?} is not in `variants`", self.default_variant));
        }
        for file in self.variants.values().chain(std::iter::once(&self.tokenizer)) {
            if !self.sha256.contains_key(file) {
                return bad(format!("`sha256` has no entry for {file:?}"));
            }
        }
        Ok(())
    }

    /// `name@version`: how responses, gossip and requests name this model.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// What must match for another node's actors to take token ids computed with this model's
    /// tokenizer and to answer in its label order: the tokenizer file's sha256, the window and
    /// the labels, hashed to 16 hex digits. Two versions of a model that only retrained the
    /// weights share it; a new vocabulary, window or label set does not.
    pub fn compat(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.sha256.get(&self.tokenizer).map_or("", String::as_str).to_ascii_lowercase());
        hash.update(format!("\n{}\n", self.max_length));
        for label in &self.labels {
            hash.update(format!("{}:{}:{}\n", label.index, label.name, label.name_zh));
        }
        hex::encode(&hash.finalize()[..8])
    }

    /// The ONNX file of a variant (`None`: the default one).
    pub fn variant_file(&self, variant_opt: Option<&str>) -> Result<(&str, &str), ModelError> {
        let variant = variant_opt.unwrap_or(&self.default_variant);
        self.variants.get_key_value(variant).map(|(k, v)| (k.as_str(), v.as_str())).ok_or_else(|| {
            ModelError::UnknownVariant {
                variant: variant.to_owned(),
                known: self.variants.keys().cloned().collect::<Vec<_>>().join(", "),
            }
        })
    }

    /// Checks `bytes` against the recorded sha256 of `file`.
    pub fn verify(&self, file: &str, bytes: &[u8]) -> Result<(), ModelError> {
        let expected =
            self.sha256.get(file).ok_or_else(|| ModelError::Manifest(format!("`sha256` has no entry for {file:?}")))?;
        let actual = hex::encode(Sha256::digest(bytes));
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(ModelError::HashMismatch { file: file.to_owned(), expected: expected.clone(), actual });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compat_changes_with_tokenizer_window_or_labels_not_with_version_or_weights() {
        let shipped = Manifest::parse(crate::embedded::MANIFEST).unwrap();
        assert_eq!(shipped.id(), format!("{}@{}", shipped.name, shipped.version));
        let same = |edit: &dyn Fn(&mut Manifest)| {
            let mut changed = shipped.clone();
            edit(&mut changed);
            changed.compat() == shipped.compat()
        };
        assert!(same(&|m| m.version = "9.9.9".into()));
        assert!(same(&|m| m.temperature = 1.0));
        assert!(same(&|m| {
            m.sha256.insert("model.int8.onnx".into(), "00".repeat(32));
        }));
        assert!(!same(&|m| {
            m.sha256.insert(m.tokenizer.clone(), "00".repeat(32));
        }));
        assert!(!same(&|m| m.max_length = 256));
        assert!(!same(&|m| m.labels.swap(0, 1)));
        assert_eq!(shipped.compat().len(), 16);
    }
}
