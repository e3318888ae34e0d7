//! Record formats: Kafka bytes ⇄ [`Payload`]. JSON, UTF-8 strings and raw bytes today; Avro
//! (the `apache-avro` crate, schemas from `schemas/`) arrives with the operators issue.

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
    #[error("cannot encode a {from} value as {to}")]
    Incompatible {
        from: &'static str,
        to: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Decodes a Kafka record value.
pub fn decode(format: Format, value: Option<&[u8]>) -> Result<Payload> {
    let bytes = value.ok_or(Error::NullValue)?;
    match format {
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
pub fn encode(format: Format, payload: &Payload) -> Result<Vec<u8>> {
    match (format, payload) {
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
        let err = decode(Format::Json, Some(b"{not json")).unwrap_err();
        assert!(matches!(err, Error::InvalidJson(_)), "{err}");
        assert_eq!(decode(Format::Json, None).unwrap_err(), Error::NullValue);
    }

    #[test]
    fn text_goes_to_json_as_a_string() {
        let out = encode(Format::Json, &Payload::Text("a\"b".into())).unwrap();
        assert_eq!(out, br#""a\"b""#);
    }

    proptest! {
        #[test]
        fn json_round_trips(n in any::<i64>(), s in ".*") {
            let v = serde_json::json!({"n": n, "s": s});
            let bytes = encode(Format::Json, &Payload::Json(v.clone())).unwrap();
            prop_assert_eq!(decode(Format::Json, Some(&bytes)).unwrap(), Payload::Json(v));
        }

        #[test]
        fn bytes_round_trip(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let p = decode(Format::Bytes, Some(&b)).unwrap();
            prop_assert_eq!(encode(Format::Bytes, &p).unwrap(), b);
        }
    }
}
