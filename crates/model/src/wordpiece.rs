//! BERT tokenization to ids only, without `tokenizers`' bookkeeping.
//!
//! `tokenizers` keeps, for every character, where it came from (alignments, offsets) and builds a
//! string per token; senti needs only the ids. On the small default model that bookkeeping costs
//! about as much CPU per text as everything else senti may spend outside inference, so it is
//! skipped (`senti-bench-raw` times both paths; figures in docs/benchmarks.md).
//! [`FastWordPiece`] computes the same ids for the tokenizer.json shape BERT models ship
//! (`BertNormalizer`, `BertPreTokenizer`, `WordPiece`, special tokens around the text), step by
//! step as `tokenizers` 0.22 does and with the Unicode tables it uses (the crates
//! `unicode_categories` and `unicode-normalization-alignments`).
//!
//! [`FastWordPiece::from_tokenizer`] accepts a tokenizer only if its parts have that shape and it
//! agrees with `tokenizers` on probe texts; anything else keeps using `tokenizers`. A text that
//! contains an added token's content (which `tokenizers` matches before normalizing) goes through
//! `tokenizers` too. Tests compare both on every review of the data and on random text.

use std::collections::HashMap;

use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{Model, Tokenizer};
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

/// Texts both paths must agree on before the fast one is used: accents, case, controls, CJK,
/// full-width punctuation, unknown words, a word too long for WordPiece, and truncation.
const PROBES: &[&str] = &[
    "",
    "a",
    "这家酒店位置很好，服务也不错！",
    "Café ÉCOLE naïve İstanbul ǅ straße",
    "tab\there\nnew\r\u{0}\u{fffd}\u{200b}\u{7}line",
    "ｆｕｌｌｗｉｄｔｈ！？，。“引号”……（括号）",
    "퀄리티 좋아요 がぎぐ 한국어",
    "unbelievably xqzxqzxqz [CLS] [SEP] ##ing 123,456.78 😀👍🏽",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

/// Ids of one text as the BERT tokenizer it was built from would give them (see the module doc).
#[derive(Debug)]
pub(crate) struct FastWordPiece {
    vocab: HashMap<String, u32>,
    unk: u32,
    prefix: String,
    max_input_chars_per_word: usize,
    clean_text: bool,
    handle_chinese_chars: bool,
    strip_accents: bool,
    lowercase: bool,
    /// Ids the post-processor puts before the text (`[CLS]`) and after it (`[SEP]`).
    before: Vec<u32>,
    after: Vec<u32>,
    /// Most ids of the text itself, after truncation.
    max_tokens: usize,
    /// Contents of added tokens: a text containing one goes through `tokenizers`.
    added: Vec<String>,
}

impl FastWordPiece {
    /// The fast path for `tokenizer` (already set to truncate at `max_length`, no padding), or
    /// `None` if its parts are not BERT's or it disagrees with `tokenizer` on [`PROBES`].
    pub(crate) fn from_tokenizer(tokenizer: &Tokenizer, max_length: usize) -> Option<Self> {
        let Some(NormalizerWrapper::BertNormalizer(normalizer)) = tokenizer.get_normalizer() else {
            return None;
        };
        let Some(PreTokenizerWrapper::BertPreTokenizer(_)) = tokenizer.get_pre_tokenizer() else {
            return None;
        };
        let ModelWrapper::WordPiece(model) = tokenizer.get_model() else {
            return None;
        };
        let added_tokens = tokenizer.get_added_tokens_decoder();
        // Normalized added tokens are matched after normalization: not reproduced here.
        if added_tokens.values().any(|token| token.normalized) {
            return None;
        }
        let reference = |text: &str| tokenizer.encode_fast(text, true).ok().map(|e| e.get_ids().to_vec());
        let empty = reference("")?;
        let vocab = model.get_vocab();
        let mut fast = Self {
            unk: *vocab.get(&model.unk_token)?,
            vocab,
            prefix: model.continuing_subword_prefix.clone(),
            max_input_chars_per_word: model.max_input_chars_per_word,
            clean_text: normalizer.clean_text,
            handle_chinese_chars: normalizer.handle_chinese_chars,
            strip_accents: normalizer.strip_accents.unwrap_or(normalizer.lowercase),
            lowercase: normalizer.lowercase,
            before: Vec::new(),
            after: Vec::new(),
            max_tokens: max_length.checked_sub(empty.len()).filter(|&n| n > 0)?,
            added: added_tokens.into_values().map(|token| token.content).collect(),
        };
        // Where the text goes between the special tokens: the split of `empty` that makes every
        // probe agree.
        let long_text = "好".repeat(max_length + 10);
        let probes: Vec<&str> = PROBES.iter().copied().chain([long_text.as_str()]).collect();
        let expected: Vec<Vec<u32>> = probes.iter().map(|text| reference(text)).collect::<Option<_>>()?;
        (0..=empty.len()).find_map(|split| {
            fast.before = empty[..split].to_vec();
            fast.after = empty[split..].to_vec();
            probes.iter().zip(&expected).all(|(text, ids)| fast.encode(text).as_ref() == Some(ids)).then_some(())
        })?;
        Some(fast)
    }

    /// Token ids of `text` with the special tokens, truncated; `None` if `text` contains an added
    /// token's content (the caller then asks `tokenizers`).
    pub(crate) fn encode(&self, text: &str) -> Option<Vec<u32>> {
        if self.added.iter().any(|content| text.contains(content.as_str())) {
            return None;
        }
        let normalized = self.normalize(text);
        let mut ids = Vec::with_capacity(self.before.len() + normalized.len() / 2 + self.after.len());
        ids.extend_from_slice(&self.before);
        let limit = self.before.len() + self.max_tokens;
        let mut key = String::new();
        for word in words(&normalized) {
            self.push_word(word, &mut ids, &mut key);
            if ids.len() >= limit {
                ids.truncate(limit);
                break;
            }
        }
        ids.extend_from_slice(&self.after);
        Some(ids)
    }

    /// `BertNormalizer::normalize`: clean, space out CJK ideographs, strip accents, lowercase.
    fn normalize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + text.len() / 2);
        let mut plain = true; // NFD leaves every character so far unchanged
        for c in text.chars() {
            if self.clean_text && (c == '\0' || c == '\u{fffd}' || is_control(c)) {
                continue;
            }
            let c = if self.clean_text && is_whitespace(c) { ' ' } else { c };
            plain &= nfd_unchanged(c);
            if self.handle_chinese_chars && is_chinese_char(c) {
                out.extend([' ', c, ' ']);
            } else {
                out.push(c);
            }
        }
        if self.strip_accents && !plain {
            out = out.nfd().map(|(c, _)| c).filter(|c| !c.is_mark_nonspacing()).collect();
        }
        if self.lowercase {
            if out.is_ascii() {
                out.make_ascii_lowercase();
            } else {
                out = out.chars().flat_map(char::to_lowercase).collect();
            }
        }
        out
    }

    /// `WordPiece::tokenize` of one word: longest vocabulary prefix first, the rest with the
    /// continuing prefix ("##"); a word that cannot be covered, or is too long, is one `[UNK]`.
    fn push_word(&self, word: &str, ids: &mut Vec<u32>, key: &mut String) {
        if word.chars().count() > self.max_input_chars_per_word {
            ids.push(self.unk);
            return;
        }
        let first = ids.len();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let found = loop {
                let piece = &word[start..end];
                let id = if start == 0 {
                    self.vocab.get(piece)
                } else {
                    key.clear();
                    key.push_str(&self.prefix);
                    key.push_str(piece);
                    self.vocab.get(key.as_str())
                };
                if let Some(&id) = id {
                    break Some(id);
                }
                end -= piece.chars().next_back().map_or(1, char::len_utf8);
                if end <= start {
                    break None;
                }
            };
            let Some(id) = found else {
                ids.truncate(first);
                ids.push(self.unk);
                return;
            };
            ids.push(id);
            start = end;
        }
    }
}

/// `BertPreTokenizer`: split on whitespace (dropped), then every punctuation character alone.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(char::is_whitespace).filter(|chunk| !chunk.is_empty()).flat_map(|chunk| {
        let mut rest = chunk;
        std::iter::from_fn(move || {
            let (index, c) = rest.char_indices().find(|&(_, c)| is_bert_punc(c)).unwrap_or((rest.len(), ' '));
            let word = if index == 0 {
                let (punc, tail) = rest.split_at(c.len_utf8().min(rest.len()));
                rest = tail;
                punc
            } else {
                let (word, tail) = rest.split_at(index);
                rest = tail;
                word
            };
            (!word.is_empty()).then_some(word)
        })
    })
}

// The character classes of `tokenizers` 0.22 (normalizers/bert.rs, pre_tokenizers/bert.rs).

fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

fn is_bert_punc(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// ASCII and the unified CJK ideographs, which NFD leaves alone and which are no nonspacing
/// marks (the compatibility ideographs U+F900.. do decompose).
fn nfd_unchanged(c: char) -> bool {
    c.is_ascii() || matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2CEAF)
}

fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default model's tokenizer.json with `edit` applied, truncating at `max_length`.
    fn tokenizer(max_length: usize, edit: impl FnOnce(&mut serde_json::Value)) -> Tokenizer {
        let bytes = crate::embedded::file("tokenizer.json").unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        edit(&mut json);
        let mut tokenizer = Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap();
        let truncation = tokenizers::TruncationParams { max_length, ..Default::default() };
        tokenizer.with_truncation(Some(truncation)).unwrap();
        tokenizer
    }

    fn reference(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
        tokenizer.encode_fast(text, true).unwrap().get_ids().to_vec()
    }

    #[test]
    fn other_normalizers_and_pre_tokenizers_are_not_taken() {
        let lowercase_only = tokenizer(256, |json| json["normalizer"] = serde_json::json!({"type": "Lowercase"}));
        assert!(FastWordPiece::from_tokenizer(&lowercase_only, 256).is_none());
        let whitespace = tokenizer(256, |json| json["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"}));
        assert!(FastWordPiece::from_tokenizer(&whitespace, 256).is_none());
    }

    #[test]
    fn the_special_tokens_are_found_wherever_the_template_puts_them() {
        let bare = tokenizer(256, |json| json["post_processor"] = serde_json::Value::Null);
        let fast = FastWordPiece::from_tokenizer(&bare, 256).expect("no special tokens is still BERT");
        assert_eq!(fast.encode("好的"), Some(reference(&bare, "好的")));
        assert!(fast.before.is_empty() && fast.after.is_empty());
        let default = tokenizer(256, |_| {});
        let fast = FastWordPiece::from_tokenizer(&default, 256).unwrap();
        assert_eq!((fast.before.as_slice(), fast.after.as_slice()), (&[101][..], &[102][..]));
    }

    #[test]
    fn truncation_keeps_the_first_tokens_and_the_special_ones() {
        let short = tokenizer(6, |_| {});
        let fast = FastWordPiece::from_tokenizer(&short, 6).unwrap();
        for text in ["一二三四五六七八", "一二三四", "unbelievable 好", ""] {
            assert_eq!(fast.encode(text), Some(reference(&short, text)), "{text:?}");
        }
        assert_eq!(fast.encode("一二三四五六七八").unwrap().len(), 6);
    }

    #[test]
    fn a_text_with_an_added_token_goes_through_tokenizers() {
        let with_added = tokenizer(256, |json| {
            json["added_tokens"] = serde_json::json!([{"id": 103, "content": "[MASK]", "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true}]);
        });
        let fast = FastWordPiece::from_tokenizer(&with_added, 256).unwrap();
        assert_eq!(fast.encode("好[MASK]"), None);
        assert_eq!(fast.encode("好 mask"), Some(reference(&with_added, "好 mask")));
    }

    #[test]
    fn words_split_on_whitespace_and_isolate_punctuation() {
        let got: Vec<&str> = words("  Hey friend!  How are you?!? 好，的 ").collect();
        assert_eq!(got, ["Hey", "friend", "!", "How", "are", "you", "?", "!", "?", "好", "，", "的"]);
        assert_eq!(words("").count(), 0);
        assert_eq!(words("...").collect::<Vec<_>>(), [".", ".", "."]);
    }
}
