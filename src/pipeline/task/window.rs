//! Windows at run time: each stateful task's watermark, the closing of windows when it
//! advances (a bounded range scan over time-ordered keys), and the watermark markers that
//! carry each source partition's watermark through the repartition topic.
//!
//! Without a repartition topic a stateful task is its source partition and its watermark is
//! that partition's. With one, every record a source task writes to the repartition topic
//! carries its event time (header `flumen.event_time`) and its source partition's watermark (a
//! header); at each checkpoint a source task whose watermark moved, or that has records left
//! to read, also writes a marker (no key, no value, the header) to every repartition
//! partition, so quiet keys do not hold windows open and a slow partition is not idle.
//! Markers and records go through the transaction like everything else.

use std::time::Instant;

use super::Runner;
use crate::codec;
use crate::config::{Aggregate, Emit, EventTime, Window};
use crate::pipeline::operator;
use crate::pipeline::window::{self, NO_WATERMARK, Watermarks};
use crate::pipeline::{Error, Result};
use crate::position::Partition;
use crate::state::{TaskState, namespaced};

/// A windowed aggregate's task: its watermark, and how far windows were closed.
pub(super) struct WindowTask {
    pub watermarks: Watermarks,
    /// Windows ending below this have been emitted and deleted.
    pub fired_below: i64,
    /// When the task was restored (ms since the epoch): an idle marker written before then
    /// (read again after a restart or a rewind) may be stale, its partition's backlog still
    /// to come, so it counts as an ordinary marker; a quiet partition says so again within an
    /// idle timeout.
    pub since_ms: i64,
}

impl<'a> Runner<'a> {
    /// The aggregate and its window, when the pipeline's aggregate is windowed (borrowed from
    /// the config, not from the runner).
    pub(super) fn windowed(&self) -> Option<(&'a Aggregate, &'a Window)> {
        let pipeline: &'a crate::config::PipelineConfig = self.pipeline;
        let agg = pipeline.plan.aggregate.as_ref()?;
        Some((agg, agg.window.as_ref()?))
    }

    /// The keyed operator that follows watermarks: a windowed aggregate, a stream-stream join, a
    /// TTL in event time, or a custom operator with the source's event time (its event timers).
    pub(super) fn timed(&self) -> Option<&'a Aggregate> {
        let pipeline: &'a crate::config::PipelineConfig = self.pipeline;
        let agg = pipeline.plan.aggregate.as_ref()?;
        (agg.window.is_some()
            || matches!(agg.kind, crate::config::AggregateKind::StreamJoin { .. })
            || agg.ttl_time == crate::config::TimeDomain::Event
            || (matches!(agg.kind, crate::config::AggregateKind::Custom { .. })
                && pipeline.source.event_time.is_some()))
        .then_some(agg)
    }

    /// The window state of a stateful task of `p`, with its watermark read back from `state`.
    pub(super) fn restore_windows(
        &self,
        p: &Partition,
        state: &TaskState,
    ) -> Result<Option<WindowTask>> {
        let (Some(agg), Some(_)) = (self.timed(), &self.pipeline.source.event_time) else {
            return Ok(None);
        };
        let inputs: Vec<i32> = if self.topology.repartition_topic().is_some() {
            (0..self.topology.source_partitions).collect()
        } else {
            vec![p.partition]
        };
        let mut watermarks = Watermarks::new(inputs);
        let (lo, hi) = Watermarks::entry_range();
        state.range(
            &namespaced(&agg.id, &lo),
            &namespaced(&agg.id, &hi),
            |k, v| {
                if let Some((_, key)) = crate::state::split_namespaced(k) {
                    watermarks.restore_entry(key, v);
                }
                Ok(true)
            },
        )?;
        Ok(Some(WindowTask {
            watermarks,
            fired_below: NO_WATERMARK,
            since_ms: window::now_ms(),
        }))
    }

    /// Writes each windowed task's watermark into its state, before the snapshot.
    pub(super) fn persist_watermarks(&mut self) -> Result<()> {
        let Some(id) = self.timed().map(|a| a.id.clone()) else {
            return Ok(());
        };
        for task in self.tasks.values_mut() {
            if let (Some(w), Some(state)) = (&task.windows, task.state.as_mut()) {
                for (k, v) in w.watermarks.to_entries() {
                    state.put(&namespaced(&id, &k), &v)?;
                }
            }
        }
        Ok(())
    }

    /// Input `input` of `p`'s task reached `watermark` (`idle`: an idle marker): advance, and
    /// close what it closes.
    pub(super) fn observe_watermark(
        &mut self,
        p: &Partition,
        input: i32,
        (watermark, idle): (i64, bool),
    ) -> Result<()> {
        if let Some(w) = self.tasks.get_mut(p).and_then(|t| t.windows.as_mut()) {
            w.watermarks.observe(input, watermark, idle);
            // per record: nothing more to do unless the task's watermark moved
            if w.watermarks.advance().is_none() {
                return Ok(());
            }
        }
        self.close_windows_or_abort(p)
    }

    /// A window that cannot be emitted stops the pipeline: abort the open transaction first,
    /// so read_committed readers of the sink do not wait out its timeout.
    fn close_windows_or_abort(&mut self, p: &Partition) -> Result<()> {
        match self.close_windows(p) {
            Err(e @ Error::Window { .. }) => Err(self.abort_for(e)),
            other => other,
        }
    }

    /// Every windowed task: at each checkpoint.
    pub(super) fn close_all_windows(&mut self) -> Result<()> {
        if self.timed().is_none() {
            return Ok(());
        }
        for w in self.tasks.values_mut().filter_map(|t| t.windows.as_mut()) {
            w.watermarks.advance();
        }
        let partitions: Vec<Partition> = self.tasks.keys().cloned().collect();
        for p in partitions {
            self.close_windows_or_abort(&p)?;
        }
        Ok(())
    }

    /// Emits (`on_window_close`) and deletes every window of `p` the watermark has closed.
    fn close_windows(&mut self, p: &Partition) -> Result<()> {
        // the config outlives the runner: no borrow of self, no clone per record
        let pipeline = self.pipeline;
        let Some(agg) = pipeline.plan.aggregate.as_ref() else {
            return Ok(());
        };
        let Some(w) = agg.window.as_ref() else {
            return Ok(());
        };
        let Some(task) = self.tasks.get_mut(p) else {
            return Ok(());
        };
        let (Some(wt), Some(state)) = (task.windows.as_mut(), task.state.as_mut()) else {
            return Ok(());
        };
        // both callers have just advanced the watermark
        let below = window::closed_below(w, wt.watermarks.current());
        if below <= wt.fired_below {
            return Ok(());
        }
        // windows ending below the previous bound were deleted then and cannot come back (the
        // watermark never goes back): start there, not among their tombstones
        let from_end = wt.fired_below;
        wt.fired_below = below;
        let (mut lo, hi) = window::window_range(below);
        if from_end != NO_WATERMARK {
            lo = window::window_key(from_end, &[]);
        }
        let mut due = Vec::new();
        state.range(
            &namespaced(&agg.id, &lo),
            &namespaced(&agg.id, &hi),
            |k, v| {
                due.push((k.to_vec(), v.to_vec()));
                Ok(true)
            },
        )?;
        if due.is_empty() {
            return Ok(());
        }
        let mut outputs = Vec::new();
        for (k, v) in &due {
            state.delete(k)?;
            let Some((end, key)) = crate::state::split_namespaced(k)
                .and_then(|(_, inner)| window::split_window_key(inner))
            else {
                continue;
            };
            // a session keeps its start in its value, and an index entry to delete with it
            let (start, v) = match w.gap_ms {
                Some(_) => {
                    let Some((start, st)) = window::session::split_value(v) else {
                        continue;
                    };
                    state.delete(&namespaced(
                        &agg.id,
                        &window::session::index_key(key, start),
                    ))?;
                    (start, st)
                }
                None => (end.saturating_sub(w.size_ms), v.as_slice()),
            };
            if agg.emit != Emit::OnWindowClose {
                continue;
            }
            if let Some((out_key, bytes)) =
                window_result(pipeline, &self.schemas, p, (key, start, end), v)?
            {
                let window_key = String::from_utf8_lossy(key).into_owned();
                outputs.push((out_key, bytes, window_key, start, end));
            }
        }
        tracing::debug!(partition = %p, windows = due.len(), below, "windows closed");
        if outputs.is_empty() {
            return Ok(());
        }
        self.send_window_results(p, outputs)?;
        self.dirty = true;
        Ok(())
    }

    /// Closed windows' results into the transaction; one over the producer's limit stops the
    /// pipeline, naming the window.
    fn send_window_results(&mut self, p: &Partition, outputs: Vec<WindowOut>) -> Result<()> {
        for (key, bytes, window_key, start, end) in outputs {
            match self
                .txn
                .send(&self.pipeline.sink.topic, key.as_deref(), &bytes)
            {
                Err(e @ crate::kafka::Error::TooLarge { .. }) => {
                    return Err(Error::Window {
                        partition: p.clone(),
                        key: window_key,
                        start,
                        end,
                        message: format!("its result cannot be produced: {e}"),
                    });
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Repartitioning windowed pipelines: at each checkpoint, every source task whose
    /// watermark moved since its last marker, or whose partition it has not read to its end,
    /// sends one to every repartition partition; one whose partition is read to its end and
    /// quiet for the idle timeout declares it idle ([`window::marker_due`]).
    pub(super) fn send_markers(&mut self) -> Result<()> {
        let (Some(topic), Some(et), true) = (
            self.topology.repartition_topic().map(str::to_string),
            self.pipeline.source.event_time.as_ref(),
            self.timed().is_some(),
        ) else {
            return Ok(());
        };
        let partitions = self.topology.source_partitions;
        let now = Instant::now();
        let markers = self.source_markers(et, now);
        for task in self.tasks.values_mut().filter(|t| t.spoke) {
            task.quiet_since = now;
            task.idle_marked = None;
        }
        for (p, marker) in markers {
            let header = window::format_watermark(p.partition, marker.watermark);
            let watermark = (window::WATERMARK_HEADER, header.as_bytes());
            if marker.idle {
                let idle = (window::IDLE_HEADER, &b"1"[..]);
                self.txn
                    .send_marker(&topic, partitions, &[watermark, idle])?;
                tracing::debug!(partition = %p, "source partition read to its end and quiet: idle");
            } else {
                self.txn.send_marker(&topic, partitions, &[watermark])?;
            }
            if let Some(task) = self.tasks.get_mut(&p) {
                if marker.idle {
                    task.idle_marked = Some(now);
                } else {
                    // a partition that is behind is not quiet, even if nothing was read yet
                    task.quiet_since = now;
                    task.idle_marked = None;
                }
                task.marker_sent = task.marker_sent.max(marker.watermark);
                task.spoke = false;
            }
            self.dirty = true;
        }
        Ok(())
    }

    /// An idle marker is due: the loop checkpoints for it even with nothing else to commit,
    /// or a thread whose source partitions went quiet would never say so, and every
    /// stateful task would wait for them for ever.
    pub(super) fn idle_marker_due(&self) -> bool {
        match (
            self.topology.repartition_topic(),
            self.pipeline.source.event_time.as_ref(),
            self.timed(),
        ) {
            (Some(_), Some(et), Some(_)) => self
                .source_markers(et, Instant::now())
                .iter()
                .any(|(_, m)| m.idle),
            _ => false,
        }
    }

    /// The marker each source task is due to send at `now`, if any.
    fn source_markers(&self, et: &EventTime, now: Instant) -> Vec<(Partition, window::Marker)> {
        let mut out = Vec::new();
        for (p, task) in self.tasks.iter().filter(|(_, t)| t.role.reads_source()) {
            // what the task processed counts as handed over: librdkafka forgets its own
            // count on every seek, until the next message
            let end = self
                .consumer
                .end_of(p)
                .map(|e| e.counting_processed(task.next_offset.map(|n| n.0)));
            let view = window::SourceView {
                max_event_time: task.max_event_time,
                marker_sent: task.marker_sent,
                spoke: task.spoke,
                // a partition a savepoint cut holds is not quiet: its records wait
                behind: self.held_by_cut(p) || crate::kafka::consumer::may_hold_unread(end),
                // as Kafka showed it: the clock alone counts a loop blocked for seconds as
                // quiet, while the partition's records waited
                quiet: if task.spoke {
                    std::time::Duration::ZERO
                } else {
                    crate::kafka::consumer::quiet_since(end, task.quiet_since)
                },
                idle_marked: task
                    .idle_marked
                    .filter(|_| !task.spoke)
                    .map(|t| now.saturating_duration_since(t)),
            };
            if let Some(marker) = window::marker_due(et, &view) {
                out.push((p.clone(), marker));
            }
        }
        out
    }
}

/// An output ready to produce: message key, value.
type Encoded = (Option<Vec<u8>>, Vec<u8>);

/// A closed window's output: message key, value, and the window (key text, start, end).
type WindowOut = (Option<Vec<u8>>, Vec<u8>, String, i64, i64);

/// The result of the window `(key, start, end)` of `p` whose accumulator is `state`: through
/// the `after` steps and encoded (`None`: a step dropped it).
fn window_result(
    pipeline: &crate::config::PipelineConfig,
    schemas: &crate::codec::avro::Registry,
    p: &Partition,
    (key, start, end): (&[u8], i64, i64),
    state: &[u8],
) -> Result<Option<Encoded>> {
    let fail = |message: String| Error::Window {
        partition: p.clone(),
        key: String::from_utf8_lossy(key).into_owned(),
        start,
        end,
        message,
    };
    let Some(agg) = pipeline.plan.aggregate.as_ref() else {
        return Ok(None);
    };
    let result = operator::result_of(&agg.kind, state).map_err(|e| fail(e.to_string()))?;
    let out = operator::window_output(agg, key, start, end, result);
    let Some(out) =
        operator::apply_steps(&pipeline.plan.after, out).map_err(|e| fail(e.to_string()))?
    else {
        return Ok(None);
    };
    let bytes = codec::encode(pipeline.sink.format, &out.value, schemas)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Some((out.key, bytes)))
}
