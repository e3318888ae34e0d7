//! Where a partition's log starts and ends, and which offset a time falls on: the consumer's
//! questions to the brokers about offsets, apart from consuming.

use std::collections::BTreeMap;

use rdkafka::consumer::Consumer as _;
use rdkafka::{Offset, TopicPartitionList};

use super::{Consumer, TIMEOUT};
use crate::kafka::{Result, client};
use crate::position::Partition;

impl Consumer {
    /// (low, high) watermark of one partition; high is the last stable offset's bound for
    /// this read_committed consumer.
    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        self.inner
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map_err(client("fetch watermarks"))
    }

    /// The first offset still in the log of each partition, asked of the brokers in one
    /// ListOffsets round (`fetch_watermarks` asks per partition, and for the last stable offset
    /// too, which can take seconds right after a producer's open transaction was aborted).
    pub fn log_starts(&self, partitions: &[Partition]) -> Result<BTreeMap<Partition, i64>> {
        self.log_offsets(partitions, Offset::Beginning)
    }

    /// The high watermark of each partition (the log end, uncommitted records included), in
    /// one ListOffsets round.
    pub fn log_ends(&self, partitions: &[Partition]) -> Result<BTreeMap<Partition, i64>> {
        self.log_offsets(partitions, Offset::End)
    }

    fn log_offsets(
        &self,
        partitions: &[Partition],
        which: Offset,
    ) -> Result<BTreeMap<Partition, i64>> {
        let (what, end) = match which {
            Offset::End => ("list log end offsets", true),
            _ => ("list log start offsets", false),
        };
        if partitions.is_empty() {
            return Ok(BTreeMap::new()); // librdkafka refuses an empty list
        }
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition_offset(&p.topic, p.partition, which)
                .map_err(client(what))?;
        }
        let got = self
            .inner
            .offsets_for_times(tpl, TIMEOUT)
            .map_err(client(what))?;
        let mut starts = BTreeMap::new();
        for e in got.elements() {
            let p = Partition {
                topic: e.topic().to_string(),
                partition: e.partition(),
            };
            e.error().map_err(client(what))?;
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                // not expected of a broker; the partition's own query answers it
                _ => {
                    let (low, high) = self.watermarks(&p.topic, p.partition)?;
                    if end { high } else { low }
                }
            };
            starts.insert(p, offset);
        }
        Ok(starts)
    }

    /// Per partition, the first offset whose timestamp is at or after `unix_ms` (`None`: no
    /// such record).
    pub fn offsets_for_time(
        &self,
        topic: &str,
        partitions: &[i32],
        unix_ms: i64,
    ) -> Result<Vec<(i32, Option<i64>)>> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition_offset(topic, *p, Offset::Offset(unix_ms))
                .map_err(client("offsets for times"))?;
        }
        let got = self
            .inner
            .offsets_for_times(tpl, TIMEOUT)
            .map_err(client("offsets for times"))?;
        Ok(got
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => (e.partition(), Some(o)),
                _ => (e.partition(), None),
            })
            .collect())
    }
}
