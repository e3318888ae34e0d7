//! The error policy: a record that cannot be processed fails the pipeline, is skipped, or is
//! dead-lettered (the record untouched, with headers naming where it was read and why it
//! failed), each within the open transaction; the error's place is its topic/partition/offset.

use super::Runner;
use crate::config::OnError;
use crate::kafka::consumer;
use crate::pipeline::operator::RecordError;
use crate::pipeline::{Error, Result};
use crate::position::NextOffset;

impl Runner<'_> {
    pub(super) fn record_error(
        r: &consumer::Message,
        stage: &'static str,
        message: impl ToString,
    ) -> Error {
        Error::Record {
            topic: r.topic().to_string(),
            partition: r.partition,
            offset: r.offset,
            stage,
            message: message.to_string(),
            policy: None,
        }
    }

    /// An operator's error, with that operator's `on_error` override.
    pub(super) fn step_error(
        r: &consumer::Message,
        e: RecordError,
        overrides: &[Option<OnError>],
    ) -> Error {
        let policy = e.index.and_then(|i| overrides.get(i).cloned().flatten());
        Error::Record {
            topic: r.topic().to_string(),
            partition: r.partition,
            offset: r.offset,
            stage: e.step,
            message: e.message,
            policy,
        }
    }

    /// Processes `r`; a record that cannot be processed follows the pipeline's error policy.
    pub(super) fn handle_record(&mut self, r: &consumer::Message) -> Result<()> {
        let e = match self.process(r) {
            Ok(()) => return Ok(()),
            Err(e @ Error::Record { .. }) => e,
            Err(other) => return Err(other),
        };
        let Error::Record {
            stage,
            message,
            policy,
            ..
        } = &e
        else {
            return Err(e);
        };
        let (stage, message) = (*stage, message.clone());
        let policy = policy
            .clone()
            .unwrap_or_else(|| self.pipeline.on_error.clone());
        let dead_letter_topic = self.pipeline.dead_letter_topic.as_deref();
        match (policy, dead_letter_topic) {
            (OnError::Fail, _) | (OnError::DeadLetter, None) => Err(self.abort_for(e)),
            (OnError::Skip, _) => {
                tracing::warn!(topic = %r.topic(), partition = r.partition, offset = r.offset, stage, error = %message, "record skipped (on_error = \"skip\")");
                self.skipped += 1;
                self.metrics.skipped();
                self.mark_done(r);
                Ok(())
            }
            (OnError::DeadLetter, Some(topic)) => {
                let origin = (r.topic(), r.partition, r.offset);
                let record = (r.key(), r.value());
                match self.send_dead_letter(topic, origin, (stage, &message), record) {
                    Ok(()) => {}
                    // the dead letter itself is too large: nothing can take it
                    Err(crate::kafka::Error::TooLarge { .. }) => return Err(self.abort_for(e)),
                    Err(other) => return Err(Error::Kafka(other)),
                }
                tracing::debug!(topic = %r.topic(), partition = r.partition, offset = r.offset, stage, "record dead-lettered");
                self.dead_lettered += 1;
                self.metrics.dead_lettered();
                self.mark_done(r);
                Ok(())
            }
        }
    }

    /// Writes one dead letter into the open transaction: the record (key, value) untouched,
    /// with headers naming where it was read (topic, partition, offset) and why it failed.
    pub(super) fn send_dead_letter(
        &mut self,
        topic: &str,
        (source, partition, offset): (&str, i32, i64),
        (stage, message): (&str, &str),
        (key, value): (Option<&[u8]>, Option<&[u8]>),
    ) -> crate::kafka::Result<()> {
        let (partition, offset) = (partition.to_string(), offset.to_string());
        let headers: [(&str, &[u8]); 7] = [
            ("flumen.pipeline", self.pipeline.name.as_bytes()),
            ("flumen.source.topic", source.as_bytes()),
            ("flumen.source.partition", partition.as_bytes()),
            ("flumen.source.offset", offset.as_bytes()),
            ("flumen.error.stage", stage.as_bytes()),
            ("flumen.error.class", error_class(stage).as_bytes()),
            ("flumen.error.message", message.as_bytes()),
        ];
        self.txn.send_with_headers(topic, key, value, &headers)?;
        crash_point!("dead_letter::after_send");
        Ok(())
    }

    /// A record stops the pipeline: abort the open transaction (nothing in it must survive; a
    /// failed abort is ended by the next start's `init_transactions` or the broker's timeout).
    pub(super) fn abort_for(&mut self, e: Error) -> Error {
        self.txn.abort_on_error();
        e
    }

    /// The record's offset is consumed without an effect (skipped or dead-lettered).
    pub(super) fn mark_done(&mut self, r: &consumer::Message) {
        let p = r.topic_partition();
        if let Some(task) = self.tasks.get_mut(&p) {
            task.next_offset = Some(NextOffset(r.offset + 1));
            self.dirty = true;
        }
    }
}

/// The dead letter's `flumen.error.class` header.
fn error_class(stage: &str) -> &'static str {
    match stage {
        "decode" => "decode",
        "produce" => "too_large",
        "encode" | "repartition" => "encode",
        "panic" => "panic",
        _ => "operator",
    }
}
