//! The tool's side of a cut (`flumen savepoint create` beside running instances): the
//! request, the read up to every barrier, and the savepoint at the cut.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use super::{BARRIER_HEADER, CUT_LIMIT, Phase, Request};
use crate::checkpoint::GroupCommit;
use crate::config::KafkaConfig;
use crate::control::Taken;
use crate::kafka::{control, reader};
use crate::pipeline::task::start::load_schemas;
use crate::pipeline::task::{Incarnation, Runner};
use crate::pipeline::topology::Role;
use crate::pipeline::{Error, Inputs, Result};
use crate::position::{NextOffset, Partition};

/// How long the tool waits for the barriers: below `CUT_LIMIT`, so that no thread lets its
/// sources go on before the tool has read every barrier.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(40);
/// How long it waits for the first barrier beyond three checkpoint intervals: none by then
/// means no instance heard the request (the group's members are stopped instances whose
/// sessions have not expired yet).
const FIRST_BARRIER_GRACE: Duration = Duration::from_secs(8);
/// What the tool read up to the barriers of one cut.
struct Barriers {
    /// Each source partition's next offset at its barrier.
    sources: BTreeMap<i32, Option<NextOffset>>,
    /// The repartition records between each stateful task's commit and its last barrier.
    in_flight: Vec<reader::Pending>,
}

impl<'a> Runner<'a> {
    /// `flumen savepoint create` while instances run (`inputs` as `cli::savepoint` makes them
    /// for an observer: its own writer id and state directory).
    pub fn savepoint_online(inputs: &Inputs<'a>, dir: Option<PathBuf>) -> Result<Taken> {
        let (mut runner, _) =
            Self::prepare(inputs, None, Incarnation::Observer, load_schemas(inputs)?)?;
        if runner.topology.repartition_topic().is_some() && runner.stream_join().is_some() {
            return Err(Error::Cut(
                "a stream join with a repartition topic cannot be cut while it runs yet; stop the \
                 pipeline and run savepoint create again"
                    .into(),
            ));
        }
        let partitions = runner.every_partition();
        // before any barrier exists: every barrier lies above these offsets, where the read
        // of the repartition topic starts
        let commits = runner.consumer.commits(&partitions)?;
        let Some(topic) = runner.topology.repartition_topic().map(str::to_string) else {
            // no channel between partitions: the commits alone are a consistent cut
            return runner.write_at(&partitions, commits, None, dir);
        };
        let cut = format!(
            "cut-{}-{}",
            crate::checkpoint::now_unix_ms(),
            std::process::id()
        );
        let control_topic = control::topic_of(&runner.pipeline.group_id);
        if !control::exists(&runner.config.kafka, &control_topic)? {
            return Err(Error::Cut(format!(
                "the running instances read no control topic ({control_topic}): they are older \
                 than online savepoints. Stop the pipeline and run savepoint create again"
            )));
        }
        runner.request(&control_topic, &cut, Phase::Begin)?;
        let taken = runner
            .read_barriers(&topic, &cut, &commits)
            .and_then(|barriers| {
                // The state is taken at the commits as they are now, while the sources still
                // wait: every thread that holds a source has heard the request (its barrier is
                // here), so it keeps the checkpoints these commits name; any commit read before
                // the release leaves in the state only records from below their barriers.
                let now = runner.consumer.commits(&partitions)?;
                let source = runner.pipeline.source.topic.clone();
                paused_at_barriers(&barriers, &now, &source)?;
                let barriers = from_commits(barriers, &commits, &now, &topic)?;
                runner.request(&control_topic, &cut, Phase::Release)?;
                runner.write_at(&partitions, now, Some(barriers), dir)
            });
        // whatever happened: the threads go on and collect garbage again
        if let Err(e) = runner.request(&control_topic, &cut, Phase::End) {
            tracing::warn!(error = %crate::pipeline::chain(&e), "could not end the cut; the threads end it after {CUT_LIMIT:?}");
        }
        // the observer's writer directory (empty: it writes no checkpoint) is no writer
        drop(std::fs::remove_dir(runner.checkpoints.store.root()));
        taken
    }

    fn request(&self, topic: &str, cut: &str, phase: Phase) -> Result<()> {
        send(&self.config.kafka, topic, cut, phase)
    }

    /// Every repartition partition from its commit up to the barriers of every source
    /// partition of `cut`.
    fn read_barriers(
        &self,
        topic: &str,
        cut: &str,
        commits: &[(Partition, GroupCommit)],
    ) -> Result<Barriers> {
        let sources = self.topology.source_partitions;
        let from: Vec<(i32, Option<NextOffset>)> = commits
            .iter()
            .filter(|(p, _)| p.topic == topic)
            .map(|(p, c)| (p.partition, c.offset))
            .collect();
        let mut seen: BTreeMap<i32, BTreeSet<i32>> = BTreeMap::new();
        let mut offsets: BTreeMap<i32, Option<NextOffset>> = BTreeMap::new();
        let mut conflict = None;
        let heard = std::cell::Cell::new(false);
        let first_within = self.config.checkpoint.interval * 3 + FIRST_BARRIER_GRACE;
        let read = reader::read_until(
            &self.config.kafka,
            topic,
            &from,
            |record| {
                let Some((id, source, offset)) = barrier_of(record) else {
                    return false;
                };
                if id != cut {
                    return false;
                }
                heard.set(true);
                // a barrier sent again (after an abort, by a partition's next owner) must
                // name the same offset: one further on means records past the first went on
                let first = *offsets.entry(source).or_insert(offset);
                if first != offset && conflict.is_none() {
                    conflict = Some((source, first, offset, record.partition));
                }
                let got = seen.entry(record.partition).or_default();
                got.insert(source);
                i32::try_from(got.len()).is_ok_and(|n| n >= sources)
            },
            || {
                if heard.get() {
                    BARRIER_TIMEOUT
                } else {
                    first_within.min(BARRIER_TIMEOUT)
                }
            },
        );
        let missing = || {
            from.iter()
                .map(|(r, _)| {
                    let got = seen.get(r);
                    let lacking: Vec<i32> = (0..sources)
                        .filter(|s| got.is_none_or(|g| !g.contains(s)))
                        .collect();
                    (r, lacking)
                })
                .filter(|(_, l)| !l.is_empty())
                .map(|(r, l)| format!("{topic}/{r} lacks the barriers of source partitions {l:?}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let records = match read {
            Ok(records) => records,
            Err(crate::kafka::Error::Timeout { after, .. }) if !heard.get() => {
                return Err(Error::Cut(format!(
                    "no instance answered within {after:?}: the group's members are stopped \
                     instances whose sessions have not expired yet (retry after \
                     session.timeout.ms), or none of them makes progress"
                )));
            }
            Err(crate::kafka::Error::Timeout { after, .. }) => {
                return Err(Error::Cut(format!(
                    "not every barrier arrived within {after:?} ({}); is every instance of the \
                     pipeline running and making progress?",
                    missing()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if let Some((source, first, other, r)) = conflict {
            return Err(Error::Cut(format!(
                "source partition {source} sent barriers at {first:?} and {other:?} (the second \
                 in {topic}/{r}); the cut is not consistent"
            )));
        }
        let in_flight = records
            .into_iter()
            .filter(|r| barrier_of(r).is_none())
            .collect();
        Ok(Barriers {
            sources: offsets,
            in_flight,
        })
    }

    /// The savepoint of every partition restored at `commits`, the source tasks at the cut's
    /// barriers when there is one.
    fn write_at(
        &mut self,
        partitions: &[Partition],
        commits: Vec<(Partition, GroupCommit)>,
        barriers: Option<Barriers>,
        dir: Option<PathBuf>,
    ) -> Result<Taken> {
        let restored = self.restore_tasks_at(partitions, commits);
        self.checkpoints.forget_downloads();
        for (p, task) in restored?.0 {
            self.tasks.insert(p, task);
        }
        let Some(barriers) = barriers else {
            return self.write_savepoint(None, dir, None);
        };
        for (p, task) in &mut self.tasks {
            if task.role == Role::Source
                && let Some(offset) = barriers.sources.get(&p.partition)
            {
                task.next_offset = *offset;
            }
        }
        self.write_savepoint(None, dir, Some(barriers.in_flight))
    }
}

/// Every source partition's commit is its barrier's offset: a barrier commits with its
/// offset, and a source that went on past it (released early: a thread's limit passed, or a
/// partition's next owner had not heard the request yet) would have records past the cut in
/// the state or in flight.
fn paused_at_barriers(
    barriers: &Barriers,
    now: &[(Partition, GroupCommit)],
    source: &str,
) -> Result<()> {
    for (p, c) in now.iter().filter(|(p, _)| p.topic == source) {
        let barrier = barriers.sources.get(&p.partition).copied().flatten();
        if barrier.is_none() || c.offset != barrier {
            return Err(Error::Cut(format!(
                "{p} is committed at {:?} but its barrier is at {barrier:?}: its records went on \
                 past the cut; try again",
                c.offset
            )));
        }
    }
    Ok(())
}

/// The in-flight records of `barriers` (read from the commits `before`) from the commits
/// `now` on: what `now`'s state already counted is not in flight.
fn from_commits(
    mut barriers: Barriers,
    before: &[(Partition, GroupCommit)],
    now: &[(Partition, GroupCommit)],
    topic: &str,
) -> Result<Barriers> {
    let offset_in = |commits: &[(Partition, GroupCommit)], r: i32| {
        commits
            .iter()
            .find(|(p, _)| p.topic == topic && p.partition == r)
            .and_then(|(_, c)| c.offset)
    };
    let mut from = BTreeMap::new();
    for (p, c) in now.iter().filter(|(p, _)| p.topic == topic) {
        let earlier = offset_in(before, p.partition);
        if let (Some(was), Some(is)) = (earlier, c.offset)
            && is < was
        {
            return Err(Error::Cut(format!(
                "the group's commit of {p} went back from {was:?} to {is:?} during the cut"
            )));
        }
        from.insert(p.partition, c.offset);
    }
    barriers.in_flight.retain(|r| {
        from.get(&r.partition)
            .copied()
            .flatten()
            .is_none_or(|o| r.offset >= o.0)
    });
    Ok(barriers)
}

fn send(kafka: &KafkaConfig, topic: &str, cut: &str, phase: Phase) -> Result<()> {
    let request = Request {
        cut: cut.to_string(),
        phase,
        created_unix_ms: crate::checkpoint::now_unix_ms(),
    };
    let bytes = serde_json::to_vec(&request)
        .map_err(|e| Error::Cut(format!("encode a control request: {e}")))?;
    Ok(control::send(kafka, topic, &bytes)?)
}

/// `savepoint create --stop`: asks every thread of every instance of the pipeline whose group
/// is `group_id` to take a final checkpoint and stop. Returns the request's id, for
/// [`end_stop`] once the savepoint is written.
pub fn request_stop(kafka: &KafkaConfig, group_id: &str) -> Result<String> {
    let id = format!(
        "stop-{}-{}",
        crate::checkpoint::now_unix_ms(),
        std::process::id()
    );
    let topic = control::topic_of(group_id);
    if control::exists(kafka, &topic)? {
        send(kafka, &topic, &id, Phase::Stop)?;
        return Ok(id);
    }
    Err(Error::Cut(format!(
        "the running instances read no control topic ({topic}): they are older than \
         savepoint create --stop. Stop them (SIGTERM) and run savepoint create"
    )))
}

/// The stop `id` is over: an instance started from now on goes on.
pub fn end_stop(kafka: &KafkaConfig, group_id: &str, id: &str) -> Result<()> {
    send(kafka, &control::topic_of(group_id), id, Phase::End)
}

/// A barrier's cut, source partition and next offset.
fn barrier_of(record: &reader::Pending) -> Option<(&str, i32, Option<NextOffset>)> {
    if !record.value.is_empty() {
        return None;
    }
    let (_, value) = record.headers.iter().find(|(k, _)| k == BARRIER_HEADER)?;
    parse_barrier(std::str::from_utf8(value).ok()?)
}

fn parse_barrier(text: &str) -> Option<(&str, i32, Option<NextOffset>)> {
    let mut parts = text.rsplitn(3, '/');
    let offset = parts.next()?;
    let source = parts.next()?.parse().ok()?;
    let id = parts.next()?;
    let offset = match offset {
        "-" => None,
        n => Some(NextOffset(n.parse().ok()?)),
    };
    Some((id, source, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barrier_names_its_cut_source_and_offset() {
        assert_eq!(
            parse_barrier("cut-17-4/3/250"),
            Some(("cut-17-4", 3, Some(NextOffset(250))))
        );
        assert_eq!(parse_barrier("cut-1/0/-"), Some(("cut-1", 0, None)));
        assert_eq!(parse_barrier("cut-1/x/3"), None);
        assert_eq!(parse_barrier("3"), None);
    }

    #[test]
    fn a_record_with_a_value_is_never_a_barrier() {
        let record = |value: &[u8]| reader::Pending {
            partition: 0,
            offset: 1,
            key: None,
            value: value.to_vec(),
            headers: vec![(BARRIER_HEADER.to_string(), b"c/1/2".to_vec())],
        };
        assert!(barrier_of(&record(b"")).is_some());
        assert!(barrier_of(&record(b"x")).is_none());
    }
}
