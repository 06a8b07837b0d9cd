//! The texts a benchmark sends: real Chinese reviews from a TSV file with a header row and a
//! `text` column (by default the project's validation set, `../shared/data/sentiment/val.tsv`
//! beside the repository).
//!
//! The validation set is grouped by source (804 long hotel reviews first, then short food-delivery
//! ones, ...), so a run that covers only a prefix of the file would see a length mix that depends
//! on how fast it goes. [`mix`] therefore shuffles the texts once with a fixed seed: every window
//! of the sequence has the file's mix of short and long reviews, and every benchmark (raw and
//! HTTP) walks the same sequence. Nothing is sorted by length.

use std::path::{Path, PathBuf};

/// Why the payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The file could not be read.
    #[error("cannot read payload file {path}: {source} (give another one with --payload FILE)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The header has no `text` column (or, for labeled reads, no `label` column).
    #[error(
        "payload file {path} lacks a `text` (or, for accuracy, `label`) column in its header (columns: {columns})"
    )]
    NoTextColumn {
        /// The file.
        path: PathBuf,
        /// The header as found.
        columns: String,
    },
    /// No row had a non-empty text.
    #[error("payload file {path} has no non-empty texts")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// `../shared/data/sentiment/val.tsv` relative to the repository root this crate was built in.
pub fn default_payload_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sentiment/val.tsv")
}

/// Every non-empty `text` field of a tab-separated file with a header row, in file order.
pub fn read_texts(path: &Path) -> Result<Vec<String>, PayloadError> {
    let content =
        std::fs::read_to_string(path).map_err(|source| PayloadError::Read { path: path.to_owned(), source })?;
    parse_tsv(&content).map_err(|err| match err {
        ParseError::NoTextColumn(columns) => PayloadError::NoTextColumn { path: path.to_owned(), columns },
        ParseError::Empty => PayloadError::Empty { path: path.to_owned() },
    })
}

/// Every row with a non-empty `text` and a `label` of 0 (negative) or 1 (positive), in file
/// order: the texts of [`read_texts`] with their labels, for accuracy checks. Rows whose label is
/// missing or not 0/1 are left out (so the result may be shorter than [`read_texts`]'s).
pub fn read_labeled(path: &Path) -> Result<Vec<(String, bool)>, PayloadError> {
    let content =
        std::fs::read_to_string(path).map_err(|source| PayloadError::Read { path: path.to_owned(), source })?;
    let mut lines = content.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split('\t').map(str::trim).collect();
    let (Some(text_col), Some(label_col)) =
        (header.iter().position(|c| *c == "text"), header.iter().position(|c| *c == "label"))
    else {
        return Err(PayloadError::NoTextColumn { path: path.to_owned(), columns: header.join(", ") });
    };
    let rows: Vec<(String, bool)> = lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let text = fields.get(text_col)?.trim();
            let positive = match fields.get(label_col)?.trim() {
                "1" => true,
                "0" => false,
                _ => return None,
            };
            (!text.is_empty()).then(|| (text.to_owned(), positive))
        })
        .collect();
    if rows.is_empty() {
        return Err(PayloadError::Empty { path: path.to_owned() });
    }
    Ok(rows)
}

/// The items in a pseudo-random order fixed by `seed` (Fisher-Yates with splitmix64), so that
/// runs are reproducible and comparable with each other.
pub fn mix<T>(mut texts: Vec<T>, seed: u64) -> Vec<T> {
    let mut state = seed;
    for i in (1..texts.len()).rev() {
        let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
        texts.swap(i, j);
    }
    texts
}

/// One step of splitmix64 (Steele, Lea and Flood): small, fast, and good enough to shuffle.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

enum ParseError {
    NoTextColumn(String),
    Empty,
}

fn parse_tsv(content: &str) -> Result<Vec<String>, ParseError> {
    let mut lines = content.lines();
    let header = lines.next().unwrap_or("");
    let column = header
        .split('\t')
        .position(|name| name.trim() == "text")
        .ok_or_else(|| ParseError::NoTextColumn(header.replace('\t', ", ")))?;
    let texts: Vec<String> = lines
        .filter_map(|line| line.split('\t').nth(column))
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
        .collect();
    if texts.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_text_column_in_order_and_skips_blanks() {
        let tsv = "label\ttext\tsource\n1\t很好\ta\n0\t\tb\n0\t太差了\tc\nshort-row\n";
        let texts = parse_tsv(tsv).ok().unwrap();
        assert_eq!(texts, vec!["很好", "太差了"]);
    }

    #[test]
    fn a_header_without_text_is_an_error() {
        assert!(matches!(parse_tsv("label\tbody\n1\tx\n"), Err(ParseError::NoTextColumn(c)) if c == "label, body"));
        assert!(matches!(parse_tsv("text\n\n"), Err(ParseError::Empty)));
    }

    #[test]
    fn labeled_rows_keep_text_and_label_and_skip_the_rest() {
        let dir = std::env::temp_dir().join(format!("senti-payload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("val.tsv");
        std::fs::write(&path, "label\ttext\n1\t很好\n0\t太差了\nx\t不知道\n1\t\n").unwrap();
        let rows = read_labeled(&path).unwrap();
        assert_eq!(rows, vec![("很好".to_owned(), true), ("太差了".to_owned(), false)]);
        std::fs::write(&path, "text\n很好\n").unwrap();
        assert!(matches!(read_labeled(&path), Err(PayloadError::NoTextColumn { .. })), "no label column");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mix_is_a_fixed_permutation() {
        let texts: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let a = mix(texts.clone(), 1);
        assert_eq!(a, mix(texts.clone(), 1), "same seed, same order");
        assert_ne!(a, texts, "shuffled");
        assert_ne!(a, mix(texts.clone(), 2), "another seed, another order");
        let mut sorted = a.clone();
        sorted.sort_by_key(|t| t.parse::<u32>().unwrap());
        assert_eq!(sorted, texts, "a permutation: nothing lost or repeated");
    }

    #[test]
    fn the_default_payload_is_the_validation_set() {
        let path = default_payload_path();
        if !path.is_file() {
            eprintln!("skipped: {} not present", path.display());
            return;
        }
        let texts = read_texts(&path).unwrap();
        assert!(texts.len() > 1000, "{}", texts.len());
    }
}
