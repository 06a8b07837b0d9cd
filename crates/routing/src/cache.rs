//! The result cache in front of the gateway, and coalescing of identical texts in flight.
//!
//! ```text
//! request texts (token ids) ──> per text, keyed by (model, token ids):
//!     cached        -> answered from the cache                   cached: true
//!     in flight     -> waits for the computation already running coalesced
//!     neither       -> leads: joins this request's one batch     miss
//! leaders' batch ──> one spawned task: gateway.classify ──> cache, then every waiter
//! ```
//! The key is the token ids themselves, so two texts share an entry exactly when the tokenizer
//! gives them identical ids (its normalisation: case, width, accents, whitespace), and the model
//! (`name@version/variant`), so an answer of another model is never served, even from a cache that
//! outlived a model swap. Entries are weighed in bytes (ids, scores and a fixed overhead) against
//! `cache.max_bytes`; eviction is quick_cache's S3-FIFO (a small probation queue in front of the
//! main one, which keeps one-off texts from flushing the repeated ones).
//!
//! The computation runs in its own task, so a waiter that goes away (its client hung up, its
//! deadline passed) cancels nothing while others still wait: they get the answer, or all the same
//! error. When the last waiter of every text of a batch has gone, the computation is dropped, which
//! cancels its attempts as a request without a cache would be. Each waiter stops waiting at its own
//! deadline; the computation ends by the leading request's deadline.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};
use senti_engine::{EncodedTexts, InferError};
use senti_model::Scores;
use tokio::sync::watch;

use crate::job::Classified;
use crate::target::TargetId;

/// Bytes an entry costs beyond its ids and scores: the key's and value's headers, the shared
/// model name's pointer, the cache's slot and hash.
const ENTRY_OVERHEAD_BYTES: u64 = 96;

/// Which cached answers a request accepts (from its `Cache-Control` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Freshness {
    /// Cached answers are fine.
    #[default]
    Any,
    /// Compute every text again (`no-cache`); the new answers replace the cached ones.
    NoCache,
    /// Compute every text again and keep nothing (`no-store`).
    NoStore,
}

impl Freshness {
    /// From a `Cache-Control` header value: `no-store` wins over `no-cache`; other directives
    /// (`max-age`, ...) are ignored.
    pub fn from_cache_control(value: &str) -> Self {
        let directives = value.split(',').map(|d| d.trim().to_ascii_lowercase());
        let mut freshness = Self::Any;
        for directive in directives {
            match directive.as_str() {
                "no-store" => return Self::NoStore,
                "no-cache" => freshness = Self::NoCache,
                _ => {}
            }
        }
        freshness
    }
}

/// A request's answers, with where each came from.
#[derive(Debug, Clone)]
pub struct CacheAnswer {
    /// One per text, in request order.
    pub scores: Vec<Scores>,
    /// Per text: answered from the cache.
    pub cached: Vec<bool>,
    /// The inference actor that computed the first text not answered from the cache; `None`
    /// when every text was.
    pub served_by: Option<TargetId>,
}

/// Size of the cache now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries held.
    pub entries: usize,
    /// Their weight in bytes.
    pub bytes: u64,
    /// The bound (`cache.max_bytes`; 0: off).
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    model: Arc<str>,
    ids: Arc<[u32]>,
}

/// The table of cached answers.
type Entries = Cache<Key, Scores, EntryWeight, DefaultHashBuilder, CountEvictions>;

/// What a leader's task sends its waiters; `None` until it is known.
type Outcome = Option<Result<(Scores, TargetId), InferError>>;

#[derive(Clone)]
struct EntryWeight;

impl Weighter<Key, Scores> for EntryWeight {
    fn weight(&self, key: &Key, scores: &Scores) -> u64 {
        4 * (key.ids.len() + scores.probabilities.len()) as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// Counts evictions (`senti_cache_evictions_total`).
#[derive(Clone)]
struct CountEvictions;

impl Lifecycle<Key, Scores> for CountEvictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut Self::RequestState, _key: Key, _val: Scores) {
        metrics::counter!("senti_cache_evictions_total").increment(1);
    }
}

/// One node's result cache and in-flight table for one model.
pub struct ResultCache {
    model: Arc<str>,
    max_bytes: u64,
    /// Shared so that a test can look at one table through two models.
    entries: Option<Arc<Entries>>,
    in_flight: Mutex<HashMap<Key, Arc<watch::Sender<Outcome>>>>,
}

/// How one text of a request gets its answer.
enum Source {
    Cached(Scores),
    Wait(watch::Receiver<Outcome>),
}

impl ResultCache {
    /// A cache for answers of `model` (`name@version/variant`) holding at most `max_bytes`
    /// (0: nothing is kept; identical texts in flight are still computed once).
    pub fn new(model: impl Into<Arc<str>>, max_bytes: u64) -> Arc<Self> {
        let entries = (max_bytes > 0).then(|| {
            // A short review costs about 150 bytes; the estimate only sizes the table.
            let estimated = (max_bytes / 160).clamp(16, 1 << 22) as usize;
            Arc::new(Cache::with(estimated, max_bytes, EntryWeight, DefaultHashBuilder::default(), CountEvictions))
        });
        Arc::new(Self { model: model.into(), max_bytes, entries, in_flight: Mutex::new(HashMap::new()) })
    }

    /// The model whose answers this cache holds.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Entries and bytes held now.
    pub fn stats(&self) -> CacheStats {
        let (entries, bytes) = self.entries.as_ref().map_or((0, 0), |c| (c.len(), c.weight()));
        CacheStats { entries, bytes, max_bytes: self.max_bytes }
    }

    /// Answers `texts` from the cache where it can, waits for identical texts already being
    /// computed, and computes the rest in one batch with `compute` (the gateway), in a task of
    /// its own. Waiting stops at `deadline` with [`InferError::DeadlineExceeded`]; every text
    /// answered by a failed computation gets its error.
    pub async fn classify<F, Fut>(
        self: &Arc<Self>,
        texts: &EncodedTexts,
        freshness: Freshness,
        deadline: Instant,
        compute: F,
    ) -> Result<CacheAnswer, InferError>
    where
        F: FnOnce(Arc<EncodedTexts>) -> Fut,
        Fut: Future<Output = Result<Classified, InferError>> + Send + 'static,
    {
        let mut sources = Vec::with_capacity(texts.len());
        let mut leading = Leading { cache: Arc::clone(self), keys: Vec::new(), senders: Vec::new() };
        let mut batch = EncodedTexts::default();
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
            for ids in texts.iter() {
                let key = Key { model: Arc::clone(&self.model), ids: ids.into() };
                if freshness == Freshness::Any {
                    if let Some(scores) = self.entries.as_ref().and_then(|c| c.get(&key)) {
                        metrics::counter!("senti_cache_lookups_total", "result" => "hit").increment(1);
                        sources.push(Source::Cached(scores));
                        continue;
                    }
                }
                if let Some(tx) = in_flight.get(&key) {
                    metrics::counter!("senti_cache_lookups_total", "result" => "coalesced").increment(1);
                    sources.push(Source::Wait(tx.subscribe()));
                    continue;
                }
                metrics::counter!("senti_cache_lookups_total", "result" => "miss").increment(1);
                let (tx, rx) = watch::channel(None);
                let tx = Arc::new(tx);
                in_flight.insert(key.clone(), Arc::clone(&tx));
                batch.push(ids);
                leading.keys.push(key);
                leading.senders.push(tx);
                sources.push(Source::Wait(rx));
            }
        }
        if !batch.is_empty() {
            let computation = compute(Arc::new(batch));
            let store = freshness != Freshness::NoStore;
            tokio::spawn(leading.finish(computation, store));
        }

        let mut answer = CacheAnswer { scores: Vec::with_capacity(texts.len()), cached: Vec::new(), served_by: None };
        for source in sources {
            match source {
                Source::Cached(scores) => {
                    answer.scores.push(scores);
                    answer.cached.push(true);
                }
                Source::Wait(mut rx) => {
                    let outcome = tokio::time::timeout_at(deadline.into(), rx.wait_for(Option::is_some))
                        .await
                        .map_err(|_| InferError::DeadlineExceeded)?
                        // The task ended without an answer: it panicked or the runtime is stopping.
                        .map_err(|_| InferError::ShuttingDown)?
                        .clone();
                    let (scores, served_by) = outcome.unwrap_or(Err(InferError::ShuttingDown))?;
                    answer.served_by.get_or_insert(served_by);
                    answer.scores.push(scores);
                    answer.cached.push(false);
                }
            }
        }
        Ok(answer)
    }

    fn store(&self, key: Key, scores: Scores) {
        if let Some(cache) = &self.entries {
            cache.insert(key, scores);
        }
    }
}

/// The texts one request computes for everyone waiting on them. Dropping it (the task ended, by
/// answer or panic) takes its texts out of the in-flight table, so nothing waits on a dead task.
struct Leading {
    cache: Arc<ResultCache>,
    keys: Vec<Key>,
    senders: Vec<Arc<watch::Sender<Outcome>>>,
}

impl Leading {
    async fn finish(mut self, computation: impl Future<Output = Result<Classified, InferError>>, store: bool) {
        tokio::pin!(computation);
        let result = loop {
            tokio::select! {
                result = &mut computation => break result,
                () = self.all_waiters_gone() => {
                    // Checked again under the lock: a request may have joined since. If none did,
                    // nobody can join any more, and dropping the computation cancels its attempts.
                    let mut in_flight = self.cache.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
                    if self.senders.iter().all(|tx| tx.receiver_count() == 0) {
                        for key in self.keys.drain(..) {
                            in_flight.remove(&key);
                        }
                        metrics::counter!("senti_cache_abandoned_total").increment(1);
                        return;
                    }
                }
            }
        };
        for (index, (key, tx)) in self.keys.iter().zip(&self.senders).enumerate() {
            let outcome = match &result {
                Ok(classified) => match classified.scores.get(index) {
                    Some(scores) => {
                        if store {
                            // Stored before it leaves the in-flight table (on drop): a request
                            // arriving in between finds one or the other.
                            self.cache.store(key.clone(), scores.clone());
                        }
                        Ok((scores.clone(), classified.served_by.clone()))
                    }
                    None => Err(InferError::Invalid("the gateway answered fewer texts than it was sent".into())),
                },
                Err(err) => Err(err.clone()),
            };
            tx.send_replace(Some(outcome));
        }
    }
}

impl Leading {
    /// Resolves once no request waits for any of this batch's texts (it may have joined again
    /// since: the caller checks under the lock).
    async fn all_waiters_gone(&self) {
        for tx in &self.senders {
            tx.closed().await;
        }
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        let mut in_flight = self.cache.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        for key in &self.keys {
            in_flight.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The gateway is replaced by closures here (a mock, for these unit tests only); the HTTP API
    //! tests run the cache against the real model.
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn texts(ids: &[&[u32]]) -> EncodedTexts {
        EncodedTexts::from_texts(ids.iter().map(|ids| ids.to_vec()))
    }

    fn target() -> TargetId {
        TargetId { node: "n1".into(), actor: "a0".into() }
    }

    /// Scores that encode the text: label = first id % 2, so answers can be checked per text.
    fn scores_for(ids: &[u32]) -> Scores {
        let label = (ids[0] % 2) as usize;
        let mut probabilities = vec![0.1, 0.1];
        probabilities[label] = 0.9;
        Scores { label, probabilities }
    }

    type Computation = std::pin::Pin<Box<dyn Future<Output = Result<Classified, InferError>> + Send>>;

    /// A gateway stand-in that counts the texts it computes, after `delay`.
    fn counting(computed: &Arc<AtomicUsize>, delay: Duration) -> impl FnOnce(Arc<EncodedTexts>) -> Computation {
        let computed = Arc::clone(computed);
        move |batch: Arc<EncodedTexts>| {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                computed.fetch_add(batch.len(), Ordering::SeqCst);
                Ok(Classified {
                    scores: batch.iter().map(scores_for).collect(),
                    served_by: target(),
                    model: "m@1".into(),
                    variant: "int8".into(),
                    attempts: 1,
                })
            })
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn a_cached_answer_equals_the_computed_one() {
        let cache = ResultCache::new("m@1/int8", 1 << 20);
        let computed = Arc::new(AtomicUsize::new(0));
        let batch = texts(&[&[3, 4], &[8]]);
        let first = cache.classify(&batch, Freshness::Any, far(), counting(&computed, Duration::ZERO)).await.unwrap();
        let second = cache.classify(&batch, Freshness::Any, far(), counting(&computed, Duration::ZERO)).await.unwrap();
        assert_eq!(first.scores, second.scores);
        assert_eq!(first.cached, [false, false]);
        assert_eq!(second.cached, [true, true]);
        assert_eq!(second.served_by, None);
        assert_eq!(computed.load(Ordering::SeqCst), 2, "the second request computed nothing");
        assert_eq!(cache.stats().entries, 2);
    }

    #[tokio::test]
    async fn another_model_never_sees_the_entries() {
        let old = ResultCache::new("m@1/int8", 1 << 20);
        let computed = Arc::new(AtomicUsize::new(0));
        let batch = texts(&[&[5]]);
        old.classify(&batch, Freshness::Any, far(), counting(&computed, Duration::ZERO)).await.unwrap();
        // The same cache table keyed by another model (what a model swap would look like).
        let new = Arc::new(ResultCache {
            model: "m@2/int8".into(),
            max_bytes: old.max_bytes,
            entries: old.entries.clone(),
            in_flight: Mutex::new(HashMap::new()),
        });
        let answer = new.classify(&batch, Freshness::Any, far(), counting(&computed, Duration::ZERO)).await.unwrap();
        assert_eq!(answer.cached, [false]);
        assert_eq!(computed.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn no_cache_recomputes_and_no_store_keeps_nothing() {
        let cache = ResultCache::new("m", 1 << 20);
        let computed = Arc::new(AtomicUsize::new(0));
        let batch = texts(&[&[1]]);
        let answer = cache.classify(&batch, Freshness::NoStore, far(), counting(&computed, Duration::ZERO)).await;
        assert_eq!(answer.unwrap().cached, [false]);
        assert_eq!(cache.stats().entries, 0);
        cache.classify(&batch, Freshness::Any, far(), counting(&computed, Duration::ZERO)).await.unwrap();
        let answer = cache.classify(&batch, Freshness::NoCache, far(), counting(&computed, Duration::ZERO)).await;
        assert_eq!(answer.unwrap().cached, [false]);
        assert_eq!(computed.load(Ordering::SeqCst), 3);
        assert_eq!(Freshness::from_cache_control("max-age=0, No-Cache"), Freshness::NoCache);
        assert_eq!(Freshness::from_cache_control("no-cache, no-store"), Freshness::NoStore);
        assert_eq!(Freshness::from_cache_control("max-age=60"), Freshness::Any);
    }

    #[tokio::test]
    async fn identical_texts_in_flight_are_computed_once() {
        let cache = ResultCache::new("m", 0); // coalescing alone, nothing kept
        let computed = Arc::new(AtomicUsize::new(0));
        let batch = texts(&[&[7], &[7], &[2]]);
        let slow = Duration::from_millis(100);
        let (a, b) = tokio::join!(
            cache.classify(&batch, Freshness::Any, far(), counting(&computed, slow)),
            cache.classify(&batch, Freshness::Any, far(), counting(&computed, slow)),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.scores, b.scores);
        assert_eq!(a.scores[0], scores_for(&[7]));
        assert_eq!(a.scores[2], scores_for(&[2]));
        assert_eq!(computed.load(Ordering::SeqCst), 2, "two distinct texts, each computed once");
        assert!(cache.in_flight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_cancels_nothing() {
        let cache = ResultCache::new("m", 1 << 20);
        let computed = Arc::new(AtomicUsize::new(0));
        let batch = texts(&[&[9]]);
        let leader = cache.classify(&batch, Freshness::Any, far(), counting(&computed, Duration::from_millis(100)));
        let follower = cache.classify(&batch, Freshness::Any, far(), counting(&computed, Duration::ZERO));
        // The leader's client goes away while its computation runs; the follower waits on.
        let (leader_result, answer) = tokio::join!(tokio::time::timeout(Duration::from_millis(10), leader), follower);
        assert!(leader_result.is_err(), "the leader was cut off");
        let answer = answer.unwrap();
        assert_eq!(answer.scores, [scores_for(&[9])]);
        assert_eq!(answer.cached, [false], "it waited for the leader's computation");
        assert_eq!(computed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_computation_nobody_waits_for_is_dropped() {
        let cache = ResultCache::new("m", 1 << 20);
        let computed = Arc::new(AtomicUsize::new(0));
        let batch = texts(&[&[3], &[5]]);
        let alone = cache.classify(&batch, Freshness::Any, far(), counting(&computed, Duration::from_millis(50)));
        assert!(tokio::time::timeout(Duration::from_millis(10), alone).await.is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(computed.load(Ordering::SeqCst), 0, "cancelled, as the gateway request would be");
        assert!(cache.in_flight.lock().unwrap().is_empty());
        assert_eq!(cache.stats().entries, 0);
    }

    #[tokio::test]
    async fn every_waiter_gets_the_same_error_and_nothing_is_kept() {
        let cache = ResultCache::new("m", 1 << 20);
        let batch = texts(&[&[4]]);
        let failing = |_: Arc<EncodedTexts>| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err::<Classified, _>(InferError::Unavailable)
        };
        async fn never(_: Arc<EncodedTexts>) -> Result<Classified, InferError> {
            unreachable!("coalesced: never computed twice")
        }
        let (a, b) = tokio::join!(
            cache.classify(&batch, Freshness::Any, far(), failing),
            cache.classify(&batch, Freshness::Any, far(), never),
        );
        assert_eq!(a.unwrap_err(), InferError::Unavailable);
        assert_eq!(b.unwrap_err(), InferError::Unavailable);
        assert_eq!(cache.stats().entries, 0);
        assert!(cache.in_flight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_waiter_stops_at_its_own_deadline() {
        let cache = ResultCache::new("m", 1 << 20);
        let computed = Arc::new(AtomicUsize::new(0));
        let batch = texts(&[&[6]]);
        let soon = Instant::now() + Duration::from_millis(20);
        let answer =
            cache.classify(&batch, Freshness::Any, soon, counting(&computed, Duration::from_millis(200))).await;
        assert_eq!(answer.unwrap_err(), InferError::DeadlineExceeded);
    }

    #[tokio::test]
    async fn a_panicking_computation_fails_its_waiters_and_leaves_no_entry_in_flight() {
        let cache = ResultCache::new("m", 1 << 20);
        let batch = texts(&[&[1]]);
        async fn panics(_: Arc<EncodedTexts>) -> Result<Classified, InferError> {
            panic!("the gateway stand-in panics (expected in this test)")
        }
        let answer = cache.classify(&batch, Freshness::Any, far(), panics).await;
        assert_eq!(answer.unwrap_err(), InferError::ShuttingDown);
        assert!(cache.in_flight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn unique_texts_stay_within_the_byte_bound() {
        let max_bytes = 64 * 1024;
        let cache = ResultCache::new("m", max_bytes);
        for start in 0..2_000u32 {
            let ids: Vec<u32> = (start..start + 30).collect();
            let batch = texts(&[&ids]);
            let ok = |b: Arc<EncodedTexts>| async move {
                Ok(Classified {
                    scores: b.iter().map(scores_for).collect(),
                    served_by: target(),
                    model: "m@1".into(),
                    variant: "int8".into(),
                    attempts: 1,
                })
            };
            cache.classify(&batch, Freshness::Any, far(), ok).await.unwrap();
        }
        let stats = cache.stats();
        assert!(stats.bytes <= max_bytes, "{stats:?}");
        assert!(stats.entries > 100, "the cache still holds entries: {stats:?}");
    }
}
