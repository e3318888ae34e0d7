//! The first byte of every state key inside an operator's namespace (`state::namespaced`), for
//! every operator kind: one enum names them all. The bytes are on disk, in checkpoints and
//! savepoints: never renumber one. Some bytes serve two kinds (0 and 1): an operator's
//! namespace holds the keys of its one kind only, and [`KINDS`] lists which tags each kind
//! uses, checked distinct by the test below.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTag {
    /// `end ‖ key` → a window's accumulator (tumbling, hopping, session): `pipeline/window.rs`.
    Window,
    /// `key` → a key's value (dedupe's expiry, a TTL aggregate's, a custom operator's state):
    /// `pipeline/timers.rs`.
    Value,
    /// `time ‖ key` → (), a processing-time timer (or a stream join entry's cleanup).
    Timer,
    /// `time ‖ key` → (), a custom operator's event-time timer.
    EventTimer,
    /// `key ‖ start` → end, a session's index entry: `pipeline/window/session.rs`.
    SessionIndex,
    /// A stream join's buffered record of this stream, and of the other:
    /// `pipeline/stream_join.rs`.
    ThisEntry,
    OtherEntry,
    /// `entry` → (), the entry found a partner (left and outer joins).
    Matched,
    /// → the highest event time seen of the other stream.
    OtherMax,
    /// A timed task's watermark per input, and its own: `pipeline/window.rs`.
    InputWatermark,
    TaskWatermark,
    /// `key` → a table row, and → the next offset of the table's partition: `pipeline/table_join.rs`.
    TableRow,
    TableOffset,
}

impl KeyTag {
    pub const fn byte(self) -> u8 {
        match self {
            Self::Window | Self::Value | Self::TableRow => 0,
            Self::Timer | Self::TableOffset => 1,
            Self::EventTimer => 2,
            Self::SessionIndex => 3,
            Self::ThisEntry => 4,
            Self::OtherEntry => 5,
            Self::Matched => 6,
            Self::OtherMax => 7,
            Self::InputWatermark => 8,
            Self::TaskWatermark => 9,
        }
    }
}

/// The tags each operator kind's namespace holds.
pub const KINDS: &[(&str, &[KeyTag])] = &[
    // a running aggregate's keys carry no tag: it is never timed, and holds nothing else
    ("aggregate", &[]),
    (
        "ttl aggregate",
        &[
            KeyTag::Value,
            KeyTag::Timer,
            KeyTag::InputWatermark,
            KeyTag::TaskWatermark,
        ],
    ),
    (
        "window",
        &[
            KeyTag::Window,
            KeyTag::InputWatermark,
            KeyTag::TaskWatermark,
        ],
    ),
    (
        "session",
        &[
            KeyTag::Window,
            KeyTag::SessionIndex,
            KeyTag::InputWatermark,
            KeyTag::TaskWatermark,
        ],
    ),
    (
        "dedupe",
        &[
            KeyTag::Value,
            KeyTag::Timer,
            KeyTag::InputWatermark,
            KeyTag::TaskWatermark,
        ],
    ),
    ("table join", &[KeyTag::TableRow, KeyTag::TableOffset]),
    (
        "stream join",
        &[
            KeyTag::ThisEntry,
            KeyTag::OtherEntry,
            KeyTag::Timer,
            KeyTag::Matched,
            KeyTag::OtherMax,
            KeyTag::InputWatermark,
            KeyTag::TaskWatermark,
        ],
    ),
    (
        "custom",
        &[
            KeyTag::Value,
            KeyTag::Timer,
            KeyTag::EventTimer,
            KeyTag::InputWatermark,
            KeyTag::TaskWatermark,
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_a_kind_every_tag_has_its_own_byte() {
        for (kind, tags) in KINDS {
            let mut bytes: Vec<u8> = tags.iter().map(|t| t.byte()).collect();
            bytes.sort_unstable();
            bytes.dedup();
            assert_eq!(bytes.len(), tags.len(), "{kind} reuses a byte: {tags:?}");
        }
    }
}
