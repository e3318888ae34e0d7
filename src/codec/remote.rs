//! The client of a Confluent-compatible schema registry (`[schema_registry] url`): writer
//! schemas by id (`GET /schemas/ids/{id}`) and sink schemas registered under their subject
//! (`POST /subjects/{subject}/versions`), with a local cache on disk.
//!
//! A schema id names one schema forever, so a fetched schema is cached for good: in memory by
//! [`super::avro::Registry`], and here as `{cache_dir}/{registry}/{id}.avsc`, so a restarted
//! daemon decodes the ids it has seen even while the registry is down. Only an id the cache
//! lacks needs the registry. Calls block: they run on the pipeline's own thread, never on the
//! async runtime.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ureq::tls::{RootCerts, TlsConfig, TlsProvider};

/// Attempts per call before the registry counts as unavailable (the pipeline then restarts
/// with its backoff, and tries again).
const ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_millis(300);
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// How a registry call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The registry answered: it has no such schema (a bad record, not an outage).
    #[error("{0}")]
    NotFound(String),
    /// The registry refused a schema (incompatible, invalid) or answered something unreadable.
    #[error("{0}")]
    Rejected(String),
    /// No answer, or a server error: try again later.
    #[error("{0}")]
    Unavailable(String),
}

/// A registry endpoint with its disk cache.
pub struct Remote {
    base: String,
    cache: PathBuf,
    agent: ureq::Agent,
    /// `Authorization` header value (HTTP basic), if the registry needs one.
    authorization: Option<String>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("base", &self.base)
            .field("cache", &self.cache)
            .field("authenticated", &self.authorization.is_some())
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// `url` as configured (`http://…` or `https://…`, system CA roots for TLS); `timeout` per
    /// request; the cache goes in a directory of `cache_dir` named after the registry; `auth`:
    /// HTTP basic user and password.
    pub fn new(
        url: &str,
        timeout: Duration,
        cache_dir: &Path,
        auth: Option<(String, String)>,
    ) -> Self {
        use base64::Engine as _;
        let base = url.trim_end_matches('/').to_string();
        let name: String = base
            .split_once("://")
            .map_or(base.as_str(), |(_, rest)| rest)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let tls = TlsConfig::builder()
            .provider(TlsProvider::NativeTls)
            .root_certs(RootCerts::PlatformVerifier)
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .into();
        let authorization = auth.map(|(user, password)| {
            let pair = format!("{user}:{password}");
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        Self {
            cache: cache_dir.join(name),
            base,
            agent,
            authorization,
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The schema text of `id`, and whether it came from the disk cache (else from the
    /// registry, then cached).
    pub fn schema(&self, id: u32) -> Result<(String, bool), RemoteError> {
        let file = self.cache.join(format!("{id}.avsc"));
        if let Ok(text) = std::fs::read_to_string(&file) {
            return Ok((text, true));
        }
        let url = format!("{}/schemas/ids/{id}", self.base);
        let (status, body) = self.call(|| self.with_auth(self.agent.get(&url)).call())?;
        // only a 404 is the record's fault; any other answer (credentials refused, rate
        // limited, a proxy's page) is the registry's, and the record waits for it
        let text = match status {
            200 => schema_field(&body).map_err(|e| match e {
                // the record's: its id names a schema of another type
                SchemaAnswer::NotAvro(m) => RemoteError::NotFound(format!("schema id {id}: {m}")),
                SchemaAnswer::Unreadable(m) => RemoteError::Unavailable(format!("{url}: {m}")),
            })?,
            // the registry's own "schema not found", not any 404 (a wrong path, a proxy)
            404 if error_code(&body) == Some(40403) => {
                return Err(RemoteError::NotFound(format!(
                    "schema id {id} is not in the registry at {}",
                    self.base
                )));
            }
            _ => {
                return Err(RemoteError::Unavailable(
                    answer(&url, status, &body).to_string(),
                ));
            }
        };
        if let Err(e) = write_atomically(&file, &text) {
            tracing::warn!(file = %file.display(), error = %e, "schema cache not written; the registry is asked again next time");
        }
        Ok((text, false))
    }

    /// Forgets the cached schema of `id` (it did not parse: the next fetch asks the registry).
    pub fn forget(&self, id: u32) {
        let file = self.cache.join(format!("{id}.avsc"));
        if let Err(e) = std::fs::remove_file(&file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %file.display(), error = %e, "cached schema not removed");
        }
    }

    /// Registers `schema` under `subject` (or finds it there) and returns its id. A
    /// registration is cached on disk like a schema, so a restart needs no registry for it.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, RemoteError> {
        let file = self
            .cache
            .join("subjects")
            .join(subject)
            .join(format!("{:08x}.json", crc32c::crc32c(schema.as_bytes())));
        let cached = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter(|v| v.get("schema").and_then(serde_json::Value::as_str) == Some(schema))
            .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
            .and_then(|id| u32::try_from(id).ok());
        if let Some(id) = cached {
            return Ok(id);
        }
        let id = self.register_remotely(subject, schema)?;
        let entry = serde_json::json!({ "id": id, "schema": schema }).to_string();
        if let Err(e) = write_atomically(&file, &entry) {
            tracing::warn!(file = %file.display(), error = %e, "schema cache not written; the registry is asked again next time");
        }
        Ok(id)
    }

    fn register_remotely(&self, subject: &str, schema: &str) -> Result<u32, RemoteError> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let body = serde_json::json!({ "schema": schema }).to_string();
        let (status, answer_body) = self.call(|| {
            self.with_auth(self.agent.post(&url))
                .header("Content-Type", CONTENT_TYPE)
                .send(body.as_str())
        })?;
        match status {
            200 => {}
            // a timeout or a rate limit: try again later
            408 | 429 => {
                return Err(RemoteError::Unavailable(
                    answer(&url, status, &answer_body).to_string(),
                ));
            }
            _ => return Err(answer(&url, status, &answer_body)),
        }
        serde_json::from_str::<serde_json::Value>(&answer_body)
            .ok()
            .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| RemoteError::Rejected(format!("{url}: no id in {answer_body:?}")))
    }

    fn with_auth<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(value) => request.header("Authorization", value),
            None => request,
        }
    }

    /// One request with retries for transport errors and server errors (5xx).
    fn call(
        &self,
        send: impl Fn() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, String), RemoteError> {
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match send() {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let body = response.body_mut().read_to_string().unwrap_or_default();
                    if status < 500 {
                        return Ok((status, body));
                    }
                    last = format!("HTTP {status}: {body}");
                }
                Err(e) => last = e.to_string(),
            }
            if attempt < ATTEMPTS {
                std::thread::sleep(RETRY_PAUSE * attempt);
            }
        }
        Err(RemoteError::Unavailable(format!(
            "schema registry {} unavailable after {ATTEMPTS} attempts: {last}",
            self.base
        )))
    }
}

/// Why a `GET /schemas/ids/{id}` answer gave no Avro schema.
#[derive(Debug, PartialEq, Eq)]
enum SchemaAnswer {
    /// A schema of another type (Protobuf, JSON Schema).
    NotAvro(String),
    /// Not an answer of a schema registry.
    Unreadable(String),
}

/// The `schema` of a `GET /schemas/ids/{id}` answer, which must be Avro.
fn schema_field(body: &str) -> Result<String, SchemaAnswer> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| SchemaAnswer::Unreadable(format!("answer is not JSON: {e}")))?;
    match v.get("schemaType").and_then(serde_json::Value::as_str) {
        None | Some("AVRO") => {}
        Some(other) => {
            return Err(SchemaAnswer::NotAvro(format!("a {other} schema, not Avro")));
        }
    }
    v.get("schema")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| SchemaAnswer::Unreadable("the answer has no \"schema\"".to_string()))
}

/// The registry's `error_code` in an error answer.
fn error_code(body: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("error_code")?
        .as_u64()
}

/// A 4xx answer: the registry's own message (`{"error_code", "message"}`) when it has one.
fn answer(url: &str, status: u16, body: &str) -> RemoteError {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| body.to_string());
    RemoteError::Rejected(format!("{url}: HTTP {status}: {message}"))
}

fn write_atomically(file: &Path, text: &str) -> std::io::Result<()> {
    // one temporary name per write: pipelines share the registry, and may fetch one id at once
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_answer_must_hold_an_avro_schema() {
        assert_eq!(
            schema_field(r#"{"schema": "\"string\""}"#).unwrap(),
            "\"string\""
        );
        assert_eq!(
            schema_field(r#"{"schemaType": "AVRO", "schema": "\"long\""}"#).unwrap(),
            "\"long\""
        );
        let e = schema_field(r#"{"schemaType": "PROTOBUF", "schema": "syntax"}"#).unwrap_err();
        assert_eq!(
            e,
            SchemaAnswer::NotAvro("a PROTOBUF schema, not Avro".into())
        );
        assert!(
            matches!(schema_field("<html>"), Err(SchemaAnswer::Unreadable(m)) if m.contains("not JSON"))
        );
        assert!(
            matches!(schema_field("{}"), Err(SchemaAnswer::Unreadable(m)) if m.contains("no \"schema\""))
        );
        assert_eq!(
            error_code(r#"{"error_code": 40403, "message": "Schema not found"}"#),
            Some(40403)
        );
        assert_eq!(error_code("<html>404</html>"), None);
    }

    #[test]
    fn a_refusal_carries_the_registrys_own_message() {
        let e = answer(
            "http://r/subjects/s/versions",
            409,
            r#"{"error_code": 409, "message": "Schema being registered is incompatible"}"#,
        );
        assert_eq!(
            e,
            RemoteError::Rejected(
                "http://r/subjects/s/versions: HTTP 409: Schema being registered is incompatible"
                    .into()
            )
        );
    }

    #[test]
    fn an_unreachable_registry_is_unavailable_not_a_missing_schema() {
        // a port nothing listens on: bind one, note it, and let it go
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let r = Remote::new(
            &format!("http://127.0.0.1:{port}/"),
            Duration::from_secs(1),
            dir.path(),
            None,
        );
        assert!(matches!(r.schema(7), Err(RemoteError::Unavailable(_))));
        // a cached schema needs no registry
        let cached = dir.path().join(format!("127_0_0_1_{port}")).join("7.avsc");
        write_atomically(&cached, "\"string\"").unwrap();
        assert_eq!(r.schema(7).unwrap(), ("\"string\"".to_string(), true));
    }
}
