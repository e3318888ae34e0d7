//! `flumen-bench`: the harness behind `scripts/bench.sh` (issue #6). Not part of the product: it
//! is built only with `--features bench`, and the library's layering rules (rdkafka only in
//! `kafka/`) do not apply to it. Layout:
//!
//! - `raw_copy`: the physical-limit baseline, a consume → produce copy with rdkafka and nothing
//!   else (transactional, or idempotent without transactions).
//! - `workload`: the input records, the reference each output is checked against (the
//!   correctness gate) and the engines' configs.
//! - `engine`: starts Flumen, the Kafka Streams app or the raw copy, and reads their CPU and
//!   memory from /proc.
//! - `topics`: topic creation, preloading, and the read_committed output reader.
//! - `run`: one measured run, and the matrix of runs in randomized order.
//! - `latency`: end-to-end latency at a fixed offered rate (open loop).
//! - `recovery`: time to the next committed output after SIGKILL, at two state sizes.
//! - `report`: medians, min–max, ratios; the table printed and written to `bench/results/`.

mod engine;
mod latency;
mod raw_copy;
mod recovery;
mod report;
mod run;
mod topics;
mod workload;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "flumen-bench",
    about = "Flumen against Kafka Streams and a raw copy"
)]
enum Cmd {
    /// Run the benchmark matrix and print the table.
    Run(Box<run::Args>),
    /// The raw copy baseline engine (started by `run`).
    RawCopy(raw_copy::Args),
}

fn main() -> anyhow::Result<()> {
    match Cmd::parse() {
        Cmd::Run(args) => run::main(*args),
        Cmd::RawCopy(args) => raw_copy::main(args),
    }
}
