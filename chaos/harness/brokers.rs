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
    layout: Layout,
}

/// How the brokers are laid out (`scripts/kafka.sh`'s settings).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub nodes: usize,
    /// `transaction.version` (KIP-890); the broker's default without it.
    pub txn_version: Option<u8>,
    /// One controller process of its own instead of nodes that are broker and controller.
    pub dedicated_controller: bool,
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
    /// Starts `layout.nodes` fresh brokers at `base_port` (node i at base + 10 (i - 1)).
    pub fn start(root: &std::path::Path, layout: Layout, base_port: u16) -> Result<Brokers> {
        let nodes = layout.nodes;
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
            layout,
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
            // a node restarted after a kill acts on its old registration until this fences it,
            // and Kafka drops transaction markers meanwhile (CHAOS.md, finding 11): 3 s, not 9
            .env("FLUMEN_KAFKA_BROKER_SESSION_MS", "3000")
            // a cluster node restarted under load on two cores took over 2 minutes to load its
            // logs and catch up (cluster run 024823Z), past the script's default 120 s
            .env("FLUMEN_KAFKA_START_TIMEOUT", "300")
            .env(
                "FLUMEN_KAFKA_ADVERTISED_PORTS",
                (1..=self.nodes)
                    .map(|i| proxy_port(self.base_port, i).to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        if let Some(v) = self.layout.txn_version {
            c.env("FLUMEN_KAFKA_TXN_VERSION", v.to_string());
        }
        let controller = if self.layout.dedicated_controller {
            "dedicated"
        } else {
            "combined"
        };
        c.env("FLUMEN_KAFKA_CONTROLLER", controller);
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

/// Kafka's transaction coordinator dropping the markers of one transaction: while sending
/// them it found some partitions without a leader and skipped them as "likely deleted" (a
/// restarted node acting on its old registration until the controller fences it leaves every
/// partition leaderless for a moment). What it skipped stays open, a hanging transaction,
/// unless a later transaction of the same producer writes a marker there (CHAOS.md, finding 11).
#[derive(Debug, PartialEq, Eq)]
pub struct MarkerSkip {
    /// The broker log's time stamp, `2026-12-02 19:21:53,851`.
    pub time: String,
    pub transactional_id: String,
    /// `topic-partition`, as Kafka names them.
    pub partitions: Vec<String>,
}

impl MarkerSkip {
    /// One line of `kafka.sh marker-skips`.
    pub fn parse(line: &str) -> Option<MarkerSkip> {
        let time = line.strip_prefix('[')?.split(']').next()?.to_string();
        let (_, rest) = line.split_once("Couldn't find leader endpoint for partitions ")?;
        let (set, rest) = rest.split_once(" while trying to send transaction markers for ")?;
        let (transactional_id, _) = rest.split_once(", these partitions")?;
        let inner = set.split_once('(')?.1.strip_suffix(')')?;
        Some(MarkerSkip {
            time,
            transactional_id: transactional_id.to_string(),
            partitions: inner.split(", ").map(str::to_string).collect(),
        })
    }
}

/// Notes each of `skips`, and marks the `hanging` rows (`find-hanging: TOPIC PARTITION ...`)
/// on a partition whose markers Kafka dropped.
pub fn attribute(skips: &[MarkerSkip], notes: &mut Vec<String>, hanging: &mut [String]) {
    for s in skips {
        notes.push(format!(
            "Kafka dropped the transaction markers of {} for {} partition(s) at {} (no leader \
             while a restarted node's old registration was fenced; CHAOS.md, finding 11): {}",
            s.transactional_id,
            s.partitions.len(),
            s.time,
            s.partitions.join(", ")
        ));
    }
    for row in hanging.iter_mut() {
        let Some((_, cols)) = row.split_once("find-hanging: ") else {
            continue;
        };
        let mut cols = cols.split_whitespace();
        let (Some(topic), Some(partition)) = (cols.next(), cols.next()) else {
            continue;
        };
        let tp = format!("{topic}-{partition}");
        if let Some(s) = skips.iter().find(|s| s.partitions.contains(&tp)) {
            row.push_str(&format!(
                " [Kafka dropped its markers at {}: finding 11]",
                s.time
            ));
        }
    }
}

impl Brokers {
    /// The markers Kafka dropped for transactions whose id contains `prefix` (a scenario's),
    /// from every node's log.
    pub fn marker_skips(&self, prefix: &str) -> Result<Vec<MarkerSkip>> {
        let out = self.run(&["marker-skips"])?;
        Ok(out
            .lines()
            .filter_map(MarkerSkip::parse)
            .filter(|s| s.transactional_id.contains(prefix))
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

#[cfg(test)]
mod tests {
    use super::MarkerSkip;

    #[test]
    fn a_dropped_marker_line_names_the_transaction_and_its_partitions() {
        // as Kafka 4.3.1 logged it in the broker-kill run of 2026-12-02T193233Z
        let line = "[2026-12-02 19:21:53,851] INFO [Transaction Marker Channel Manager 1]: \
            Couldn't find leader endpoint for partitions HashSet(chaos-x-sum-out-0, \
            __consumer_offsets-2, chaos-x-sum-dlq-1) while trying to send transaction markers \
            for flumen-chaos-x-sum-chaos, these partitions are likely deleted already and hence \
            can be skipped (kafka.coordinator.transaction.TransactionMarkerChannelManager)";
        assert_eq!(
            MarkerSkip::parse(line),
            Some(MarkerSkip {
                time: "2026-12-02 19:21:53,851".into(),
                transactional_id: "flumen-chaos-x-sum-chaos".into(),
                partitions: vec![
                    "chaos-x-sum-out-0".into(),
                    "__consumer_offsets-2".into(),
                    "chaos-x-sum-dlq-1".into()
                ],
            })
        );
        assert_eq!(
            MarkerSkip::parse("[2026-12-02 19:21:53,851] INFO something else"),
            None
        );
    }

    #[test]
    fn a_hanging_row_on_a_skipped_partition_is_marked() {
        let skips = [MarkerSkip {
            time: "19:21:53".into(),
            transactional_id: "t".into(),
            partitions: vec!["s-out-2".into()],
        }];
        let mut hanging = vec![
            "find-hanging: s-out\t2\t0\t15".to_string(),
            "find-hanging: s-out\t3\t0\t15".to_string(),
        ];
        let mut notes = Vec::new();
        super::attribute(&skips, &mut notes, &mut hanging);
        assert_eq!(notes.len(), 1);
        assert!(hanging[0].ends_with("[Kafka dropped its markers at 19:21:53: finding 11]"));
        assert_eq!(hanging[1], "find-hanging: s-out\t3\t0\t15");
    }
}
