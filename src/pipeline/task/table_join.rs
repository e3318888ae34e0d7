//! A join's table at run time: each stateful task reads its partition of the table topic into
//! its state, from the offset its state records (`pipeline/table_join.rs`), to the topic's end: when
//! the task is assigned or rewound (before any stream record of it), and then every checkpoint
//! interval. A stream record joins with the table as far as it was read then.

use std::time::Duration;

use super::Runner;
use crate::codec::{self, Payload};
use crate::config::AggregateKind;
use crate::pipeline::{Result, table_join};
use crate::position::NextOffset;
use crate::state::namespaced;

/// How long reading a table partition to its end may take before the pipeline restarts.
const TABLE_READ_TIMEOUT: Duration = Duration::from_secs(60);

impl Runner<'_> {
    /// The join's (operator id, table topic), when the pipeline joins.
    pub(super) fn joined_table(&self) -> Option<(&str, &str)> {
        let agg = self.pipeline.plan.aggregate.as_ref()?;
        match &agg.kind {
            AggregateKind::Join { table, .. } => Some((agg.id.as_str(), table.as_str())),
            _ => None,
        }
    }

    /// Reads every stateful task's table partition to the end (all of `partitions`, or all).
    pub(super) fn refresh_tables(&mut self) -> Result<()> {
        let pipeline = self.pipeline;
        let (Some(reader), Some(agg)) = (&self.table_reader, pipeline.plan.aggregate.as_ref())
        else {
            return Ok(());
        };
        let AggregateKind::Join { table, format, .. } = &agg.kind else {
            return Ok(());
        };
        let format = *format;
        let offset_key = namespaced(&agg.id, &table_join::offset_key());
        let mut from = Vec::new();
        for (p, task) in &self.tasks {
            if let Some(state) = &task.state {
                let next = state
                    .get(&offset_key)?
                    .as_deref()
                    .and_then(table_join::decode_offset)
                    .map(NextOffset);
                from.push((p.partition, next));
            }
        }
        if from.is_empty() {
            return Ok(());
        }
        let rows = reader.read(table, &from, TABLE_READ_TIMEOUT)?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut skipped = 0u64;
        for row in &rows {
            let Some(p) = self.topology.stateful_partition(row.partition) else {
                continue;
            };
            let Some(state) = self.tasks.get_mut(&p).and_then(|t| t.state.as_mut()) else {
                continue;
            };
            let key = namespaced(
                &agg.id,
                &table_join::row_key(row.key.as_deref().unwrap_or_default()),
            );
            // an empty value is how the reader hands over a tombstone
            let value = (!row.value.is_empty()).then_some(row.value.as_slice());
            let outage = std::cell::Cell::new(None);
            let decoded = table_join::table_value(value, |bytes| {
                match codec::decode(format, Some(bytes), &self.schemas) {
                    Ok(Payload::Json(v)) => Ok(v),
                    Ok(_) => Err("not a record with fields".to_string()),
                    Err(codec::Error::Registry(m)) => {
                        outage.set(Some(m.clone()));
                        Err(m)
                    }
                    Err(e) => Err(e.to_string()),
                }
            });
            // the registry's outage is not the row's: stop before its offset is kept
            if let Some(m) = outage.take() {
                return Err(crate::pipeline::Error::SchemaRegistry(m));
            }
            match decoded {
                Ok(Some(v)) => state.put(&key, &v)?,
                Ok(None) => state.delete(&key)?,
                Err(message) => {
                    skipped += 1;
                    tracing::warn!(topic = %table, partition = row.partition, offset = row.offset, error = %message, "table record skipped; the row keeps its previous value");
                }
            }
            state.put(&offset_key, &(row.offset + 1).to_be_bytes())?;
        }
        tracing::debug!(table = %table, rows = rows.len(), skipped, "table read");
        self.dirty = true;
        Ok(())
    }
}
