//! Stream-table join (enrichment), free of I/O. The table is a topic read into the keyed state
//! of the stateful task with the same partition (the topics must be co-partitioned, as in Kafka
//! Streams): `0 ‖ key → value` per row, and `1 → next offset` of the task's table partition,
//! so a snapshot holds the table exactly as far as it was read.

use serde_json::Value;

use super::operator::{Record, RecordError};
use crate::codec::Payload;
use crate::pipeline::state_keys::KeyTag;

const TAG_ROW: u8 = KeyTag::TableRow.byte();
const TAG_OFFSET: u8 = KeyTag::TableOffset.byte();

pub fn row_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(TAG_ROW);
    out.extend_from_slice(key);
    out
}

/// Where the next offset of the task's table partition is kept.
pub fn offset_key() -> Vec<u8> {
    vec![TAG_OFFSET]
}

pub fn decode_offset(v: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(v).ok().map(i64::from_be_bytes)
}

/// The stored form of a table record's value, decoded by `decode` (JSON, or Avro resolved to
/// the join's reader schema): its JSON text. `None`: a tombstone.
pub fn table_value(
    value: Option<&[u8]>,
    decode: impl Fn(&[u8]) -> Result<Value, String>,
) -> Result<Option<Vec<u8>>, String> {
    match value {
        None => Ok(None),
        Some(v) => {
            let v = decode(v)?;
            serde_json::to_vec(&v).map(Some).map_err(|e| e.to_string())
        }
    }
}

/// The record with the row's value as field `into` (null without a row); `None` when an inner
/// join finds no row.
pub fn enrich(
    mut record: Record,
    into: &str,
    row: Option<&[u8]>,
    inner: bool,
) -> Result<Option<Record>, RecordError> {
    let fail = |message: String| RecordError {
        step: "join",
        message,
        index: None,
    };
    let value = match row {
        None if inner => return Ok(None),
        None => Value::Null,
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| fail(format!("stored table row is corrupt: {e}")))?,
    };
    let Payload::Json(Value::Object(map)) = &mut record.value else {
        return Err(fail("expected a JSON object to join into".into()));
    };
    map.insert(into.to_string(), value);
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec() -> Record {
        Record {
            key: Some(b"u1".to_vec()),
            value: Payload::Json(json!({"user": "u1", "n": 1})),
        }
    }

    #[test]
    fn left_and_inner_joins() {
        let row = br#"{"tier":"gold"}"#;
        let out = enrich(rec(), "profile", Some(row), true).unwrap().unwrap();
        assert_eq!(
            out.value,
            Payload::Json(json!({"user": "u1", "n": 1, "profile": {"tier": "gold"}}))
        );
        let out = enrich(rec(), "profile", None, false).unwrap().unwrap();
        assert_eq!(
            out.value,
            Payload::Json(json!({"user": "u1", "n": 1, "profile": null}))
        );
        assert_eq!(enrich(rec(), "profile", None, true).unwrap(), None);
    }

    #[test]
    fn table_values_are_checked_and_tombstones_delete() {
        let json = |b: &[u8]| serde_json::from_slice::<Value>(b).map_err(|e| e.to_string());
        assert_eq!(table_value(None, json), Ok(None));
        assert!(table_value(Some(b"{oops"), json).is_err());
        assert_eq!(
            table_value(Some(br#"{ "a": 1 }"#), json),
            Ok(Some(br#"{"a":1}"#.to_vec()))
        );
        assert!(row_key(b"") < offset_key());
    }
}
