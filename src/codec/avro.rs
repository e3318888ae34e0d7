//! Avro in the Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro binary),
//! the only module that uses the `apache-avro` crate.
//!
//! Writer schemas are found by the id in each record's header in a [`Registry`] loaded from the
//! config's `[schemas]` table (id → `.avsc` file, usually under `schemas/`); the source's reader
//! schema is one of them, and Avro's resolution rules turn each writer's data into it (fields
//! added with defaults, removed fields skipped, promotions). With `[schema_registry]`, a writer
//! id that `[schemas]` lacks is fetched from the registry ([`super::remote`]) once and kept, and
//! each Avro sink's schema is registered under its subject at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use apache_avro::types::Value;

use super::Error;
use super::remote::{Remote, RemoteError};

const MAGIC: u8 = 0;

/// Parsed schemas by id: the local ones of `[schemas]`, and those fetched from the registry.
#[derive(Debug, Default)]
pub struct Registry {
    /// `[schemas]`: file, parsed schema, and its text (what is registered).
    schemas: BTreeMap<u32, (PathBuf, Arc<Schema>, String)>,
    remote: Option<Remote>,
    fetched: RwLock<BTreeMap<u32, Arc<Schema>>>,
}

impl Registry {
    /// Reads and parses one schema file; the error names the file.
    pub fn add(&mut self, id: u32, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let schema = Schema::parse_str(&text)
            .map_err(|e| format!("{} is not a valid Avro schema: {e}", path.display()))?;
        self.schemas
            .insert(id, (path.to_path_buf(), Arc::new(schema), text));
        Ok(())
    }

    /// The schemas of `sources`: each file read and parsed, and the registry's client (no
    /// request is made here). The error names the file.
    pub fn load(sources: &crate::config::SchemaSources) -> Result<Self, String> {
        let mut registry = Self::default();
        for (id, path) in &sources.files {
            registry.add(*id, path)?;
        }
        if let Some(c) = &sources.registry {
            registry.set_remote(Remote::new(&c.url, c.timeout, &c.cache_dir, c.auth.clone()));
        }
        Ok(registry)
    }

    /// Writer ids missing from `[schemas]` are then fetched from this registry.
    pub fn set_remote(&mut self, remote: Remote) {
        self.remote = Some(remote);
    }

    pub fn contains(&self, id: u32) -> bool {
        self.schemas.contains_key(&id)
    }

    /// Registers the local schema `id` under `subject` in the schema registry, if one is
    /// configured; it must come back with the same id, or the sink's records would be framed
    /// with an id that means another schema to their readers.
    pub fn register(&self, subject: &str, id: u32) -> Result<(), Error> {
        let (Some(remote), Some((path, _, text))) = (&self.remote, self.schemas.get(&id)) else {
            return Ok(());
        };
        match remote.register(subject, text) {
            Ok(got) if got == id => Ok(()),
            Ok(got) => Err(Error::Avro(format!(
                "the registry at {} has {} as schema id {got} under subject {subject:?}, \
                 not {id}: list it as schemas.{got} and use schema_id = {got}",
                remote.url(),
                path.display()
            ))),
            Err(RemoteError::Unavailable(m)) => Err(Error::Registry(m)),
            Err(e) => Err(Error::Avro(format!(
                "registering {} under subject {subject:?}: {e}",
                path.display()
            ))),
        }
    }

    fn schema(&self, id: u32) -> Result<Arc<Schema>, Error> {
        if let Some((_, s, _)) = self.schemas.get(&id) {
            return Ok(s.clone());
        }
        let Some(remote) = &self.remote else {
            return Err(Error::Avro(format!(
                "unknown schema id {id} (not in [schemas])"
            )));
        };
        let cached = self
            .fetched
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned();
        if let Some(s) = cached {
            return Ok(s);
        }
        let fetch = || {
            remote.schema(id).map_err(|e| match e {
                RemoteError::Unavailable(m) => Error::Registry(m),
                other => Error::Avro(other.to_string()),
            })
        };
        let (mut text, mut cached) = fetch()?;
        if cached && Schema::parse_str(&text).is_err() {
            // a damaged cache file: drop it and ask the registry once
            remote.forget(id);
            (text, cached) = fetch()?;
        }
        // a schema the registry serves but apache-avro cannot parse (references, say) fails
        // each record of that id: the records follow the error policy, the pipeline goes on
        let schema = Schema::parse_str(&text).map_err(|e| {
            Error::Avro(format!(
                "schema id {id} from {}{} does not parse as an Avro schema: {e}",
                remote.url(),
                if cached { " (cached)" } else { "" }
            ))
        })?;
        let schema = Arc::new(schema);
        self.fetched
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, schema.clone());
        Ok(schema)
    }

    /// Decodes one framed record into JSON, resolved to the reader schema `reader`.
    pub fn decode(&self, reader: u32, bytes: &[u8]) -> Result<serde_json::Value, Error> {
        let (&magic, rest) = bytes
            .split_first()
            .ok_or_else(|| Error::Avro("empty value".into()))?;
        if magic != MAGIC {
            return Err(Error::Avro(format!(
                "wrong magic byte 0x{magic:02x}: not the Confluent wire format"
            )));
        }
        let (id, mut datum) = rest
            .split_at_checked(4)
            .ok_or_else(|| Error::Avro("truncated header".into()))?;
        let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        let writer = self.schema(id)?;
        let reader_schema = self.schema(reader)?;
        let whole = datum;
        let value = apache_avro::reader::datum::GenericDatumReader::builder(&writer)
            .reader_schema(&reader_schema)
            .build()
            .and_then(|r| r.read_value(&mut datum))
            .map_err(|e| {
                let place = field_unreadable(&writer, whole).unwrap_or_default();
                Error::Avro(format!("schema id {id}: {place}{e}"))
            })?;
        if !datum.is_empty() {
            return Err(Error::Avro(format!(
                "schema id {id}: {} bytes after the record",
                datum.len()
            )));
        }
        serde_json::Value::try_from(value).map_err(|e| Error::Avro(e.to_string()))
    }

    /// Encodes JSON as a framed record of schema `id`.
    pub fn encode(&self, id: u32, json: &serde_json::Value) -> Result<Vec<u8>, Error> {
        let schema = self.schema(id)?;
        let value = Value::try_from(json.clone())
            .and_then(|v| v.resolve(&schema))
            .map_err(|e| {
                let why = field_unfit(&schema, json).unwrap_or_else(|| e.to_string());
                Error::Avro(format!("does not fit schema id {id}: {why}"))
            })?;
        let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .map_err(|e| Error::Avro(e.to_string()))?;
        let mut out = Vec::with_capacity(5 + datum.len());
        out.push(MAGIC);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&datum);
        Ok(out)
    }
}

/// Which field of a record's binary `datum` (written with `writer`) cannot be read: the
/// fields are read one by one, so the error can name the first that fails (`field "x": `).
fn field_unreadable(writer: &Schema, mut datum: &[u8]) -> Option<String> {
    let Schema::Record(record) = writer else {
        return None;
    };
    for field in &record.fields {
        let read = apache_avro::reader::datum::GenericDatumReader::builder(&field.schema)
            .writer_schemata(vec![writer])
            .and_then(|b| b.build())
            .and_then(|r| r.read_value(&mut datum));
        if read.is_err() {
            return Some(format!("field {:?}: ", field.name));
        }
    }
    None
}

/// Why `json` does not fit the record schema `schema`, naming the first field at fault.
fn field_unfit(schema: &Schema, json: &serde_json::Value) -> Option<String> {
    let (Schema::Record(record), serde_json::Value::Object(object)) = (schema, json) else {
        return None;
    };
    record
        .fields
        .iter()
        .find_map(|field| match object.get(&field.name) {
            None if field.default.is_none() => Some(format!(
                "field {:?} is missing and has no default",
                field.name
            )),
            None => None,
            Some(v) => Value::try_from(v.clone())
                .and_then(|v| v.resolve_schemata(&field.schema, vec![schema]))
                .err()
                .map(|e| format!("field {:?}: {e}", field.name)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const V1: &str = r#"{"type":"record","name":"Purchase","fields":[
        {"name":"user","type":"string"},{"name":"amount","type":"long"}]}"#;
    const V2: &str = r#"{"type":"record","name":"Purchase","fields":[
        {"name":"user","type":"string"},{"name":"amount","type":"long"},
        {"name":"country","type":"string","default":"NL"}]}"#;

    fn registry() -> Registry {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = Registry::default();
        for (id, text) in [(1, V1), (2, V2)] {
            let p = tmp.path().join(format!("v{id}.avsc"));
            std::fs::write(&p, text).unwrap();
            r.add(id, &p).unwrap();
        }
        r
    }

    #[test]
    fn records_of_an_old_writer_schema_read_with_the_new_reader_schema() {
        let r = registry();
        let old = r.encode(1, &json!({"user": "ann", "amount": 5})).unwrap();
        assert_eq!(&old[..5], &[0, 0, 0, 0, 1]);
        assert_eq!(
            r.decode(2, &old).unwrap(),
            json!({"user": "ann", "amount": 5, "country": "NL"})
        );
        let new = r
            .encode(2, &json!({"user": "bob", "amount": 7, "country": "BE"}))
            .unwrap();
        assert_eq!(r.decode(2, &new).unwrap()["country"], "BE");
        // and the new writer read with the old reader: the added field is skipped
        assert_eq!(
            r.decode(1, &new).unwrap(),
            json!({"user": "bob", "amount": 7})
        );
    }

    #[test]
    fn every_schema_in_the_schemas_directory_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let mut r = Registry::default();
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "avsc") {
                r.add(n, &path).unwrap();
                n += 1;
            }
        }
        assert!(n >= 3, "schemas/ holds {n} .avsc files");
    }

    #[test]
    fn bad_frames_and_bad_values_are_errors_that_say_why() {
        let r = registry();
        let err = |b: &[u8]| r.decode(2, b).unwrap_err().to_string();
        assert!(err(b"{\"json\":1}").contains("wrong magic byte 0x7b"));
        assert!(err(&[0, 0, 0]).contains("truncated header"));
        assert!(err(&[0, 0, 0, 0, 9, 2]).contains("unknown schema id 9"));
        let good = r.encode(1, &json!({"user": "ann", "amount": 5})).unwrap();
        assert!(err(&good[..good.len() - 1]).contains("schema id 1"));
        let e = r
            .encode(1, &json!({"user": "ann", "amount": "lots"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit schema id 1"), "{e}");
        assert!(e.contains("field \"amount\""), "the field is named: {e}");
        let e = r
            .encode(2, &json!({"user": "ann"}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("field \"amount\" is missing and has no default"),
            "{e}"
        );
        // a truncated record names the field it ends in
        let e = err(&good[..good.len() - 1]);
        assert!(e.contains("field \"amount\""), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("bad.avsc");
        std::fs::write(&p, "{\"type\": \"nope\"}").unwrap();
        let e = Registry::default().add(3, &p).unwrap_err();
        assert!(
            e.contains("bad.avsc") && e.contains("not a valid Avro schema"),
            "{e}"
        );
    }
}
