//! The default model, compiled into the binary so that `senti serve` needs no files or flags.
//!
//! The bytes are the committed models/senti-zh-small/ folder; [`crate::ModelBundle::load`] checks
//! them against the manifest's sha256 like any folder.

/// models/senti-zh-small/model.toml
pub(crate) const MANIFEST: &str = include_str!("../../../models/senti-zh-small/model.toml");

const FILES: &[(&str, &[u8])] = &[
    ("tokenizer.json", include_bytes!("../../../models/senti-zh-small/tokenizer.json")),
    ("model.onnx", include_bytes!("../../../models/senti-zh-small/model.onnx")),
    ("model.int8.onnx", include_bytes!("../../../models/senti-zh-small/model.int8.onnx")),
];

/// The embedded file of that name.
pub(crate) fn file(name: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}
