//! The chaos suite's own brokers (one node, or a three-node KRaft cluster), run by
//! `scripts/kafka.sh` on ports apart from the test broker's, each behind a `proxy::Proxy`:
//! Flumen bootstraps on the proxies, the harness on the brokers' own listeners.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::proxy::Proxy;

pub struct Brokers {
    script: PathBuf,
    pub nodes: usize,
    base_port: u16,
    /// Where Flumen connects: the proxies.
    pub bootstrap: String,
    /// Where the harness connects: the brokers' INTERNAL listeners.
    pub direct: String,
    pub proxies: Vec<Proxy>,
    txn_version: Option<u8>,
}

/// Node `i`'s (1-based) client port, as `scripts/kafka.sh` lays them out.
fn client_port(base: u16, i: usize) -> u16 {
    base + 10 * (i as u16 - 1)
}

/// Node `i`'s INTERNAL listener (never proxied; it advertises itself).
fn internal_port(base: u16, i: usize) -> u16 {
    client_port(base, i) + 3
}

/// The proxy in front of node `i`.
fn proxy_port(base: u16, i: usize) -> u16 {
    client_port(base, i) + 5
}

impl Brokers {
    /// Starts `nodes` fresh brokers at `base_port` (node i at base + 10 (i - 1)).
    pub fn start(
        root: &std::path::Path,
        nodes: usize,
        base_port: u16,
        txn_version: Option<u8>,
    ) -> Result<Brokers> {
        let mut proxies = Vec::new();
        for i in 1..=nodes {
            proxies.push(Proxy::start(
                proxy_port(base_port, i),
                client_port(base_port, i),
            )?);
        }
        let list = |f: fn(u16, usize) -> u16| {
            (1..=nodes)
                .map(|i| format!("127.0.0.1:{}", f(base_port, i)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let b = Brokers {
            script: root.join("scripts/kafka.sh"),
            nodes,
            base_port,
            bootstrap: list(proxy_port),
            direct: list(internal_port),
            proxies,
            txn_version,
        };
        b.run(&["start", "--fresh"])?;
        Ok(b)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.script);
        c.args(args)
            .env("FLUMEN_KAFKA_SSL", "1")
            .env("FLUMEN_KAFKA_SSL_PASSWORD", crate::security::CANARY)
            .env("FLUMEN_KAFKA_PORT", self.base_port.to_string())
            .env("FLUMEN_KAFKA_NODES", self.nodes.to_string())
            .env(
                "FLUMEN_KAFKA_ADVERTISED_PORTS",
                (1..=self.nodes)
                    .map(|i| proxy_port(self.base_port, i).to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        if let Some(v) = self.txn_version {
            c.env("FLUMEN_KAFKA_TXN_VERSION", v.to_string());
        }
        c
    }

    /// Runs `kafka.sh args`; its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("running {}", self.script.display()))?;
        if !out.status.success() {
            bail!(
                "kafka.sh {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn kill(&self, node: usize) -> Result<()> {
        self.run(&["kill", &node.to_string()]).map(drop)
    }

    pub fn stop_node(&self, node: usize) -> Result<()> {
        self.run(&["stop-node", &node.to_string()]).map(drop)
    }

    pub fn start_node(&self, node: usize) -> Result<()> {
        self.run(&["start-node", &node.to_string()]).map(drop)
    }

    pub fn stop(&self) -> Result<()> {
        self.run(&["stop"]).map(drop)
    }

    /// The node id of `transactional_id`'s coordinator (`kafka-transactions describe`).
    pub fn coordinator_of(&self, transactional_id: &str) -> Result<usize> {
        let out = self.run(&["txn-describe", transactional_id])?;
        // a table: a header line naming the columns, then the row
        let mut lines = out.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let row: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let col = header
            .iter()
            .position(|h| h.eq_ignore_ascii_case("CoordinatorId"))
            .with_context(|| format!("no CoordinatorId in: {out}"))?;
        row.get(col)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no coordinator id in: {out}"))
    }

    /// `kafka-transactions find-hanging` on every node: the lines naming hanging transactions.
    pub fn hanging(&self) -> Result<Vec<String>> {
        let out = self.run(&["txn-hanging"])?;
        Ok(out
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("Topic") && !l.starts_with("node"))
            .map(str::to_string)
            .collect())
    }
}

impl Drop for Brokers {
    fn drop(&mut self) {
        if std::env::var_os("FLUMEN_CHAOS_KEEP").is_none() {
            self.stop().ok();
        }
    }
}
