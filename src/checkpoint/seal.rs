//! The bytes of a `manifest.json`: the manifest as pretty JSON whose last field is the CRC32C
//! of the file's bytes before that field (format 3 on).
//!
//! The manifest holds the offsets a restore seeks to and every task file's CRC32C, so a damaged
//! manifest that still parses (a flipped digit in an offset, a length or a checksum) would be
//! trusted. Its own checksum makes every change to it visible at read, as the task files'
//! damage is by theirs. The field goes last so the file stays plain JSON (`jq` reads it):
//!
//! ```text
//! {
//!   "format_version": 3,
//!   ...
//!   "tasks": [ ... ],
//!   "manifest_crc32c": 1234567
//! }
//! ```
//!
//! The checksum covers the same text with the field taken out: the bytes up to the comma
//! before it, then `\n}`. Formats 1 and 2 were written without it and are still read.

use super::Manifest;

/// The first manifest format with its own checksum.
pub const SEALED_FROM: u32 = 3;

/// What precedes the checksum: the end of the previous field, and the field's name.
const FIELD: &str = ",\n  \"manifest_crc32c\": ";
const END: &str = "\n}\n";

/// The file's bytes of `manifest` (sealed when its format has a checksum).
pub fn encode(manifest: &Manifest) -> Result<Vec<u8>, String> {
    let body = serde_json::to_string_pretty(manifest).map_err(|e| e.to_string())?;
    if manifest.format_version < SEALED_FROM {
        return Ok(body.into_bytes());
    }
    let crc = crc32c::crc32c(body.as_bytes());
    let open = body
        .strip_suffix("\n}")
        .ok_or_else(|| "the manifest's JSON does not end its object on a line".to_string())?;
    Ok(format!("{open}{FIELD}{crc}{END}").into_bytes())
}

/// The manifest in a file's bytes; an error says what is wrong with them (the caller names the
/// file).
pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let Some(at) = text.rfind(FIELD) else {
        let manifest: Manifest = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if manifest.format_version >= SEALED_FROM {
            return Err(format!(
                "format {} has its own checksum, and this manifest has none",
                manifest.format_version
            ));
        }
        return Ok(manifest);
    };
    let written = &text[at + FIELD.len()..];
    let digits = written
        .strip_suffix(END)
        .ok_or_else(|| "the manifest's checksum field is damaged".to_string())?;
    let crc: u32 = digits
        .parse()
        .ok()
        .filter(|c: &u32| c.to_string() == digits)
        .ok_or_else(|| format!("the manifest's checksum {digits:?} is not a number"))?;
    let body = format!("{}\n}}", &text[..at]);
    let actual = crc32c::crc32c(body.as_bytes());
    if actual != crc {
        return Err(format!(
            "crc32c of the manifest {actual:08x}, its checksum field says {crc:08x}"
        ));
    }
    let manifest: Manifest = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    if manifest.format_version < SEALED_FROM {
        return Err(format!(
            "format {} has no checksum of its own, and this manifest has one",
            manifest.format_version
        ));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{CheckpointId, FileSum, TaskSnapshot};
    use crate::position::{NextOffset, Partition};

    fn manifest() -> Manifest {
        let p = Partition {
            topic: "in".into(),
            partition: 0,
        };
        let mut m = Manifest::new(
            CheckpointId(7),
            "p",
            "w",
            &[(p, NextOffset(1234))],
            vec![TaskSnapshot {
                topic: "in".into(),
                partition: 0,
                next_offset: Some(NextOffset(1234)),
                dir: "in-0".into(),
                files: vec![FileSum {
                    name: "000012.sst".into(),
                    len: 1877,
                    crc32c: 2_284_610_179,
                }],
            }],
        );
        m.restored_from = Some("abc".into());
        m
    }

    #[test]
    fn a_sealed_manifest_reads_back_and_is_plain_json() {
        let m = manifest();
        let bytes = encode(&m).unwrap();
        assert_eq!(decode(&bytes).unwrap(), m);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(json["manifest_crc32c"].is_u64(), "{json}");
    }

    /// Every single-bit flip anywhere in the file is refused: none yields a manifest.
    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = encode(&manifest()).unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                assert!(
                    decode(&damaged).is_err(),
                    "byte {i} bit {bit} undetected: {}",
                    String::from_utf8_lossy(&damaged)
                );
            }
        }
    }

    #[test]
    fn truncation_and_a_removed_checksum_are_detected() {
        let bytes = encode(&manifest()).unwrap();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        let text = String::from_utf8(bytes).unwrap();
        let at = text.rfind(FIELD).unwrap();
        let stripped = format!("{}\n}}\n", &text[..at]);
        assert!(
            decode(stripped.as_bytes())
                .unwrap_err()
                .contains("has none")
        );
    }

    #[test]
    fn unsealed_older_formats_are_still_read() {
        let mut m = manifest();
        m.format_version = 2;
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        assert_eq!(decode(&bytes).unwrap(), m);
        assert_eq!(encode(&m).unwrap(), bytes);
    }
}
