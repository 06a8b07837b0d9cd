//! A loaded model: its manifest, its tokenizer, and the bytes of the chosen ONNX file, all
//! checked against the manifest's hashes. One bundle is shared by every inference actor of a
//! node; each actor makes its own [`Runner`] (an ONNX Runtime session) from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;

use crate::wordpiece::FastWordPiece;
use crate::{Manifest, ModelError};

/// Where a model comes from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// The default model compiled into the binary.
    Embedded,
    /// A folder with model.toml.
    Folder(PathBuf),
}

/// Manifest + tokenizer + the chosen variant's ONNX bytes, verified.
#[derive(Clone)]
pub struct ModelBundle {
    manifest: Arc<Manifest>,
    encoder: TextEncoder,
    variant: String,
    onnx: Arc<[u8]>,
}

impl std::fmt::Debug for ModelBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelBundle")
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version)
            .field("variant", &self.variant)
            .field("onnx_bytes", &self.onnx.len())
            .finish()
    }
}

impl ModelBundle {
    /// Reads, hash-checks and parses a model; `variant_opt` picks the ONNX file (default: the
    /// manifest's `default_variant`).
    pub fn load(source: &ModelSource, variant_opt: Option<&str>) -> Result<Self, ModelError> {
        match source {
            ModelSource::Embedded => {
                let manifest = Manifest::parse(crate::embedded::MANIFEST)?;
                let (variant, file) = manifest.variant_file(variant_opt)?;
                let onnx = crate::embedded::file(file)
                    .ok_or_else(|| ModelError::Manifest(format!("embedded model has no file {file:?}")))?;
                let tokenizer = crate::embedded::file(&manifest.tokenizer)
                    .ok_or_else(|| ModelError::Manifest("embedded model has no tokenizer".into()))?;
                let variant = variant.to_owned();
                Self::from_parts(manifest, variant, tokenizer, onnx.into())
            }
            ModelSource::Folder(dir) => {
                let text = read(&dir.join("model.toml"))?;
                let text =
                    String::from_utf8(text).map_err(|_| ModelError::Manifest("model.toml is not UTF-8".into()))?;
                let manifest = Manifest::parse(&text)?;
                let (variant, file) = manifest.variant_file(variant_opt)?;
                let variant = variant.to_owned();
                let onnx = read(&dir.join(file))?;
                let tokenizer = read(&dir.join(&manifest.tokenizer))?;
                Self::from_parts(manifest, variant, &tokenizer, onnx.into())
            }
        }
    }

    fn from_parts(manifest: Manifest, variant: String, tokenizer: &[u8], onnx: Arc<[u8]>) -> Result<Self, ModelError> {
        let (_, onnx_file) = manifest.variant_file(Some(&variant))?;
        manifest.verify(onnx_file, &onnx)?;
        manifest.verify(&manifest.tokenizer, tokenizer)?;
        let encoder = TextEncoder::from_bytes(tokenizer, manifest.max_length)?;
        Ok(Self { manifest: Arc::new(manifest), encoder, variant, onnx })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The variant being served (`fp32`, `int8`, ...).
    pub fn variant(&self) -> &str {
        &self.variant
    }

    /// The tokenizer, truncating at the manifest's `max_length`.
    pub fn encoder(&self) -> &TextEncoder {
        &self.encoder
    }

    /// A new ONNX Runtime session with `threads` intra-op threads.
    pub fn runner(&self, threads: usize) -> Result<Runner, ModelError> {
        self.runner_with_spinning(threads, true)
    }

    /// [`Self::runner`], choosing whether ONNX Runtime's intra-op threads spin between operators
    /// (its default: lower latency for one session alone, but a spinning thread holds a core
    /// that other sessions or the HTTP threads may need).
    pub fn runner_with_spinning(&self, threads: usize, spinning: bool) -> Result<Runner, ModelError> {
        let environment = crate::runtime::environment()?;
        fn session_err<R>(err: ort::Error<R>) -> ModelError {
            ModelError::Session(err.to_string())
        }
        let builder = Session::builder(&environment).map_err(session_err)?;
        let builder = builder.with_optimization_level(GraphOptimizationLevel::Level3).map_err(session_err)?;
        let builder = builder.with_intra_threads(threads).map_err(session_err)?;
        let builder = builder.with_inter_threads(1).map_err(session_err)?;
        let mut builder = if threads > 1 && !spinning {
            builder.with_intra_op_spinning(false).map_err(session_err)?
        } else {
            builder
        };
        let session = builder.commit_from_memory(&self.onnx).map_err(session_err)?;
        let io = &self.manifest.io;
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for wanted in [Some(&io.input_ids), Some(&io.attention_mask), io.token_type_ids.as_ref()].into_iter().flatten()
        {
            if !names.contains(&wanted.as_str()) {
                return Err(ModelError::Session(format!("the ONNX graph has no input {wanted:?} (it has {names:?})")));
            }
        }
        Ok(Runner { session, manifest: self.manifest.clone() })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|err| ModelError::Read { path: path.to_owned(), source: Arc::new(err) })
}

/// Text to token ids, with the model's truncation. Cheap to clone (shared tokenizer).
///
/// For BERT tokenizers the ids come from [`FastWordPiece`], which gives the ids `tokenizers`
/// gives without its per-character bookkeeping (several times faster; see `wordpiece.rs`).
#[derive(Clone)]
pub struct TextEncoder {
    tokenizer: Arc<tokenizers::Tokenizer>,
    fast: Option<Arc<FastWordPiece>>,
}

impl TextEncoder {
    fn from_bytes(bytes: &[u8], max_length: usize) -> Result<Self, ModelError> {
        let mut tokenizer =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|err| ModelError::Tokenizer(err.to_string()))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams { max_length, ..Default::default() }))
            .map_err(|err| ModelError::Tokenizer(err.to_string()))?;
        tokenizer.with_padding(None);
        let fast = FastWordPiece::from_tokenizer(&tokenizer, max_length).map(Arc::new);
        if fast.is_none() {
            tracing::info!("the tokenizer is not BERT's WordPiece: every text goes through `tokenizers`");
        }
        Ok(Self { tokenizer: Arc::new(tokenizer), fast })
    }

    /// Token ids of one text, [CLS] and [SEP] included, truncated to `max_length`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        match self.fast.as_ref().and_then(|fast| fast.encode(text)) {
            Some(ids) => Ok(ids),
            None => self.encode_with_tokenizers(text),
        }
    }

    /// [`Self::encode`] always through `tokenizers`: the reference the fast path is tested and
    /// benchmarked against.
    pub fn encode_with_tokenizers(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self.tokenizer.encode_fast(text, true).map_err(|err| ModelError::Tokenizer(err.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Whether [`Self::encode`] takes the fast path for this tokenizer.
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// Ids are below this (added tokens included): what token ids from elsewhere are checked
    /// against before they reach ONNX Runtime.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}

/// One ONNX Runtime session. Synchronous: it runs on an inference actor's own thread.
pub struct Runner {
    session: Session,
    manifest: Arc<Manifest>,
}

impl Runner {
    /// Logits, `labels` per text, for a batch of token-id sequences (right-padded here).
    pub fn logits(&mut self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let width = batch.iter().map(|ids| ids.len()).max().unwrap_or(0).max(1);
        let rows = batch.len();
        let mut ids = vec![0_i64; rows * width];
        let mut mask = vec![0_i64; rows * width];
        for (row, seq) in batch.iter().enumerate() {
            for (col, &id) in seq.iter().enumerate() {
                ids[row * width + col] = i64::from(id);
                mask[row * width + col] = 1;
            }
        }
        let shape = [rows as i64, width as i64];
        let io = &self.manifest.io;
        let tensor =
            |data: Vec<i64>| Tensor::from_array((shape, data)).map_err(|err| ModelError::Inference(err.to_string()));
        let mut inputs = vec![
            (io.input_ids.clone(), tensor(ids)?.into_dyn()),
            (io.attention_mask.clone(), tensor(mask)?.into_dyn()),
        ];
        if let Some(name) = &io.token_type_ids {
            inputs.push((name.clone(), tensor(vec![0_i64; rows * width])?.into_dyn()));
        }
        let outputs = self.session.run(inputs).map_err(|err| ModelError::Inference(err.to_string()))?;
        let (out_shape, data) = outputs[io.logits.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|err| ModelError::Inference(err.to_string()))?;
        let labels = self.manifest.labels.len();
        if out_shape.len() != 2 || out_shape[0] as usize != rows || out_shape[1] as usize != labels {
            return Err(ModelError::Inference(format!("logits have shape {out_shape:?}, expected [{rows}, {labels}]")));
        }
        Ok(data.chunks(labels).map(<[f32]>::to_vec).collect())
    }
}
