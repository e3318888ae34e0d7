//! The bytes of a `manifest.json` (a checkpoint's, format 3 on; a savepoint's, format 3 on):
//! pretty JSON whose last field is the CRC32C of the file's bytes before that field.
//!
//! A manifest holds the offsets a restore seeks to and every data file's CRC32C, so a damaged
//! manifest that still parses (a flipped digit in an offset, a length or a checksum) would be
//! trusted. Its own checksum makes every change to it visible at read, as the data files'
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
//! before it, then `\n}`. Older formats were written without it and are still read; whether a
//! format has one is the caller's to say ([`decode`] returns whether the file had one).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first checkpoint manifest format with its own checksum.
pub const SEALED_FROM: u32 = 3;

/// What precedes the checksum: the end of the previous field, and the field's name.
const FIELD: &str = ",\n  \"manifest_crc32c\": ";
const END: &str = "\n}\n";

/// The file's bytes of `manifest`: pretty JSON, ending in its checksum when `sealed`.
pub fn encode<T: Serialize>(manifest: &T, sealed: bool) -> Result<Vec<u8>, String> {
    let body = serde_json::to_string_pretty(manifest).map_err(|e| e.to_string())?;
    if !sealed {
        return Ok(body.into_bytes());
    }
    let crc = crc32c::crc32c(body.as_bytes());
    let open = body
        .strip_suffix("\n}")
        .ok_or_else(|| "the manifest's JSON does not end its object on a line".to_string())?;
    Ok(format!("{open}{FIELD}{crc}{END}").into_bytes())
}

/// The manifest in a file's bytes, and whether the file carried its checksum (which is then
/// checked); an error says what is wrong with the bytes (the caller names the file).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, bool), String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let Some(at) = text.rfind(FIELD) else {
        let manifest = serde_json::from_str(text).map_err(|e| e.to_string())?;
        return Ok((manifest, false));
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
    let manifest = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok((manifest, true))
}

/// Refuses a manifest whose format and checksum disagree: a format from `sealed_from` on has
/// one, an older one has none (a damaged format number shows here).
pub fn check_format(version: u32, sealed_from: u32, sealed: bool) -> Result<(), String> {
    match (version >= sealed_from, sealed) {
        (true, false) => Err(format!(
            "format {version} has its own checksum, and this manifest has none"
        )),
        (false, true) => Err(format!(
            "format {version} has no checksum of its own, and this manifest has one"
        )),
        _ => Ok(()),
    }
}

/// A checkpoint manifest's file bytes (sealed from format [`SEALED_FROM`]).
pub fn encode_manifest(manifest: &super::Manifest) -> Result<Vec<u8>, String> {
    encode(manifest, manifest.format_version >= SEALED_FROM)
}

/// A checkpoint manifest from its file's bytes, its checksum checked.
pub fn decode_manifest(bytes: &[u8]) -> Result<super::Manifest, String> {
    let (manifest, sealed): (super::Manifest, bool) = decode(bytes)?;
    check_format(manifest.format_version, SEALED_FROM, sealed)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{CheckpointId, FileSum, Manifest, TaskSnapshot};
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
        let bytes = encode_manifest(&m).unwrap();
        assert_eq!(decode_manifest(&bytes).unwrap(), m);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(json["manifest_crc32c"].is_u64(), "{json}");
    }

    /// Every single-bit flip anywhere in the file is refused: none yields a manifest.
    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = encode_manifest(&manifest()).unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                assert!(
                    decode_manifest(&damaged).is_err(),
                    "byte {i} bit {bit} undetected: {}",
                    String::from_utf8_lossy(&damaged)
                );
            }
        }
    }

    #[test]
    fn truncation_and_a_removed_checksum_are_detected() {
        let bytes = encode_manifest(&manifest()).unwrap();
        for len in 0..bytes.len() {
            assert!(decode_manifest(&bytes[..len]).is_err(), "cut at {len}");
        }
        let text = String::from_utf8(bytes).unwrap();
        let at = text.rfind(FIELD).unwrap();
        let stripped = format!("{}\n}}\n", &text[..at]);
        assert!(
            decode_manifest(stripped.as_bytes())
                .unwrap_err()
                .contains("has none")
        );
    }

    #[test]
    fn unsealed_older_formats_are_still_read() {
        let mut m = manifest();
        m.format_version = 2;
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        assert_eq!(decode_manifest(&bytes).unwrap(), m);
        assert_eq!(encode_manifest(&m).unwrap(), bytes);
    }
}
