//! Record formats: Kafka bytes ⇄ [`Payload`]: JSON, UTF-8 strings, raw bytes, and Avro in the
//! Confluent wire format ([`avro`], schemas from `schemas/` and a schema registry ([`remote`]),
//! decoded to and encoded from JSON).

pub mod avro;
pub mod remote;

use crate::config::Format;

/// A record value between decoding and encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(serde_json::Value),
    Text(String),
    Bytes(Vec<u8>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("record has no value (a tombstone)")]
    NullValue,
    #[error("value is not valid UTF-8 at byte {0}")]
    InvalidUtf8(usize),
    #[error("value is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("avro: {0}")]
    Avro(String),
    /// The schema registry could not be reached: not the record's fault, so no error policy
    /// applies; the pipeline restarts and tries again.
    #[error("{0}")]
    Registry(String),
    #[error("cannot encode a {from} value as {to}")]
    Incompatible {
        from: &'static str,
        to: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Decodes a Kafka record value (`schemas`: the Avro schemas by id).
pub fn decode(format: Format, value: Option<&[u8]>, schemas: &avro::Registry) -> Result<Payload> {
    let bytes = value.ok_or(Error::NullValue)?;
    match format {
        Format::Avro { schema_id } => schemas.decode(schema_id, bytes).map(Payload::Json),
        Format::Bytes => Ok(Payload::Bytes(bytes.to_vec())),
        Format::String => std::str::from_utf8(bytes)
            .map(|s| Payload::Text(s.to_string()))
            .map_err(|e| Error::InvalidUtf8(e.valid_up_to())),
        Format::Json => serde_json::from_slice(bytes)
            .map(Payload::Json)
            .map_err(|e| Error::InvalidJson(e.to_string())),
    }
}

/// Encodes a payload for a sink of `format`.
pub fn encode(format: Format, payload: &Payload, schemas: &avro::Registry) -> Result<Vec<u8>> {
    match (format, payload) {
        (Format::Avro { schema_id }, Payload::Json(v)) => schemas.encode(schema_id, v),
        (Format::Avro { .. }, Payload::Text(s)) => Err(Error::Avro(format!(
            "a text value ({} bytes) is not a record",
            s.len()
        ))),
        (Format::Avro { .. }, Payload::Bytes(_)) => Err(Error::Incompatible {
            from: "bytes",
            to: "avro",
        }),
        (Format::Json, Payload::Json(v)) => {
            serde_json::to_vec(v).map_err(|e| Error::InvalidJson(e.to_string()))
        }
        (Format::Json, Payload::Text(s)) => {
            serde_json::to_vec(s).map_err(|e| Error::InvalidJson(e.to_string()))
        }
        (Format::String, Payload::Json(serde_json::Value::String(s))) => Ok(s.as_bytes().to_vec()),
        (Format::String | Format::Bytes, Payload::Json(v)) => {
            serde_json::to_vec(v).map_err(|e| Error::InvalidJson(e.to_string()))
        }
        (Format::String | Format::Bytes, Payload::Text(s)) => Ok(s.as_bytes().to_vec()),
        (Format::Bytes, Payload::Bytes(b)) => Ok(b.clone()),
        (Format::Json, Payload::Bytes(_)) => Err(Error::Incompatible {
            from: "bytes",
            to: "json",
        }),
        (Format::String, Payload::Bytes(b)) => std::str::from_utf8(b)
            .map(|s| s.as_bytes().to_vec())
            .map_err(|e| Error::InvalidUtf8(e.valid_up_to())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn invalid_json_is_an_error_not_a_panic() {
        let err = decode(Format::Json, Some(b"{not json"), &avro::Registry::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidJson(_)), "{err}");
        assert_eq!(
            decode(Format::Json, None, &avro::Registry::default()).unwrap_err(),
            Error::NullValue
        );
    }

    #[test]
    fn text_goes_to_json_as_a_string() {
        let out = encode(
            Format::Json,
            &Payload::Text("a\"b".into()),
            &avro::Registry::default(),
        )
        .unwrap();
        assert_eq!(out, br#""a\"b""#);
    }

    proptest! {
        #[test]
        fn json_round_trips(n in any::<i64>(), s in ".*") {
            let v = serde_json::json!({"n": n, "s": s});
            let bytes = encode(Format::Json, &Payload::Json(v.clone()), &avro::Registry::default()).unwrap();
            prop_assert_eq!(decode(Format::Json, Some(&bytes), &avro::Registry::default()).unwrap(), Payload::Json(v));
        }

        #[test]
        fn bytes_round_trip(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let p = decode(Format::Bytes, Some(&b), &avro::Registry::default()).unwrap();
            prop_assert_eq!(encode(Format::Bytes, &p, &avro::Registry::default()).unwrap(), b);
        }
    }
}
