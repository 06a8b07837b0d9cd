//! The ids-only BERT tokenizer (`TextEncoder::encode`) against `tokenizers` itself
//! (`TextEncoder::encode_with_tokenizers`): the same ids on every text of the project's data and
//! on random text mixing scripts, accents, controls and punctuation.

use std::path::Path;

use proptest::prelude::*;
use senti_model::{ModelBundle, ModelSource, TextEncoder};

fn encoder() -> TextEncoder {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/senti-zh-small");
    ModelBundle::load(&ModelSource::Folder(dir), None).unwrap().encoder().clone()
}

fn assert_same(encoder: &TextEncoder, text: &str) {
    let fast = encoder.encode(text).unwrap();
    let reference = encoder.encode_with_tokenizers(text).unwrap();
    assert_eq!(fast, reference, "ids differ for {text:?}");
}

#[test]
fn the_default_model_takes_the_fast_path() {
    assert!(encoder().is_fast());
}

#[test]
fn fast_ids_equal_tokenizers_on_edge_cases() {
    let encoder = encoder();
    let long = "很好".repeat(300);
    let words = ["x".repeat(99), "x".repeat(100), "x".repeat(101)];
    let cases = [
        "",
        " ",
        "\t\n\r ",
        "[CLS] [SEP] [UNK] [PAD] [MASK]",
        "##",
        "a##b ##好",
        "ABC def GHI",
        "Ǆ ǅ ǆ İ ΣΑΣ ß ﬁ",
        "e\u{301}e\u{300}\u{302} o\u{308}\u{323}",
        "\u{f900}\u{f901}\u{2f800} 豈",
        "\u{f901}好",
        "很\u{2f800}",
        "가각 が ぱ ガ",
        "\u{0}\u{1}\u{7f}\u{ad}\u{200d}\u{feff}\u{e000}\u{fffd}",
        "\u{3000}全角空格\u{a0}不换行\u{2028}",
        "😀😀😀 👍🏽 🇨🇳",
        "1,234.56元 100% 5折!!!",
        words[0].as_str(),
        words[1].as_str(),
        words[2].as_str(),
        long.as_str(),
    ];
    for text in cases {
        assert_same(&encoder, text);
    }
}

/// The project's data (../shared/data): every validation review and every third text of train and
/// unlabeled, 55k texts (all 146k take 14 s; `senti-bench-raw` compares its whole payload too).
/// The data is not part of the repository: without it this test says so and checks nothing.
#[test]
fn fast_ids_equal_tokenizers_on_the_data() {
    let encoder = encoder();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sentiment");
    let mut checked = 0;
    for (file, every) in [("val.tsv", 1), ("train.tsv", 3), ("unlabeled.tsv", 3)] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            eprintln!("{} is missing: not checked", dir.join(file).display());
            continue;
        };
        let header: Vec<&str> = text.lines().next().unwrap_or_default().split('\t').collect();
        let column = header.iter().position(|name| *name == "text").expect("a text column");
        for line in text.lines().skip(1).step_by(every) {
            let field = line.split('\t').nth(column).unwrap_or(line);
            assert_same(&encoder, field);
            checked += 1;
        }
    }
    eprintln!("{checked} texts: same ids");
}

/// Characters that exercise each step: CJK (spaced out), compatibility ideographs (NFD changes
/// them), Latin with accents and combining marks (stripped), case with multi-char lowercase,
/// controls and odd whitespace (cleaned), ASCII and CJK punctuation (isolated), Hangul and kana
/// (decomposed), emoji, and pieces of vocabulary words and of special tokens.
const ALPHABET: &str = "好的不错差评酒店服务很一般送餐慢味道\u{f901}\u{2f800}﹏，。！？、；：“”‘’（）【】《》…—～·\
    abcdeABCDEéÉèçñÜüöÖßİǅ\u{301}\u{308}\u{323}\u{3099} \t\n\r\u{0}\u{7}\u{ad}\u{200b}\u{a0}\u{3000}\u{fffd}\
    .,!?;:'\"()[]#$%&*+-/<=>@\\^_`{|}~0123456789가힣がパ😀👍🏽";

fn text() -> impl Strategy<Value = String> {
    let alphabet: Vec<char> = ALPHABET.chars().collect();
    let piece = prop_oneof![
        8 => prop::sample::select(alphabet).prop_map(String::from),
        1 => any::<char>().prop_map(String::from),
        1 => prop::sample::select(vec!["[CLS]", "[SEP]", "##", "hotel", "ing", "不错", "2008"]).prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..80).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn fast_ids_equal_tokenizers_on_random_text(text in text()) {
        let encoder = encoder_once();
        prop_assert_eq!(encoder.encode(&text).unwrap(), encoder.encode_with_tokenizers(&text).unwrap(), "{:?}", text);
    }
}

fn encoder_once() -> &'static TextEncoder {
    static ENCODER: std::sync::OnceLock<TextEncoder> = std::sync::OnceLock::new();
    ENCODER.get_or_init(encoder)
}
