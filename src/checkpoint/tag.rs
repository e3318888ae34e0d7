//! The commit tag: what a checkpoint's Kafka commit says of the checkpoint it belongs to.
//!
//! Every partition's offset in checkpoint N's `send_offsets_to_transaction` carries the same
//! offset-commit metadata, `flumen:1:<N>:<pipeline>:<writer>`, so the group's committed offsets
//! name the checkpoint whose state they go with, and a restore takes exactly that checkpoint
//! (the offsets only check it). A checkpoint that moved no offset (a timer fired, an idle join
//! released its buffer) still commits every partition's offset again, under its own name.
//!
//! The text is ASCII: a name's bytes outside `[A-Za-z0-9._-]` are written `%XX` (rdkafka panics
//! reading metadata that is not UTF-8, and other tools print it). A commit whose metadata is not
//! a tag (written before tags existed, or by `kafka-consumer-groups`) names nothing: such a
//! partition is restored from the snapshot whose offset equals the committed one.

use super::CheckpointId;

const PREFIX: &str = "flumen:1:";

/// The checkpoint a commit belongs to, and who wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitTag {
    pub checkpoint: CheckpointId,
    pub pipeline: String,
    /// The transactional id that committed it.
    pub writer: String,
}

impl CommitTag {
    pub fn new(checkpoint: CheckpointId, pipeline: &str, writer: &str) -> Self {
        Self {
            checkpoint,
            pipeline: pipeline.to_string(),
            writer: writer.to_string(),
        }
    }

    /// The offset-commit metadata, ASCII only.
    pub fn encode(&self) -> String {
        let mut out = format!("{PREFIX}{}:", self.checkpoint.0);
        escape(&self.pipeline, &mut out);
        out.push(':');
        escape(&self.writer, &mut out);
        out
    }

    /// The tag in a commit's metadata; `None` for metadata that is not a tag.
    pub fn parse(metadata: &str) -> Option<Self> {
        let rest = metadata.strip_prefix(PREFIX)?;
        let mut parts = rest.split(':');
        let checkpoint = parts.next()?.parse::<u64>().ok()?;
        let pipeline = unescape(parts.next()?)?;
        let writer = unescape(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            checkpoint: CheckpointId(checkpoint),
            pipeline,
            writer,
        })
    }
}

/// `name` with every byte outside `[A-Za-z0-9._-]` written `%XX`: a file name part, ASCII.
pub fn file_safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    escape(name, &mut out);
    out
}

/// The name [`file_safe`] wrote; `None` for text it cannot have written.
pub fn from_file_safe(text: &str) -> Option<String> {
    unescape(text)
}

fn escape(name: &str, out: &mut String) {
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push_str(&format!("{b:02X}"));
        }
    }
}

fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_tag_reads_back_and_is_plain_ascii() {
        let tag = CommitTag::new(CheckpointId(42), "Zählung:eu", "flumen-counts-0");
        let text = tag.encode();
        assert_eq!(text, "flumen:1:42:Z%C3%A4hlung%3Aeu:flumen-counts-0");
        assert!(text.is_ascii());
        assert_eq!(CommitTag::parse(&text), Some(tag));
    }

    #[test]
    fn metadata_of_others_names_nothing() {
        for other in [
            "",
            "flumen:1:",
            "flumen:1:x:p:w",
            "flumen:2:3:p:w",
            "flumen:1:3:p",
            "flumen:1:3:p:w:extra",
            "flumen:1:3:%zz:w",
        ] {
            assert_eq!(CommitTag::parse(other), None, "{other:?}");
        }
    }

    proptest! {
        #[test]
        fn every_tag_round_trips(id in 0u64.., pipeline in ".*", writer in ".*") {
            let tag = CommitTag::new(CheckpointId(id), &pipeline, &writer);
            let text = tag.encode();
            prop_assert!(text.is_ascii());
            prop_assert_eq!(CommitTag::parse(&text), Some(tag));
        }
    }
}
