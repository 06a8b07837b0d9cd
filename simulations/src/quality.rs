//! The routing-quality report: how evenly each placement policy spreads requests over the
//! cluster's inference actors, measured by p99 latency in a deterministic discrete-event simulation.
//!
//! N nodes, each with one gateway and `actors_per_node` inference actors (FIFO, one text at a
//! time, bounded queue); Poisson arrivals spread uniformly over the gateways; a deadline per
//! request. The decisions are the project's own code: `senti_routing::estimate`,
//! `power_of_two_choices` and `least_loaded` for placement, `senti_cluster::should_publish` for
//! when an actor's backlog enters gossip. What is modelled instead of run: the actors' service
//! times (a distribution fitted to benchmarks), the network (a constant hop), and chitchat's
//! propagation (an epidemic of push-pull rounds, gossip.rs). Retries, hedging and ejection are
//! left out: the report compares placement alone. `senti-sim-report` runs the grid and writes
//! docs/simulations.md's figures.
//! ```text
//! scenario.rs  the cell's parameters and their defaults (from senti_config and benchmarks)
//! sim.rs       the event loop: arrivals, queues, hops, deadlines; one CellResult per run
//! gossip.rs    load publication (should_publish) and epidemic propagation to every gateway
//! policy.rs    the policies compared, each from what its gateway can know
//! report.rs    markdown tables and SVG plots
//! ```

mod gossip;
mod policy;
mod report;
mod scenario;
mod sim;

pub use policy::{gateway_estimate_params, Policy, Tweaks};
pub use report::{diagnostics_table, markdown_table, write_p99_plot};
pub use scenario::{Bursts, Entry, Scenario, ServiceTime, Slowdown, Variant};
pub use sim::{run, CellResult};
