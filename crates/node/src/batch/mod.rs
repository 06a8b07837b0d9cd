//! `senti classify`: score texts from the command line or a file, in this process or over a
//! cluster (`--server`), one output record per input record, in input order.
//!
//! ```text
//! reader thread ──batches──▶ up to `concurrency` batches scored at once ──in order──▶ writer
//! (input.rs)                  (Local: engine + gateway; Remote: remote.rs)            (output.rs)
//! ```
//! Memory is flat for any file size: the reader is at most one batch ahead of the scorers, and a
//! batch is written and dropped as soon as every batch before it is. `--resume` finds the last
//! complete output record (output.rs), checks that the input has the same text on that line, and
//! skips the input up to it.

pub mod input;
pub mod output;
pub mod remote;

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use senti_engine::{Engine, RequestId};
use senti_http::ClassifyResult;
use senti_model::Manifest;
use senti_routing::Gateway;

use self::input::{Format, Layout, Record, Records};
use self::output::{Answer, Failure, Writer};
use self::remote::{Remote, Stop};

/// Where the texts come from.
pub enum Source {
    /// Texts given as arguments (line numbers are their positions).
    Args(Vec<String>),
    /// A file, or standard input for `-`.
    File(PathBuf),
}

/// What to do with a record whose text cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnBad {
    /// Write it as an error record (with its line number) and go on.
    Skip,
    /// Stop the run at it, with an error naming its line.
    Fail,
}

/// Everything `senti classify` was asked to do, except who scores.
pub struct Options {
    /// Input.
    pub source: Source,
    /// Input layout (`None`: from the file's extension).
    pub format: Option<Format>,
    /// CSV column or JSONL field of the text.
    pub column: String,
    /// Output file (`None`: standard output, JSONL).
    pub out: Option<PathBuf>,
    /// Continue an interrupted run's `out`.
    pub resume: bool,
    /// Overwrite an existing `out`.
    pub force: bool,
    /// Texts per request.
    pub batch: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Longest text sent, in characters.
    pub max_chars: usize,
    /// Bad records.
    pub on_bad: OnBad,
}

/// Who scores: this process's engine, or servers.
pub enum Scorer {
    /// In-process, through the same engine and gateway `senti serve` uses.
    Local { engine: Arc<Engine>, gateway: Arc<Gateway>, manifest: Box<Manifest>, timeout: Duration },
    /// Over HTTP.
    Remote(Remote),
}

impl Scorer {
    async fn score(&self, texts: &[String]) -> Result<Vec<Answer>, Stop> {
        match self {
            Scorer::Remote(remote) => remote.score(texts).await,
            Scorer::Local { engine, gateway, manifest, timeout } => {
                let scored = async {
                    let encoded = engine.encode(texts).await?;
                    gateway.classify(encoded, Instant::now() + *timeout, None, RequestId::generate()).await
                };
                match scored.await {
                    Ok(classified) => {
                        Ok(classified.scores.iter().map(|s| Ok(ClassifyResult::new(s, manifest))).collect())
                    }
                    Err(err) => Err(Stop::Unavailable { give_up: *timeout, last: err.to_string() }),
                }
            }
        }
    }
}

/// Counts of a finished (or stopped) run.
#[derive(Debug, Default)]
pub struct Summary {
    /// Records written by this run.
    pub written: u64,
    /// Of which labelled.
    pub labelled: u64,
    /// Errors by code.
    pub errors: BTreeMap<String, u64>,
    /// Input line the run resumed after, if it did.
    pub resumed_after: Option<u64>,
    /// Input line of the last record written by this run.
    pub last_line: u64,
}

/// A batch of consecutive input records.
struct Batch {
    records: Vec<Record>,
}

/// A batch being scored: it comes back with its answers.
type Scoring = tokio::task::JoinHandle<(Batch, Result<Vec<Answer>, Stop>)>;

enum Read {
    Batch(Batch),
    /// `--on-bad fail` met a bad record.
    Bad(Record),
    Failed(anyhow::Error),
}

/// Runs `senti classify` to the end; the summary goes to stderr.
pub async fn run(options: Options, scorer: Scorer) -> anyhow::Result<Summary> {
    let out_csv = options.out.as_ref().is_some_and(|p| Format::of_path(p) == Format::Csv);
    let scan = prepare_out(&options, out_csv)?;
    let (reader, total_bytes, format) = open(&options)?;
    let layout = Layout { format, column: options.column.clone(), max_chars: options.max_chars };
    let mut records = Records::new(reader, layout)?;
    let mut summary = Summary::default();
    let mut start_offset = 0;
    if let Some(done) = scan.as_ref().and_then(|s| s.done.as_ref()) {
        start_offset = skip_to(&mut records, done)?;
        summary.resumed_after = Some(done.line);
    }
    let out: Box<dyn Write + Send> = match &options.out {
        Some(path) => {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            Box::new(file)
        }
        None => Box::new(std::io::stdout()),
    };
    let mut writer = Writer::new(out, out_csv, scan.as_ref().is_none_or(|s| s.keep_bytes == 0))?;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Read>(1);
    let (batch_size, on_bad) = (options.batch.max(1), options.on_bad);
    let reading = std::thread::spawn(move || read_batches(&mut records, batch_size, on_bad, &tx));

    let scorer = Arc::new(scorer);
    let mut progress = Progress::new(total_bytes, start_offset);
    let mut in_flight: VecDeque<Scoring> = VecDeque::new();
    let mut ended: Option<anyhow::Error> = None;
    let mut input_done = false;
    loop {
        while !input_done && ended.is_none() && in_flight.len() < options.concurrency.max(1) {
            match rx.recv().await {
                Some(Read::Batch(batch)) => {
                    let scorer = scorer.clone();
                    in_flight.push_back(tokio::spawn(async move {
                        let texts: Vec<String> =
                            batch.records.iter().filter(|r| r.bad.is_none()).map(|r| r.text.clone()).collect();
                        let answers = if texts.is_empty() { Ok(Vec::new()) } else { scorer.score(&texts).await };
                        (batch, answers)
                    }));
                }
                Some(Read::Bad(record)) => {
                    let bad = record.bad.expect("only bad records are sent as Bad");
                    ended = Some(anyhow::anyhow!(
                        "line {}: {} ({}); --on-bad skip writes such lines as errors and goes on",
                        record.line,
                        bad.message,
                        bad.code
                    ));
                }
                Some(Read::Failed(err)) => ended = Some(err),
                None => input_done = true,
            }
        }
        let Some(next) = in_flight.pop_front() else { break };
        let (batch, answers) = next.await.context("a scoring task failed")?;
        let answers = match answers {
            Ok(answers) => answers,
            Err(stop) => {
                ended = Some(stop.into());
                break;
            }
        };
        write_batch(&mut writer, &batch, answers, &mut summary)?;
        writer.flush()?;
        progress.update(summary.written, batch.records.last().map_or(0, |r| r.end_offset));
    }
    writer.flush()?;
    progress.finish();
    drop(rx);
    let _ = reading.join();
    let last_line = summary_line(&summary);
    report(&summary, &scorer, progress.started.elapsed());
    match ended {
        Some(err) => Err(err.context(format!(
            "stopped; the output is complete up to input line {last_line}{}",
            if options.out.is_some() { ": run the same command with --resume to go on" } else { "" }
        ))),
        None => Ok(summary),
    }
}

/// Checks what is at `--out` and makes it ready: `None` for a fresh file, else what the earlier
/// run left (cut record removed).
fn prepare_out(options: &Options, csv: bool) -> anyhow::Result<Option<output::Scan>> {
    let Some(path) = &options.out else {
        anyhow::ensure!(!options.resume, "--resume needs --out (the output to continue)");
        return Ok(None);
    };
    let exists = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
    if !exists || options.force {
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        return Ok(None);
    }
    anyhow::ensure!(
        options.resume,
        "{} exists: give --resume to continue the run that wrote it, or --force to overwrite it",
        path.display()
    );
    let scan = output::scan(path, csv)?;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(scan.keep_bytes)?;
    Ok(Some(scan))
}

/// The input reader, its size in bytes when known (for progress) and its layout.
fn open(options: &Options) -> anyhow::Result<(Box<dyn BufRead + Send>, Option<u64>, Format)> {
    match &options.source {
        Source::Args(texts) => {
            let joined: String = texts.iter().map(|t| format!("{}\n", t.replace('\n', " "))).collect();
            let len = joined.len() as u64;
            Ok((Box::new(std::io::Cursor::new(joined.into_bytes())), Some(len), Format::Text))
        }
        Source::File(path) if path.as_os_str() == "-" => {
            Ok((Box::new(std::io::BufReader::new(std::io::stdin())), None, options.format.unwrap_or(Format::Text)))
        }
        Source::File(path) => {
            let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            let len = file.metadata().ok().map(|m| m.len());
            let format = options.format.unwrap_or_else(|| Format::of_path(path));
            Ok((Box::new(std::io::BufReader::with_capacity(1 << 16, file)), len, format))
        }
    }
}

/// Reads the input up to and including the record the earlier run ended with, checking that it
/// is the same record; returns the input offset after it.
fn skip_to(records: &mut Records, done: &output::Done) -> anyhow::Result<u64> {
    loop {
        let Some(record) = records.next_record()? else {
            anyhow::bail!("--resume: the output goes up to input line {}, but the input ends before it", done.line);
        };
        if record.line < done.line {
            continue;
        }
        anyhow::ensure!(
            record.line == done.line && record.text == done.text,
            "--resume: the output's last record is input line {} with another text than the input has there: is \
             --out the output of this input?",
            done.line
        );
        return Ok(record.end_offset);
    }
}

fn read_batches(records: &mut Records, size: usize, on_bad: OnBad, tx: &tokio::sync::mpsc::Sender<Read>) {
    let mut batch = Vec::with_capacity(size);
    loop {
        let record = match records.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(err) => {
                let _ = tx.blocking_send(Read::Batch(Batch { records: std::mem::take(&mut batch) }));
                let _ = tx.blocking_send(Read::Failed(err.context("cannot read the input")));
                return;
            }
        };
        if record.bad.is_some() && on_bad == OnBad::Fail {
            let _ = tx.blocking_send(Read::Batch(Batch { records: std::mem::take(&mut batch) }));
            let _ = tx.blocking_send(Read::Bad(record));
            return;
        }
        batch.push(record);
        if batch.len() == size && tx.blocking_send(Read::Batch(Batch { records: std::mem::take(&mut batch) })).is_err()
        {
            return;
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(Read::Batch(Batch { records: batch }));
    }
}

fn write_batch(writer: &mut Writer, batch: &Batch, answers: Vec<Answer>, summary: &mut Summary) -> anyhow::Result<()> {
    let mut answers = answers.into_iter();
    for record in &batch.records {
        let answer = match &record.bad {
            Some(bad) => Err(Failure { code: bad.code.to_owned(), message: bad.message.clone() }),
            None => answers.next().context("fewer answers than texts. This is a bug.")?,
        };
        writer.write(record.line, &record.text, &answer)?;
        summary.written += 1;
        match &answer {
            Ok(_) => summary.labelled += 1,
            Err(failure) => {
                *summary.errors.entry(failure.code.clone()).or_default() += 1;
                if summary.errors.values().sum::<u64>() <= 20 {
                    eprintln!("senti classify: line {}: {}: {}", record.line, failure.code, failure.message);
                }
            }
        }
        summary.last_line = record.line;
    }
    Ok(())
}

fn summary_line(summary: &Summary) -> u64 {
    summary.last_line.max(summary.resumed_after.unwrap_or(0))
}

fn report(summary: &Summary, scorer: &Scorer, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let errors: u64 = summary.errors.values().sum();
    let mut line = format!(
        "senti classify: {} records in {secs:.1} s ({:.0} texts/s): {} labelled, {errors} errors",
        summary.written,
        summary.labelled as f64 / secs,
        summary.labelled
    );
    if errors > 0 {
        let kinds: Vec<String> = summary.errors.iter().map(|(code, n)| format!("{code} {n}")).collect();
        line += &format!(" ({})", kinds.join(", "));
    }
    if let Some(after) = summary.resumed_after {
        line += &format!("; resumed after input line {after}");
    }
    if let Scorer::Remote(remote) = scorer {
        let ordering = std::sync::atomic::Ordering::Relaxed;
        line += &format!(
            "; {} failovers, {} waits after 429",
            remote.retries.failovers.load(ordering),
            remote.retries.throttled.load(ordering)
        );
        let servers: Vec<String> = remote.answered().iter().map(|(url, n)| format!("{url} {n}")).collect();
        line += &format!("; texts per server: {}", servers.join(", "));
    }
    eprintln!("{line}");
}

/// A bar on a terminal; a plain line every [`Progress::EVERY`] otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total_bytes: Option<u64>,
    /// Input offset this run started at (after the records a resumed run skipped).
    start_offset: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(5);

    fn new(total_bytes: Option<u64>, start_offset: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total_bytes {
                Some(total) => indicatif::ProgressBar::new(total),
                None => indicatif::ProgressBar::new_spinner(),
            };
            let template = "{wide_bar} {percent}% · {msg} · ETA {eta}";
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_position(start_offset);
            bar
        });
        Progress { bar, total_bytes, start_offset, started: Instant::now(), last_line: Instant::now() }
    }

    fn update(&mut self, texts: u64, offset: u64) {
        let rate = texts as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        if let Some(bar) = &self.bar {
            bar.set_position(offset);
            bar.set_message(format!("{texts} texts, {rate:.0}/s"));
            return;
        }
        if self.last_line.elapsed() < Self::EVERY {
            return;
        }
        self.last_line = Instant::now();
        let mut line = format!("senti classify: {texts} texts, {rate:.0} texts/s");
        if let Some(total) = self.total_bytes.filter(|t| *t > 0) {
            let done = offset.saturating_sub(self.start_offset).max(1) as f64;
            let eta = self.started.elapsed().as_secs_f64() * total.saturating_sub(offset) as f64 / done;
            line += &format!(", {:.0}% of the input, ETA {eta:.0} s", offset as f64 * 100.0 / total as f64);
        }
        eprintln!("{line}");
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
