//! The CLI's side of the admin API (blocking): `flumen savepoint trigger` and `flumen stop`
//! go over HTTP when the config's `[admin]` has a token, and the daemon's status is read here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::Error;
use super::api::{DaemonStatus, SavepointRequest};
use crate::config::AdminConfig;
use crate::control;

/// Where a client on this host reaches a listener on `listen` (an unspecified address is
/// reached through loopback).
pub fn base_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

fn failed(url: &str, message: impl std::fmt::Display) -> Error {
    Error::Client {
        url: url.to_string(),
        message: message.to_string(),
    }
}

/// Asks the daemon for savepoints, waiting up to `timeout` for them.
pub fn savepoints(
    config: &AdminConfig,
    request: &control::Request,
    timeout: Duration,
) -> Result<control::Response, Error> {
    let url = format!("{}/api/v1/savepoints", base_url(config.listen));
    let token = config
        .token
        .as_ref()
        .ok_or_else(|| Error::Token("the config's [admin] has no token_file or token_env".into()))?
        .read()
        .map_err(Error::Token)?;
    let body = SavepointRequest {
        dir: request.dir.clone(),
        stop: request.stop,
        pipeline: request.pipeline.clone(),
        timeout_s: Some(timeout.as_secs().max(1)),
    };
    let mut response = agent(timeout + Duration::from_secs(5))
        .post(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/json")
        .send(serde_json::to_vec(&body).map_err(|e| failed(&url, e))?)
        .map_err(|e| failed(&url, e))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| failed(&url, e))?;
    match status {
        200 | 500 => {
            serde_json::from_str(&text).map_err(|e| failed(&url, format!("{e}: {text:?}")))
        }
        other => Err(failed(&url, format!("HTTP {other}: {}", text.trim()))),
    }
}

/// The daemon's status (`GET /api/v1/status`).
pub fn status(config: &AdminConfig) -> Result<DaemonStatus, Error> {
    let url = format!("{}/api/v1/status", base_url(config.listen));
    let mut response = agent(Duration::from_secs(10))
        .get(&url)
        .call()
        .map_err(|e| failed(&url, e))?;
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| failed(&url, e))?;
    serde_json::from_str(&text).map_err(|e| failed(&url, format!("{e}: {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_address_is_reached_through_loopback() {
        assert_eq!(
            base_url("0.0.0.0:9249".parse().unwrap()),
            "http://127.0.0.1:9249"
        );
        assert_eq!(base_url("[::]:9249".parse().unwrap()), "http://[::1]:9249");
        assert_eq!(
            base_url("10.1.2.3:80".parse().unwrap()),
            "http://10.1.2.3:80"
        );
    }
}
