//! The records a left or outer stream join sends out alone (`task/stream_join.rs` finds them as
//! the checkpoint expires the join buffers): the `after` steps, encoding and the size check,
//! and for one that cannot be written the pipeline's error policy, as for an input record. A
//! dead letter carries the buffered record (as JSON: its original bytes are not kept) with
//! the topic, partition and offset it was read at.

use serde_json::Value;

use super::Runner;
use crate::codec::{self, Payload};
use crate::config::OnError;
use crate::pipeline::operator::{self, Record};
use crate::pipeline::{Error, Result};
use crate::position::Partition;

/// An output ready to produce: message key, value.
type Encoded = (Option<Vec<u8>>, Vec<u8>);

/// One buffered record that found no partner.
pub(super) struct Unmatched {
    /// The stateful task whose buffer held it, and its event time.
    pub task: Partition,
    pub at: i64,
    pub key: Vec<u8>,
    /// Where it was read: topic, partition, offset.
    pub origin: (String, i32, i64),
    /// Its stored JSON, and the output made of it (or why none could be).
    pub stored: Vec<u8>,
    pub output: std::result::Result<Value, String>,
}

impl Runner<'_> {
    /// Sends each record's output into the open transaction, or applies the error policy.
    pub(super) fn send_unmatched(&mut self, records: Vec<Unmatched>) -> Result<()> {
        let mut sends = Vec::new();
        let mut letters = Vec::new();
        for u in records {
            let failure = match self.unmatched_output(&u) {
                Ok(Some(out)) => {
                    sends.push(out);
                    continue;
                }
                Ok(None) => continue,
                Err(f) => f,
            };
            let (message, policy) = failure;
            let policy = policy.unwrap_or_else(|| self.pipeline.on_error.clone());
            match (policy, self.pipeline.dead_letter_topic.as_deref()) {
                (OnError::Skip, _) => {
                    tracing::warn!(topic = %u.origin.0, partition = u.origin.1, offset = u.origin.2, error = %message, "unmatched join record skipped (on_error = \"skip\")");
                    self.skipped += 1;
                    self.metrics.skipped();
                }
                (OnError::DeadLetter, Some(_)) => letters.push((u, message)),
                (OnError::Fail, _) | (OnError::DeadLetter, None) => {
                    return Err(Error::Timer {
                        partition: u.task,
                        key: String::from_utf8_lossy(&u.key).into_owned(),
                        at: u.at,
                        message: format!("unmatched join record: {message}"),
                    });
                }
            }
        }
        if sends.is_empty() && letters.is_empty() {
            return Ok(());
        }
        for (k, v) in sends {
            self.txn.send(&self.pipeline.sink.topic, k.as_deref(), &v)?;
        }
        if let Some(topic) = self.pipeline.dead_letter_topic.as_deref() {
            for (u, message) in letters {
                let (source, partition, offset) = &u.origin;
                self.send_dead_letter(
                    topic,
                    (source, *partition, *offset),
                    ("stream_join", &message),
                    (Some(&u.key), Some(&u.stored)),
                )?;
                self.dead_lettered += 1;
                self.metrics.dead_lettered();
            }
        }
        Ok(())
    }

    /// The encoded output of `u` (`None`: an `after` step dropped it), or why it has none with
    /// the failing step's own `on_error`.
    fn unmatched_output(
        &self,
        u: &Unmatched,
    ) -> std::result::Result<Option<Encoded>, (String, Option<OnError>)> {
        let value = u.output.clone().map_err(|m| (m, None))?;
        let out = Record {
            key: Some(u.key.clone()),
            value: Payload::Json(value),
        };
        let plan = &self.pipeline.plan;
        let out = match operator::apply_steps(&plan.after, out) {
            Ok(Some(out)) => out,
            Ok(None) => return Ok(None),
            Err(e) => {
                let policy = e
                    .index
                    .and_then(|i| plan.after_on_error.get(i).cloned().flatten());
                return Err((format!("{}: {}", e.step, e.message), policy));
            }
        };
        let bytes = codec::encode(self.pipeline.sink.format, &out.value, &self.schemas)
            .map_err(|e| (format!("encode: {e}"), None))?;
        self.txn
            .check_size(&self.pipeline.sink.topic, out.key.as_deref(), &bytes)
            .map_err(|e| (format!("produce: {e}"), None))?;
        Ok(Some((out.key, bytes)))
    }
}
