//! Writing the answers of `senti classify`, and finding where an interrupted run stopped.
//!
//! Every input record gives exactly one output record, in input order, carrying the input's line
//! number and text: a result, or an error saying why there is none. JSONL records are one object
//! per line; CSV has the columns [`CSV_HEADER`]. Records are written whole batches at a time, so
//! an interrupted run leaves complete records followed by at most one cut record; [`scan`] finds
//! the last complete one, which is where `--resume` continues.

use std::io::{BufRead, Read, Seek, Write};
use std::path::Path;

use anyhow::Context;
use senti_http::ClassifyResult;
use serde::Serialize;

/// The columns of CSV output. `error` is last and the text is not: a record cut inside the text
/// has too few fields, so [`scan`] cannot take it for a complete one.
pub const CSV_HEADER: [&str; 6] = ["line", "text", "label", "label_zh", "score", "error"];

/// Why a text has no result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Stable code: the input check's (`empty_text`, ...) or the server's (`text_too_long`, ...).
    pub code: String,
    /// What is wrong.
    pub message: String,
}

/// A text's answer.
pub type Answer = Result<ClassifyResult, Failure>;

#[derive(Serialize)]
struct JsonRecord<'a> {
    line: u64,
    text: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    result: Option<&'a ClassifyResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Failure>,
}

/// Writes output records.
pub enum Writer {
    /// One JSON object per line.
    Jsonl(std::io::BufWriter<Box<dyn Write + Send>>),
    /// CSV with [`CSV_HEADER`].
    Csv(Box<csv::Writer<Box<dyn Write + Send>>>),
}

impl Writer {
    /// A writer of JSONL (`csv` false) or CSV, writing the CSV header when `header` is set.
    pub fn new(out: Box<dyn Write + Send>, csv: bool, header: bool) -> anyhow::Result<Writer> {
        if !csv {
            return Ok(Writer::Jsonl(std::io::BufWriter::with_capacity(1 << 16, out)));
        }
        let mut writer = csv::WriterBuilder::new().buffer_capacity(1 << 16).from_writer(out);
        if header {
            writer.write_record(CSV_HEADER)?;
        }
        Ok(Writer::Csv(Box::new(writer)))
    }

    /// Writes one record.
    pub fn write(&mut self, line: u64, text: &str, answer: &Answer) -> anyhow::Result<()> {
        match self {
            Writer::Jsonl(out) => {
                let (result, error) = match answer {
                    Ok(result) => (Some(result), None),
                    Err(failure) => (None, Some(failure)),
                };
                serde_json::to_writer(&mut *out, &JsonRecord { line, text, result, error })?;
                out.write_all(b"\n")?;
            }
            Writer::Csv(out) => {
                let line = line.to_string();
                match answer {
                    Ok(r) => out.write_record([&line, text, &r.label, &r.label_zh, &r.score.to_string(), ""])?,
                    Err(f) => out.write_record([&line, text, "", "", "", &format!("{}: {}", f.code, f.message)])?,
                }
            }
        }
        Ok(())
    }

    /// Hands everything written so far to the operating system.
    pub fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Writer::Jsonl(out) => out.flush(),
            Writer::Csv(out) => out.flush(),
        }
    }
}

/// The last complete record of an earlier run's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// Its input line number.
    pub line: u64,
    /// Its text, to check that the input is the same.
    pub text: String,
    /// Complete records in the file.
    pub records: u64,
}

/// What an earlier run left in the output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The last complete record, if there is one.
    pub done: Option<Done>,
    /// Bytes to keep: everything after them is a cut record, to be cut off.
    pub keep_bytes: u64,
}

/// Reads an earlier run's output (without holding it in memory) and finds its last complete
/// record. Refuses a file that is not senti output, so `--resume` never appends to something else.
pub fn scan(path: &Path, csv: bool) -> anyhow::Result<Scan> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let len = file.metadata()?.len();
    if csv {
        scan_csv(file, len, path)
    } else {
        scan_jsonl(std::io::BufReader::new(file), path)
    }
}

fn not_ours(path: &Path, line: u64, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{} line {line} is not a record of `senti classify` ({why}); not resuming: give another --out, or --force \
         to overwrite it",
        path.display()
    )
}

fn scan_jsonl(mut file: impl BufRead, path: &Path) -> anyhow::Result<Scan> {
    #[derive(serde::Deserialize)]
    struct Head {
        line: u64,
        text: String,
    }
    let mut scan = Scan { done: None, keep_bytes: 0 };
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        let read = file.read_until(b'\n', &mut buf)?;
        if read == 0 {
            return Ok(scan);
        }
        number += 1;
        let complete = buf.ends_with(b"\n");
        match serde_json::from_slice::<Head>(&buf) {
            Ok(head) if complete => {
                if scan.done.as_ref().is_some_and(|done| head.line <= done.line) {
                    return Err(not_ours(path, number, "its input line numbers do not increase"));
                }
                let records = scan.done.as_ref().map_or(0, |d| d.records) + 1;
                scan.done = Some(Done { line: head.line, text: head.text, records });
                scan.keep_bytes += read as u64;
            }
            // A cut last record: dropped.
            _ if !complete => return Ok(scan),
            Ok(_) => unreachable!("complete lines are matched above"),
            Err(err) => return Err(not_ours(path, number, &err.to_string())),
        }
    }
}

fn scan_csv(mut file: std::fs::File, len: u64, path: &Path) -> anyhow::Result<Scan> {
    let ends_with_newline = len > 0 && {
        file.seek(std::io::SeekFrom::End(-1))?;
        let mut last = [0u8];
        file.read_exact(&mut last)?;
        file.rewind()?;
        last[0] == b'\n'
    };
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(std::io::BufReader::new(file));
    let mut record = csv::ByteRecord::new();
    let mut scan = Scan { done: None, keep_bytes: 0 };
    let mut header = true;
    while reader.read_byte_record(&mut record)? {
        let end = reader.position().byte();
        let number = record.position().map_or(0, |p| p.line());
        let whole = record.len() == CSV_HEADER.len() && (end < len || ends_with_newline);
        if !whole {
            if end < len {
                return Err(not_ours(path, number, "it does not have the 6 columns of senti's CSV output"));
            }
            break;
        }
        if header {
            if record.iter().ne(CSV_HEADER.iter().map(|h| h.as_bytes())) {
                return Err(not_ours(path, number, "the header is not senti's"));
            }
            header = false;
        } else {
            let line: u64 = std::str::from_utf8(&record[0])
                .ok()
                .and_then(|l| l.parse().ok())
                .ok_or_else(|| not_ours(path, number, "its first column is not a line number"))?;
            if scan.done.as_ref().is_some_and(|done| line <= done.line) {
                return Err(not_ours(path, number, "its input line numbers do not increase"));
            }
            let records = scan.done.as_ref().map_or(0, |d| d.records) + 1;
            scan.done = Some(Done { line, text: String::from_utf8_lossy(&record[1]).into_owned(), records });
        }
        scan.keep_bytes = end;
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn result(label: &str) -> ClassifyResult {
        ClassifyResult {
            label: label.to_owned(),
            label_zh: "正面".to_owned(),
            score: 0.75,
            probabilities: BTreeMap::new(),
            cached: false,
        }
    }

    /// Three records (one an error), as a run writes them.
    fn written(csv: bool) -> Vec<u8> {
        let path = std::env::temp_dir().join(format!("senti-out-{}-{csv}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = Writer::new(Box::new(file), csv, true).unwrap();
        writer.write(1, "好", &Ok(result("positive"))).unwrap();
        let failure = Failure { code: "empty_text".to_owned(), message: "the text is empty".to_owned() };
        writer.write(3, "", &Err(failure)).unwrap();
        writer.write(4, "两行\n文本, \"引号\"", &Ok(result("positive"))).unwrap();
        writer.flush().unwrap();
        drop(writer);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        bytes
    }

    fn scan_bytes(bytes: &[u8], csv: bool) -> anyhow::Result<Scan> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("senti-scan-{}-{n}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let scan = scan(&path, csv);
        std::fs::remove_file(&path).unwrap();
        scan
    }

    /// Cutting the output at every byte finds the last record that was whole before the cut, and
    /// keeps exactly its bytes.
    #[test]
    fn a_cut_anywhere_resumes_after_the_last_whole_record() {
        for csv in [false, true] {
            let bytes = written(csv);
            let full = scan_bytes(&bytes, csv).unwrap();
            assert_eq!(full.keep_bytes, bytes.len() as u64);
            let done = full.done.unwrap();
            assert_eq!((done.line, done.text.as_str(), done.records), (4, "两行\n文本, \"引号\"", 3));
            let ends: Vec<u64> = (1..=bytes.len() as u64)
                .filter(|&i| scan_bytes(&bytes[..i as usize], csv).unwrap().keep_bytes == i)
                .collect();
            let lines: Vec<u64> = ends
                .iter()
                .map(|&i| scan_bytes(&bytes[..i as usize], csv).unwrap().done.map_or(0, |d| d.line))
                .collect();
            // JSONL: the three record ends; CSV: the header's end, then the three records'.
            assert_eq!(lines, if csv { vec![0, 1, 3, 4] } else { vec![1, 3, 4] }, "csv {csv}");
            for cut in 0..bytes.len() {
                let scan = scan_bytes(&bytes[..cut], csv).unwrap();
                let kept = ends.iter().copied().filter(|&e| e <= cut as u64).max().unwrap_or(0);
                assert_eq!(scan.keep_bytes, kept, "csv {csv}, cut at {cut}");
            }
        }
    }

    #[test]
    fn a_file_that_is_not_senti_output_is_not_resumed() {
        let err = scan_bytes(b"{\"a\":1}\n{\"line\":2,\"text\":\"x\"}\n", false).unwrap_err();
        assert!(err.to_string().contains("line 1 is not a record"), "{err}");
        let err = scan_bytes(b"id,text\n1,x\n", true).unwrap_err();
        assert!(err.to_string().contains("not have the 6 columns"), "{err}");
        let err = scan_bytes(b"{\"line\":2,\"text\":\"x\"}\n{\"line\":2,\"text\":\"x\"}\n", false).unwrap_err();
        assert!(err.to_string().contains("do not increase"), "{err}");
    }
}
