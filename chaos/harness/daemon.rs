//! `flumen run` as a child process: its config, each incarnation's log, signals, and the
//! health endpoints.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::late::IDLE_TIMEOUT_MS;
use crate::verify::{Kind, WINDOW_MS};

/// The topics and names of one scenario's pipelines.
#[derive(Clone)]
pub struct Names {
    pub prefix: String,
    pub source: String,
}

impl Names {
    pub fn new(scenario: &str) -> Names {
        let prefix = format!("chaos-{scenario}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        Names {
            source: format!("{prefix}-in"),
            prefix,
        }
    }

    pub fn pipeline(&self, k: Kind) -> String {
        format!("{}-{}", self.prefix, k.name())
    }

    pub fn sink(&self, k: Kind) -> String {
        format!("{}-{}-out", self.prefix, k.name())
    }

    pub fn dead_letters(&self, k: Kind) -> String {
        format!("{}-{}-dlq", self.prefix, k.name())
    }

    /// The window pipeline's late records.
    pub fn late(&self) -> String {
        format!("{}-window-late", self.prefix)
    }

    /// Every topic the harness creates.
    pub fn topics(&self) -> Vec<String> {
        let mut t = vec![self.source.clone()];
        for k in Kind::ALL {
            t.push(self.sink(k));
            t.push(self.dead_letters(k));
        }
        t.push(self.late());
        t
    }
}

/// Settings a scenario may change.
#[derive(Clone)]
pub struct Settings {
    pub bootstrap: String,
    pub interval: &'static str,
    pub transaction_timeout: &'static str,
    pub checkpoint_dir: PathBuf,
    /// The live state's directory; by default the daemon's own `state`.
    pub state_dir: Option<PathBuf>,
    pub instance_id: String,
    /// Extra librdkafka properties, `key = "value"` lines.
    pub properties: Vec<(String, String)>,
    /// Environment of every start (secrets the config names with `${VAR}`).
    pub env: Vec<(String, String)>,
    /// The program run as `PROGRAM run --config FILE`: flumen, or the at-least-once stand-in.
    pub program: PathBuf,
    /// The pipelines run (all but for the at-least-once stand-in, which has no windows).
    pub kinds: Vec<Kind>,
}

/// The three pipelines of `Kind::ALL` in one daemon, each with dead letters.
pub fn config(n: &Names, s: &Settings, state_dir: &Path, admin_port: u16) -> String {
    let mut props = String::new();
    for (k, v) in &s.properties {
        props.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    let mut text = format!(
        r#"instance_id = "{instance}"
shutdown_timeout = "30s"

[kafka]
bootstrap_servers = "{bootstrap}"
transaction_timeout = "{txn}"

[kafka.properties]
{props}
[checkpoint]
interval = "{interval}"
dir = "{checkpoints}"

[state]
backend = "rocksdb"
dir = "{state}"

[restart]
initial_backoff = "200ms"
max_backoff = "2s"
max_attempts = 1000

[admin]
listen = "127.0.0.1:{admin_port}"
"#,
        instance = s.instance_id,
        bootstrap = s.bootstrap,
        txn = s.transaction_timeout,
        interval = s.interval,
        checkpoints = s.checkpoint_dir.display(),
        state = state_dir.display(),
    );
    for &k in &s.kinds {
        let (source_extra, operator) = match k {
            Kind::Count => (String::new(), r#"{ type = "count" }"#.to_string()),
            Kind::Sum => (
                r#", key_field = "user""#.to_string(),
                r#"{ type = "sum", field = "id" }"#.to_string(),
            ),
            Kind::Window => (
                format!(
                    r#", event_time = {{ field = "ts", format = "unix_ms", max_out_of_orderness = "1s", idle_timeout = "{IDLE_TIMEOUT_MS}ms" }}"#
                ),
                format!(
                    r#"{{ type = "count", window = {{ type = "tumbling", size = "{WINDOW_MS}ms", late_topic = "{}" }} }}"#,
                    n.late()
                ),
            ),
        };
        text.push_str(&format!(
            r#"
[[pipelines]]
name = "{name}"
source = {{ topic = "{source}", format = "json"{source_extra} }}
sink = {{ topic = "{sink}", format = "json" }}
on_error = "dead_letter"
dead_letter_topic = "{dlq}"
operators = [
  {{ type = "key_by", field = "user" }},
  {operator},
]
"#,
            name = n.pipeline(k),
            source = n.source,
            sink = n.sink(k),
            dlq = n.dead_letters(k),
        ));
    }
    text
}

/// One daemon: its directory (config, state, logs) and the running child, if any.
pub struct Daemon {
    pub flumen: PathBuf,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub admin_port: u16,
    child: Option<Child>,
    /// The exit status [`Daemon::is_running`] reaped, until [`Daemon::wait`] hands it out
    /// (a supervisor must still see an exit noticed while waiting for readiness).
    exited: Option<ExitStatus>,
    pub runs: usize,
    pub env: Vec<(String, String)>,
}

impl Daemon {
    pub fn new(flumen: &Path, dir: &Path, config_text: &str, admin_port: u16) -> Result<Daemon> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("flumen.toml");
        std::fs::write(&config, config_text)?;
        Ok(Daemon {
            flumen: flumen.to_path_buf(),
            dir: dir.to_path_buf(),
            config,
            admin_port,
            child: None,
            exited: None,
            runs: 0,
            env: Vec::new(),
        })
    }

    pub fn log_path(&self, run: usize) -> PathBuf {
        self.dir.join(format!("run-{run}.log"))
    }

    pub fn last_log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.runs)).unwrap_or_default()
    }

    pub fn start(&mut self, env: &[(&str, &str)]) -> Result<()> {
        if self.is_running() {
            bail!("{} is already running", self.dir.display());
        }
        self.runs += 1;
        let log = std::fs::File::create(self.log_path(self.runs))?;
        let mut cmd = Command::new(&self.flumen);
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,flumen=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.exited = None;
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {}", self.flumen.display()))?,
        );
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.child = None;
                self.exited = Some(status);
                false
            }
            Some(Err(_)) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    pub fn signal(&self, sig: &str) -> Result<()> {
        let Some(pid) = self.pid() else {
            bail!("not running");
        };
        let ok = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()?
            .success();
        if !ok {
            bail!("kill -{sig} {pid} failed");
        }
        Ok(())
    }

    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Ok(self.exited.take());
            };
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and the exit status within `timeout` (SIGKILL after it: `None`).
    pub fn terminate(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        self.signal("TERM")?;
        let status = self.wait(timeout)?;
        if status.is_none() {
            self.kill9()?;
        }
        Ok(status)
    }

    /// `GET path` on the admin listener: the status code (0 when nothing answers).
    pub fn probe(&self, path: &str) -> u16 {
        probe(self.admin_port, path)
    }

    /// Waits until `/readyz` answers 200; the time it took.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let began = Instant::now();
        loop {
            if self.probe("/readyz") == 200 {
                return Ok(began.elapsed());
            }
            if !self.is_running() {
                bail!(
                    "flumen exited before it was ready; its log:\n{}",
                    tail(&self.last_log(), 30)
                );
            }
            if began.elapsed() > timeout {
                bail!(
                    "flumen not ready within {timeout:?}; its log:\n{}",
                    tail(&self.last_log(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9().ok();
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The status of `path` on the admin listener at `port` (0: no answer within 3 s).
/// `GET path` on an admin listener: the body (empty when nothing answers within 3 s).
pub fn fetch(port: u16, path: &str) -> String {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(3)))
            .build(),
    );
    agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default()
}

pub fn probe(port: u16, path: &str) -> u16 {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(3)))
            .build(),
    );
    match agent.get(&format!("http://127.0.0.1:{port}{path}")).call() {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}
