//! SASL_SSL with SCRAM-SHA-512 and certificates `scripts/kafka.sh` makes (keytool, openssl):
//! the pipelines run through kills over it, and a canary password, given through `${VAR}`,
//! appears in no log line (at trace level, with librdkafka's security debug), no file Flumen
//! writes, and no answer of the admin API. A wrong password and an unknown CA fail fast.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::daemon::{Daemon, Names, config};
use crate::scenario::{Bed, Ctx, Row, run};

/// `scripts/kafka.sh`'s SASL_SSL user and the canary password (FLUMEN_KAFKA_SSL_PASSWORD).
pub const USER: &str = "flumen-test";
pub const CANARY: &str = "flumen-ssl-canary-7f3a";

fn sasl_properties(ca: &str) -> Vec<(String, String)> {
    [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanisms", "SCRAM-SHA-512"),
        ("sasl.username", USER),
        ("sasl.password", "${CHAOS_SASL_PASSWORD}"),
        ("ssl.ca.location", ca),
        ("debug", "security,broker,conf"),
        ("session.timeout.ms", "10000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn scenario(bed: &Bed) -> Result<Row> {
    let ssl = bed.brokers.run(&["ssl-bootstrap"])?.trim().to_string();
    let ca = bed.brokers.run(&["ca-path"])?.trim().to_string();
    let other_ca = bed.brokers.run(&["other-ca-path"])?.trim().to_string();
    let kills = bed.pick(3, 10);
    run(
        bed,
        "sasl-ssl",
        |s| {
            s.bootstrap = ssl.clone();
            s.properties = sasl_properties(&ca);
            s.env = vec![
                ("CHAOS_SASL_PASSWORD".into(), CANARY.into()),
                ("RUST_LOG".into(), "trace".into()),
            ];
        },
        |c| {
            for _ in 0..kills {
                c.sleep_ms(2_000..5_000);
                c.daemon.kill9()?;
                c.faults += 1;
                c.restart(&[])?;
            }
            c.daemon.wait_ready(Duration::from_secs(120))?;
            for path in ["/metrics", "/api/v1/status", "/", "/readyz", "/livez"] {
                if crate::daemon::fetch(c.daemon.admin_port, path).contains(CANARY) {
                    c.fail(format!(
                        "the canary password is in the answer to GET {path}"
                    ));
                }
            }
            fails_fast(
                c,
                "a wrong password",
                &ca,
                "wrong-password-4c1d",
                &["auth", "SASL"],
            )?;
            fails_fast(
                c,
                "an unknown CA",
                &other_ca,
                CANARY,
                &["SSL", "certificate"],
            )?;
            let mut found = Vec::new();
            search(&c.bed.work.join(&c.names.prefix), &mut found);
            search(&c.settings.checkpoint_dir, &mut found);
            if found.is_empty() {
                c.notes.push(format!(
                    "the canary is in no file under the scenario's directories ({} daemon runs' logs at trace level, state, checkpoints) and no admin API answer",
                    c.daemon.runs
                ));
            } else {
                c.fail(format!("the canary password is in: {}", found.join(", ")));
            }
            Ok(())
        },
    )
}

/// A daemon of other pipelines with `password` and `ca` must exit non-zero within 60 s,
/// saying one of `words` (and never the password).
fn fails_fast(c: &mut Ctx<'_>, what: &str, ca: &str, password: &str, words: &[&str]) -> Result<()> {
    let names = Names::new("sasl-refused");
    let dir = c.bed.work.join(&c.names.prefix).join(&names.prefix);
    let mut settings = c.settings.clone();
    settings.properties = sasl_properties(ca);
    settings.checkpoint_dir = dir.join("checkpoints");
    let port = c.bed.admin_port();
    let text = config(&names, &settings, &dir.join("state"), port);
    let mut d = Daemon::new(&settings.program, &dir, &text, port)?;
    d.env = vec![
        ("CHAOS_SASL_PASSWORD".into(), password.into()),
        ("RUST_LOG".into(), "trace".into()),
    ];
    let began = Instant::now();
    d.start(&[])?;
    let status = d.wait(Duration::from_secs(60))?;
    let log = d.last_log();
    let said = words
        .iter()
        .any(|w| log.to_lowercase().contains(&w.to_lowercase()));
    match status {
        Some(s) if !s.success() && said => c
            .notes
            .push(format!("{what}: exit {s} after {:.1?}", began.elapsed())),
        other => c.fail(format!(
            "{what}: {other:?} within 60 s, naming the cause: {said}:\n{}",
            crate::daemon::tail(&log, 15)
        )),
    }
    if log.contains(password) {
        c.fail(format!("{what}: the password is in the log"));
    }
    Ok(())
}

/// Files under `dir` whose bytes hold the canary.
fn search(dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            search(&p, found);
        } else if let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes())
        {
            found.push(p.display().to_string());
        }
    }
}
