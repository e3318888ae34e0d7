//! `[admin]`: the HTTP listener (metrics, health, the admin API), its token and its liveness
//! timeout. A listener that other hosts can reach needs a token. Also the daemon's own limit
//! on a stuck pipeline thread (`stuck_timeout`), which follows the liveness timeout.

use std::time::Duration;

use super::super::raw;
use super::super::{AdminConfig, TokenSource};
use super::{Cx, HOUR};

const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(60);
/// Flink's `task.cancellation.timeout` default, after which a task that does not react kills
/// its TaskManager.
const DEFAULT_STUCK_TIMEOUT: Duration = Duration::from_secs(180);

impl Cx<'_> {
    /// `transaction_timeout` bounds a commit, during which a loop does not come round.
    pub(super) fn admin(&mut self, raw: &raw::Admin, transaction_timeout: Duration) -> AdminConfig {
        let listen = match raw.listen.get_ref().parse::<std::net::SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                self.problem(
                    "admin.listen",
                    raw.listen.span(),
                    format!(
                        "{:?} is not an address and port (e.g. \"127.0.0.1:9249\", \"[::1]:9249\", \"0.0.0.0:9249\")",
                        raw.listen.get_ref()
                    ),
                );
                std::net::SocketAddr::from(([127, 0, 0, 1], 9249))
            }
        };
        let token = self.admin_token(raw);
        if token.is_none() && !listen.ip().is_loopback() {
            self.problem(
                "admin.listen",
                raw.listen.span(),
                format!(
                    "{listen} can be reached from other hosts: set admin.token_file or admin.token_env, \
                     so that only holders of the token can change anything (or listen on 127.0.0.1)"
                ),
            );
        }
        // a commit may take up to the transaction timeout while its outcome is unknown
        let least = transaction_timeout + Duration::from_secs(10);
        let liveness_timeout = match &raw.liveness_timeout {
            None => DEFAULT_LIVENESS_TIMEOUT.max(least + Duration::from_secs(20)),
            Some(d) => {
                let t = self.duration("admin.liveness_timeout", d, Duration::from_secs(1)..=HOUR);
                if t < least {
                    self.problem(
                        "admin.liveness_timeout",
                        d.span(),
                        format!(
                            "{} is shorter than kafka.transaction_timeout plus 10 s ({}): a commit whose outcome is unknown is retried that long, and the probe would call a healthy daemon dead",
                            humantime::format_duration(t),
                            humantime::format_duration(least)
                        ),
                    );
                }
                t
            }
        };
        AdminConfig {
            listen,
            token,
            liveness_timeout,
        }
    }

    /// `stuck_timeout`: at least the time a commit may take (`transaction_timeout` plus 10 s)
    /// and not shorter than the probe's liveness timeout, which should fail first.
    pub(super) fn stuck_timeout(
        &mut self,
        raw: Option<&toml::Spanned<String>>,
        transaction_timeout: Duration,
        admin: Option<&AdminConfig>,
    ) -> Duration {
        let least = transaction_timeout + Duration::from_secs(10);
        let liveness = admin.map(|a| a.liveness_timeout);
        let Some(d) = raw else {
            let after_probe = liveness.unwrap_or(least) + Duration::from_secs(60);
            return DEFAULT_STUCK_TIMEOUT.max(after_probe);
        };
        let t = self.duration("stuck_timeout", d, Duration::from_secs(1)..=24 * HOUR);
        let fmt = humantime::format_duration;
        if t < least {
            self.problem(
                "stuck_timeout",
                d.span(),
                format!(
                    "{} is shorter than kafka.transaction_timeout plus 10 s ({}): a commit whose outcome is unknown is retried that long, and the daemon would give up on a healthy pipeline",
                    fmt(t),
                    fmt(least)
                ),
            );
        } else if let Some(l) = liveness.filter(|l| t < *l) {
            self.problem(
                "stuck_timeout",
                d.span(),
                format!(
                    "{} is shorter than admin.liveness_timeout ({}): the daemon would exit before /livez says why",
                    fmt(t),
                    fmt(l)
                ),
            );
        }
        t
    }

    /// Where the token comes from; the file or variable is read now, so that a missing or empty
    /// one is reported with the config's other problems (the daemon reads it again at start).
    fn admin_token(&mut self, raw: &raw::Admin) -> Option<TokenSource> {
        match (&raw.token_file, &raw.token_env) {
            (Some(_), Some(env)) => {
                self.problem(
                    "admin.token_env",
                    env.span(),
                    "give token_file or token_env, not both",
                );
                None
            }
            (Some(file), None) => {
                let source = TokenSource::File(self.path(file.get_ref()));
                match source.read() {
                    Ok(_) => Some(source),
                    Err(message) => {
                        self.problem("admin.token_file", file.span(), message);
                        None
                    }
                }
            }
            (None, Some(env)) => {
                let source = TokenSource::Env(env.get_ref().clone());
                match source.read() {
                    Ok(_) => Some(source),
                    Err(message) => {
                        self.problem("admin.token_env", env.span(), message);
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }
}

impl TokenSource {
    /// The token, trimmed of surrounding whitespace (a file's final newline); an error says
    /// what is missing or empty, without the token.
    pub fn read(&self) -> Result<String, String> {
        let (text, what) = match self {
            Self::File(path) => (
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?,
                format!("token file {}", path.display()),
            ),
            Self::Env(name) => (
                std::env::var(name)
                    .map_err(|_| format!("environment variable {name} is not set"))?,
                format!("environment variable {name}"),
            ),
        };
        let token = text.trim();
        if token.len() < 16 {
            return Err(format!(
                "{what} holds {} characters; a token needs at least 16",
                token.len()
            ));
        }
        Ok(token.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::from_str;
    use super::*;

    fn config(admin: &str) -> String {
        format!(
            r#"
[kafka]
bootstrap_servers = "127.0.0.1:19092"

[checkpoint]
interval = "1s"
dir = "data/checkpoints"

[admin]
{admin}

[[pipelines]]
name = "p"
source = {{ topic = "in", format = "json" }}
sink = {{ topic = "out", format = "json" }}
"#
        )
    }

    fn problems(admin: &str) -> Vec<String> {
        problems_of(&config(admin))
    }

    fn problems_of(text: &str) -> Vec<String> {
        match from_str(text) {
            Ok(_) => Vec::new(),
            Err(ps) => ps.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_loopback_listener_needs_no_token() {
        let c = from_str(&config("listen = \"127.0.0.1:9249\"")).unwrap();
        let admin = c.admin.unwrap();
        assert_eq!(admin.listen.port(), 9249);
        assert_eq!(admin.token, None);
        // the default stays above the (default, 60 s) transaction timeout
        assert_eq!(admin.liveness_timeout, Duration::from_secs(90));
        assert!(from_str(&config("listen = \"[::1]:9249\"")).is_ok());
    }

    #[test]
    fn the_stuck_timeout_follows_the_probe_and_the_commit() {
        let with = |top: &str, admin: &str| format!("{top}\n{}", config(admin));
        let listen = "listen = \"127.0.0.1:9249\"";
        // the default: 3 minutes, or a minute after the probe fails when that is later
        let c = from_str(&with("", listen)).unwrap();
        assert_eq!(c.stuck_timeout, Duration::from_secs(180));
        let c = from_str(&with("", &format!("{listen}\nliveness_timeout = \"5m\""))).unwrap();
        assert_eq!(c.stuck_timeout, Duration::from_secs(360));
        let c = from_str(&with("stuck_timeout = \"2m\"", listen)).unwrap();
        assert_eq!(c.stuck_timeout, Duration::from_secs(120));
        for (top, expected) in [
            (
                "stuck_timeout = \"30s\"",
                "stuck_timeout (1:17): 30s is shorter than kafka.transaction_timeout plus 10 s (1m 10s)",
            ),
            (
                "stuck_timeout = \"80s\"",
                "stuck_timeout (1:17): 1m 20s is shorter than admin.liveness_timeout (1m 30s)",
            ),
        ] {
            let ps = problems_of(&with(top, listen));
            assert_eq!(ps.len(), 1, "{ps:?}");
            assert!(ps[0].starts_with(expected), "{ps:?}");
        }
    }

    #[test]
    fn a_listener_other_hosts_reach_needs_a_token() {
        let ps = problems("listen = \"0.0.0.0:9249\"");
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert!(
            ps[0].starts_with("admin.listen (10:10): 0.0.0.0:9249 can be reached from other hosts"),
            "{ps:?}"
        );
        // with a token it is allowed
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        let c = from_str(&config(&format!(
            "listen = \"0.0.0.0:9249\"\ntoken_file = \"{}\"",
            file.display()
        )))
        .unwrap();
        let token = c.admin.unwrap().token.unwrap();
        assert_eq!(token, TokenSource::File(file));
        assert_eq!(token.read().unwrap(), "0123456789abcdef0123");
    }

    #[test]
    fn token_and_address_mistakes_are_named_together() {
        let ps = problems(
            "listen = \"localhost\"\ntoken_env = \"FLUMEN_TEST_ADMIN_TOKEN_UNSET\"\nliveness_timeout = \"20s\"",
        );
        assert_eq!(ps.len(), 3, "{ps:?}");
        assert!(
            ps[0].contains("admin.listen (10:10): \"localhost\" is not an address and port"),
            "{ps:?}"
        );
        assert!(ps[1].contains("admin.token_env (11:13): environment variable FLUMEN_TEST_ADMIN_TOKEN_UNSET is not set"), "{ps:?}");
        assert!(
            ps[2].starts_with(
                "admin.liveness_timeout (12:20): 20s is shorter than kafka.transaction_timeout plus 10 s (1m 10s)"
            ),
            "{ps:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("token");
        std::fs::write(&short, "short\n").unwrap();
        let ps = problems(&format!(
            "listen = \"127.0.0.1:1\"\ntoken_file = \"{}\"",
            short.display()
        ));
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert!(
            ps[0].contains("holds 5 characters; a token needs at least 16"),
            "{ps:?}"
        );
        let ps = problems(
            "listen = \"127.0.0.1:1\"\ntoken_file = \"/nonexistent/token\"\ntoken_env = \"X\"",
        );
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert!(
            ps[0].contains("give token_file or token_env, not both"),
            "{ps:?}"
        );
    }
}
