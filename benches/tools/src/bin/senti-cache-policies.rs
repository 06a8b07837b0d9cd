//! Replays request traces through cache eviction policies, offline (no server): the hit rate of
//! the result cache's policy (quick_cache's S3-FIFO) against plain LRU (`lru`) and W-TinyLFU
//! (`moka`) at the same capacity, and whether routing each text to "its" node (a hash of the
//! text) would raise a cluster's hit rate over entering any node.
//!
//! The traces are senti-loadgen's (`--repeat-share`, benches/tools/src/trace.rs): a share of the
//! requests repeats an earlier text, with a Zipf popularity of exponent 1 over everything sent
//! before; the rest are new texts. Capacities are in entries: the cache weighs entries in bytes,
//! about 160 for a short review (crates/routing/src/cache.rs), so the default 64 MiB holds about
//! 420,000. Prints one Markdown table per question.

use std::num::NonZeroUsize;

use clap::Parser;
use senti_bench::payload::splitmix64;
use senti_bench::trace::Trace;

#[derive(Parser)]
#[command(about = "Cache hit rates of eviction policies and of text-affine routing on senti-loadgen's traces")]
struct Args {
    /// Requests (one text each) per trace: 2,000,000 is about 20 minutes of one node's
    /// saturated traffic (1,600 texts/s).
    #[arg(long, default_value_t = 2_000_000)]
    requests: u64,
    /// Shares of requests that repeat an earlier text (senti-loadgen --repeat-share).
    #[arg(long, value_delimiter = ',', default_values_t = [0.005, 0.3, 0.6])]
    shares: Vec<f64>,
    /// Cache capacities, in entries (per node).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 100_000, 420_000])]
    capacities: Vec<usize>,
    /// Nodes of the cluster question.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Seed of the traces.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A cache as far as hit rate goes: `access` says whether the key was held, and holds it after.
trait Policy {
    fn access(&mut self, key: u64) -> bool;
}

struct S3Fifo(quick_cache::unsync::Cache<u64, ()>);
struct Lru(lru::LruCache<u64, ()>);
struct TinyLfu(moka::sync::Cache<u64, ()>, u64);

impl Policy for S3Fifo {
    fn access(&mut self, key: u64) -> bool {
        let hit = self.0.get(&key).is_some();
        if !hit {
            self.0.insert(key, ());
        }
        hit
    }
}

impl Policy for Lru {
    fn access(&mut self, key: u64) -> bool {
        let hit = self.0.get(&key).is_some();
        if !hit {
            self.0.put(key, ());
        }
        hit
    }
}

impl Policy for TinyLfu {
    fn access(&mut self, key: u64) -> bool {
        let hit = self.0.get(&key).is_some();
        if !hit {
            self.0.insert(key, ());
        }
        // moka applies reads and writes to its policy in batches; settling them often keeps the
        // replay faithful to one access at a time.
        self.1 += 1;
        if self.1.is_multiple_of(512) {
            self.0.run_pending_tasks();
        }
        hit
    }
}

fn policy(name: &str, capacity: usize) -> Box<dyn Policy> {
    match name {
        "S3-FIFO (quick_cache, shipped)" => Box::new(S3Fifo(quick_cache::unsync::Cache::new(capacity))),
        "LRU (lru)" => Box::new(Lru(lru::LruCache::new(NonZeroUsize::new(capacity.max(1)).expect("at least 1")))),
        _ => Box::new(TinyLfu(moka::sync::Cache::new(capacity as u64), 0)),
    }
}

const POLICIES: [&str; 3] = ["S3-FIFO (quick_cache, shipped)", "LRU (lru)", "W-TinyLFU (moka)"];

fn percent(hits: u64, of: u64) -> String {
    format!("{:.2}%", hits as f64 * 100.0 / of.max(1) as f64)
}

fn main() {
    let args = Args::parse();
    println!(
        "{} requests per trace, seed {}; hit rates (an unbounded cache's is the repeat share)\n",
        args.requests, args.seed
    );
    println!("| repeat share | capacity (entries) | {} |", POLICIES.join(" | "));
    println!("|---|---|{}", "---|".repeat(POLICIES.len()));
    for &share in &args.shares {
        let trace = Trace::Repeats { share, seed: args.seed };
        for &capacity in &args.capacities {
            let rates: Vec<String> = POLICIES
                .iter()
                .map(|name| {
                    let mut cache = policy(name, capacity);
                    let hits = (0..args.requests).filter(|&i| cache.access(trace.text_at(i))).count() as u64;
                    percent(hits, args.requests)
                })
                .collect();
            println!("| {share} | {capacity} | {} |", rates.join(" | "));
        }
    }

    println!(
        "\n{} nodes, each with its own S3-FIFO cache of the capacity; cluster hit rate when each request enters a random node against when it goes to the node a hash of its text names\n",
        args.nodes
    );
    println!("| repeat share | capacity per node | random entry | text-affine | affine ÷ random |");
    println!("|---|---|---|---|---|");
    for &share in &args.shares {
        let trace = Trace::Repeats { share, seed: args.seed };
        for &capacity in &args.capacities {
            let mut random: Vec<_> = (0..args.nodes).map(|_| policy(POLICIES[0], capacity)).collect();
            let mut affine: Vec<_> = (0..args.nodes).map(|_| policy(POLICIES[0], capacity)).collect();
            let (mut random_hits, mut affine_hits) = (0_u64, 0_u64);
            for i in 0..args.requests {
                let text = trace.text_at(i);
                let mut state = args.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let entry = splitmix64(&mut state) % args.nodes;
                let mut state = text ^ 0xA076_1D64_78BD_642F;
                let owner = splitmix64(&mut state) % args.nodes;
                random_hits += u64::from(random[entry as usize].access(text));
                affine_hits += u64::from(affine[owner as usize].access(text));
            }
            println!(
                "| {share} | {capacity} | {} | {} | {:.2} |",
                percent(random_hits, args.requests),
                percent(affine_hits, args.requests),
                affine_hits as f64 / random_hits.max(1) as f64
            );
        }
    }
}
