//! State TTL at run time: `dedupe` forgets keys whose time is up, by one range scan over its
//! expiry index per task at each checkpoint (`pipeline/dedupe.rs` has the layout).

use super::Runner;
use crate::config::AggregateKind;
use crate::pipeline::{Result, dedupe};
use crate::state::{namespaced, split_namespaced};

/// Keys forgotten per task and checkpoint at most, so one checkpoint's pause stays bounded;
/// the rest go at the next ones (a lookup ignores expired entries meanwhile).
const MAX_EXPIRED_PER_CHECKPOINT: usize = 100_000;

impl Runner<'_> {
    pub(super) fn expire_state(&mut self) -> Result<()> {
        let pipeline = self.pipeline;
        let Some(agg) = pipeline.plan.aggregate.as_ref() else {
            return Ok(());
        };
        if !matches!(agg.kind, AggregateKind::Dedupe { .. }) {
            return Ok(());
        }
        let now = i64::try_from(crate::checkpoint::now_unix_ms()).unwrap_or(i64::MAX);
        let (from, to) = dedupe::expired_range(now);
        let (from, to) = (namespaced(&agg.id, &from), namespaced(&agg.id, &to));
        let mut forgotten = 0usize;
        for task in self.tasks.values_mut() {
            let Some(state) = task.state.as_mut() else {
                continue;
            };
            let mut due = Vec::new();
            state.range(&from, &to, |k, _| {
                due.push(k.to_vec());
                Ok(due.len() < MAX_EXPIRED_PER_CHECKPOINT)
            })?;
            for index_key in due {
                let Some(key) = split_namespaced(&index_key)
                    .and_then(|(_, inner)| dedupe::key_of_expiry_key(inner))
                else {
                    continue;
                };
                let live = namespaced(&agg.id, &dedupe::live_key(key));
                // the key may have been admitted again since: keep a newer entry
                let current = state.get(&live)?;
                if current
                    .as_deref()
                    .and_then(dedupe::decode_expiry)
                    .is_none_or(|e| e <= now)
                {
                    state.delete(&live)?;
                }
                state.delete(&index_key)?;
                forgotten += 1;
            }
        }
        if forgotten > 0 {
            tracing::debug!(pipeline = %pipeline.name, forgotten, "dedupe keys expired");
        }
        Ok(())
    }
}
