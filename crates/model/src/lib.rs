//! The model layer: a model folder's manifest, its tokenizer, and ONNX Runtime sessions.
//!
//! Synchronous and free of tokio: the engine runs [`Runner`]s on dedicated threads.
//! A request's texts meet this crate twice: [`TextEncoder::encode`] (in the inference actor) and
//! [`Runner::logits`] (on the model thread); [`Scores::from_logits`] turns logits into calibrated
//! probabilities with the manifest's temperature.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bundle;
mod embedded;
mod manifest;
mod runtime;
mod scores;
mod wordpiece;

use std::path::PathBuf;

pub use bundle::{ModelBundle, ModelSource, Runner, TextEncoder};
pub use manifest::{IoNames, Label, Manifest};
pub use runtime::{init as init_runtime, locate as locate_runtime, EXPECTED_MINOR, LIBRARY_FILE};
pub use scores::Scores;

/// Everything that can go wrong loading or running a model. `Clone`, since one failed batch
/// answers every request in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    /// A model file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::sync::Arc<std::io::Error>,
    },
    /// model.toml is malformed or inconsistent.
    #[error("invalid model manifest: {0}")]
    Manifest(String),
    /// A file does not match the manifest's sha256.
    #[error("{file} does not match model.toml: sha256 {actual}, expected {expected}")]
    HashMismatch {
        /// The file.
        file: String,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The configured variant is not in the manifest.
    #[error("unknown model variant {variant:?} (the manifest has: {known})")]
    UnknownVariant {
        /// Asked for.
        variant: String,
        /// Available.
        known: String,
    },
    /// ONNX Runtime could not be found or loaded.
    #[error("{0}")]
    Runtime(String),
    /// The tokenizer failed to load or encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The ONNX session could not be created.
    #[error("cannot create ONNX Runtime session: {0}")]
    Session(String),
    /// Inference failed.
    #[error("inference failed: {0}")]
    Inference(String),
}
