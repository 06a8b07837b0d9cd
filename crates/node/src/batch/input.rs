//! Reading the texts of `senti classify --file`: one record at a time, whatever the file's size.
//!
//! A record carries its line number in the input (the line a CSV record starts on) and the byte
//! offset just past it (for progress). A text that cannot be sent is a [`Bad`] record, never a
//! dropped one: empty after trimming, longer than the limit, not UTF-8, or (JSONL) not an object
//! with the column as a string.

use std::io::BufRead;

/// The layout of an input or output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One text per line.
    Text,
    /// Comma-separated with a header row; the texts are in one column.
    Csv,
    /// One JSON object per line; the texts are one of its string fields.
    Jsonl,
}

impl Format {
    /// From a file name's extension: `.csv`, `.jsonl` / `.ndjson`; anything else is text.
    pub fn of_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Format::Csv,
            Some("jsonl" | "ndjson") => Format::Jsonl,
            _ => Format::Text,
        }
    }
}

/// Why a record's text is not sent. `code` is the HTTP API's error code for the same fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    /// Stable code: `empty_text`, `text_too_long`, `invalid_utf8`, `invalid_json`, `missing_column`.
    pub code: &'static str,
    /// What is wrong, with the limit when one applies.
    pub message: String,
}

/// One input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based line number in the input (a CSV record's first line).
    pub line: u64,
    /// The text (lossily decoded when it is not UTF-8, so the output can show it).
    pub text: String,
    /// Why the text is not sent, if it is not.
    pub bad: Option<Bad>,
    /// Bytes of the input read up to the end of this record.
    pub end_offset: u64,
}

/// Where in a record the text is.
#[derive(Debug, Clone)]
pub struct Layout {
    /// File layout.
    pub format: Format,
    /// CSV header name or JSONL field holding the text.
    pub column: String,
    /// Longest text sent, in characters (the server's `limits.max_text_chars`).
    pub max_chars: usize,
}

/// Streams [`Record`]s out of a reader.
pub struct Records {
    inner: Inner,
    layout: Layout,
}

enum Inner {
    Lines { reader: Box<dyn BufRead + Send>, line: u64, offset: u64, buf: Vec<u8> },
    Csv { reader: csv::Reader<Box<dyn BufRead + Send>>, column: usize, record: csv::ByteRecord },
}

impl Records {
    /// Starts reading; for CSV, reads the header and finds the column.
    pub fn new(reader: Box<dyn BufRead + Send>, layout: Layout) -> anyhow::Result<Records> {
        let inner = match layout.format {
            Format::Text | Format::Jsonl => Inner::Lines { reader, line: 0, offset: 0, buf: Vec::new() },
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
                let headers = reader.byte_headers()?.clone();
                let Some(column) = headers.iter().position(|h| h == layout.column.as_bytes()) else {
                    let names: Vec<_> = headers.iter().map(String::from_utf8_lossy).collect();
                    anyhow::bail!(
                        "the CSV header has no column `{}` (it has {names:?}); choose one with --column",
                        layout.column
                    );
                };
                Inner::Csv { reader, column, record: csv::ByteRecord::new() }
            }
        };
        Ok(Records { inner, layout })
    }

    /// The next record, `None` at the end.
    pub fn next_record(&mut self) -> anyhow::Result<Option<Record>> {
        match &mut self.inner {
            Inner::Lines { reader, line, offset, buf } => {
                buf.clear();
                let read = reader.read_until(b'\n', buf)?;
                if read == 0 {
                    return Ok(None);
                }
                *line += 1;
                *offset += read as u64;
                let raw = strip_newline(buf);
                let (text, bad) = match self.layout.format {
                    Format::Jsonl => jsonl_text(raw, &self.layout.column),
                    _ => decode(raw),
                };
                Ok(Some(self.layout.check(*line, text, bad, *offset)))
            }
            Inner::Csv { reader, column, record } => {
                if !reader.read_byte_record(record)? {
                    return Ok(None);
                }
                let line = record.position().map_or(0, |p| p.line());
                let end_offset = reader.position().byte();
                let (text, bad) = match record.get(*column) {
                    Some(field) => decode(field),
                    None => (String::new(), Some(missing(&self.layout.column))),
                };
                Ok(Some(self.layout.check(line, text, bad, end_offset)))
            }
        }
    }
}

impl Layout {
    fn check(&self, line: u64, text: String, bad: Option<Bad>, end_offset: u64) -> Record {
        let bad = bad.or_else(|| {
            if text.trim().is_empty() {
                return Some(Bad { code: "empty_text", message: "the text is empty".to_owned() });
            }
            let chars = text.chars().count();
            (chars > self.max_chars).then(|| Bad {
                code: "text_too_long",
                message: format!("the text has {chars} characters; the limit is {} (--max-chars)", self.max_chars),
            })
        });
        Record { line, text, bad, end_offset }
    }
}

fn strip_newline(buf: &[u8]) -> &[u8] {
    let buf = buf.strip_suffix(b"\n").unwrap_or(buf);
    buf.strip_suffix(b"\r").unwrap_or(buf)
}

fn decode(raw: &[u8]) -> (String, Option<Bad>) {
    match std::str::from_utf8(raw) {
        Ok(text) => (text.to_owned(), None),
        Err(err) => (
            String::from_utf8_lossy(raw).into_owned(),
            Some(Bad { code: "invalid_utf8", message: format!("the text is not UTF-8: {err}") }),
        ),
    }
}

fn missing(column: &str) -> Bad {
    Bad { code: "missing_column", message: format!("the record has no `{column}` (--column)") }
}

fn jsonl_text(raw: &[u8], column: &str) -> (String, Option<Bad>) {
    let (line, bad) = decode(raw);
    if bad.is_some() {
        return (line, bad);
    }
    match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(serde_json::Value::Object(mut object)) => match object.remove(column) {
            Some(serde_json::Value::String(text)) => (text, None),
            Some(_) => (line, Some(Bad { code: "missing_column", message: format!("`{column}` is not a string") })),
            None => (line, Some(missing(column))),
        },
        Ok(_) => (line, Some(Bad { code: "invalid_json", message: "the line is not a JSON object".to_owned() })),
        Err(err) => (line, Some(Bad { code: "invalid_json", message: format!("the line is not JSON: {err}") })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(format: Format, input: &[u8]) -> Vec<Record> {
        let layout = Layout { format, column: "text".to_owned(), max_chars: 5 };
        let mut records = Records::new(Box::new(std::io::Cursor::new(input.to_vec())), layout).unwrap();
        std::iter::from_fn(|| records.next_record().unwrap()).collect()
    }

    fn summary(records: &[Record]) -> Vec<(u64, &str, Option<&str>)> {
        records.iter().map(|r| (r.line, r.text.as_str(), r.bad.as_ref().map(|b| b.code))).collect()
    }

    #[test]
    fn text_lines_keep_their_numbers_and_bad_lines_say_why() {
        let records = read(Format::Text, b"good\r\n\n  \ntoo long text\n\xff\xfe\nlast");
        assert_eq!(
            summary(&records),
            [
                (1, "good", None),
                (2, "", Some("empty_text")),
                (3, "  ", Some("empty_text")),
                (4, "too long text", Some("text_too_long")),
                (5, "\u{fffd}\u{fffd}", Some("invalid_utf8")),
                (6, "last", None),
            ]
        );
        assert_eq!(records[0].end_offset, 6);
        assert_eq!(records.last().unwrap().end_offset, 31);
    }

    #[test]
    fn csv_records_give_the_line_they_start_on() {
        let records = read(Format::Csv, "id,text\n1,好\n2,\"两行\n文本\"\n3,\n4\n5,不错\n".as_bytes());
        assert_eq!(
            summary(&records),
            [
                (2, "好", None),
                (3, "两行\n文本", None),
                (5, "", Some("empty_text")),
                (6, "", Some("missing_column")),
                (7, "不错", None)
            ]
        );
    }

    #[test]
    fn csv_without_the_column_is_refused_naming_the_columns() {
        let layout = Layout { format: Format::Csv, column: "review".to_owned(), max_chars: 5 };
        let Err(err) = Records::new(Box::new(std::io::Cursor::new(b"id,text\n1,x\n".to_vec())), layout) else {
            panic!("a missing column must be refused");
        };
        assert!(err.to_string().contains("no column `review`") && err.to_string().contains("\"text\""), "{err}");
    }

    #[test]
    fn jsonl_takes_the_column_of_each_object() {
        let records = read(Format::Jsonl, "{\"text\":\"好\"}\n{\"id\":1}\n[1]\nnot json\n{\"text\":3}\n".as_bytes());
        assert_eq!(summary(&records)[..1], [(1, "好", None)],);
        let codes: Vec<_> = records[1..].iter().map(|r| r.bad.as_ref().unwrap().code).collect();
        assert_eq!(codes, ["missing_column", "invalid_json", "invalid_json", "missing_column"]);
    }

    #[test]
    fn formats_follow_the_extension() {
        assert_eq!(Format::of_path("a/b.CSV".as_ref()), Format::Csv);
        assert_eq!(Format::of_path("b.ndjson".as_ref()), Format::Jsonl);
        assert_eq!(Format::of_path("b.txt".as_ref()), Format::Text);
        assert_eq!(Format::of_path("-".as_ref()), Format::Text);
    }
}
