//! What one pipeline thread shows of itself beyond its numbers: its partitions with their
//! offsets, lag and state, its last checkpoints, and its throughput over the last minutes. The
//! runner replaces it as it goes (every second, at each commit); `/api/v1/status` and the
//! status page read copies.

use std::collections::VecDeque;

use serde::Serialize;

/// Checkpoints kept for the status.
const CHECKPOINTS: usize = 10;
/// Throughput samples kept: one every [`SAMPLE_EVERY_S`] for 10 minutes.
const SAMPLES: usize = 120;
pub const SAMPLE_EVERY_S: f64 = 5.0;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub partitions: Vec<PartitionStatus>,
    /// The latest first.
    pub checkpoints: VecDeque<CheckpointStatus>,
    /// Source records committed since the daemon started.
    pub records_committed: u64,
    /// (Unix seconds, `records_committed` then), oldest first.
    pub throughput: VecDeque<(f64, u64)>,
    pub restarts: u64,
    /// The last failure: a restart's cause, or what ended the thread.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// What the thread does with it: source, keyed, other_stream, …
    pub role: String,
    /// The next offset to process.
    pub position: Option<i64>,
    /// The offset the last checkpoint committed.
    pub committed: Option<i64>,
    pub lag: Option<i64>,
    pub state_bytes: Option<u64>,
    pub state_keys: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointStatus {
    pub id: u64,
    pub committed_unix: f64,
    pub duration_ms: f64,
    pub size_bytes: u64,
}

impl Status {
    pub fn checkpoint(&mut self, c: CheckpointStatus) {
        self.checkpoints.push_front(c);
        self.checkpoints.truncate(CHECKPOINTS);
    }

    /// A throughput sample at `now`, unless the last is more recent than the sampling period.
    pub fn sample(&mut self, now: f64) {
        if self
            .throughput
            .back()
            .is_some_and(|(t, _)| now - t < SAMPLE_EVERY_S)
        {
            return;
        }
        self.throughput.push_back((now, self.records_committed));
        while self.throughput.len() > SAMPLES {
            self.throughput.pop_front();
        }
    }

    /// Records per second between consecutive samples: (Unix seconds, rate), oldest first.
    pub fn rates(&self) -> Vec<(f64, f64)> {
        self.throughput
            .iter()
            .zip(self.throughput.iter().skip(1))
            .map(|((t0, n0), (t1, n1))| {
                let dt = (t1 - t0).max(f64::EPSILON);
                (*t1, n1.saturating_sub(*n0) as f64 / dt)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_spaced_bounded_and_give_rates() {
        let mut s = Status::default();
        for i in 0..400u32 {
            s.records_committed += 10;
            s.sample(f64::from(i));
        }
        // one sample every 5 s of the 400 s, the last 120 kept
        assert_eq!(s.throughput.len(), 80);
        let mut s = Status::default();
        for i in 0..1_000u32 {
            s.records_committed += 10;
            s.sample(f64::from(i));
        }
        assert_eq!(s.throughput.len(), SAMPLES);
        let rates = s.rates();
        assert_eq!(rates.len(), SAMPLES - 1);
        // 10 records a second
        assert!(
            rates.iter().all(|(_, r)| (r - 10.0).abs() < 1e-9),
            "{rates:?}"
        );
    }

    #[test]
    fn the_latest_checkpoints_come_first() {
        let mut s = Status::default();
        for id in 1..=15 {
            s.checkpoint(CheckpointStatus {
                id,
                committed_unix: 0.0,
                duration_ms: 1.0,
                size_bytes: 0,
            });
        }
        assert_eq!(s.checkpoints.len(), CHECKPOINTS);
        assert_eq!(s.checkpoints[0].id, 15);
    }
}
