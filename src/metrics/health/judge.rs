//! The probes' judgments, pure functions of a thread's figures: alive (`judge_live`), stuck
//! past the daemon's limit (`judge_stuck`), ready (`judge_ready`).

use std::time::Duration;

use super::Phase;

/// Alive unless the loop has not come round within `timeout` while it should.
pub fn judge_live(
    phase: Phase,
    since_beat: Duration,
    timeout: Duration,
    error: Option<&str>,
) -> Result<(), String> {
    match phase {
        Phase::Failed => Err(format!(
            "the pipeline thread failed: {}",
            error.unwrap_or("(no message)")
        )),
        Phase::Starting | Phase::Running if since_beat > timeout => Err(format!(
            "the pipeline thread has not come round its loop for {:.1} s (liveness timeout {} s)",
            since_beat.as_secs_f64(),
            timeout.as_secs()
        )),
        _ => Ok(()),
    }
}

/// Stuck: a starting or running loop that has not come round within `limit` (a call into
/// librdkafka that does not return, a lock). The same rule as liveness, with a longer limit.
pub fn judge_stuck(phase: Phase, since_beat: Duration, limit: Duration) -> Option<String> {
    matches!(phase, Phase::Starting | Phase::Running)
        .then_some(())
        .filter(|()| since_beat > limit)
        .map(|()| {
            format!(
                "has not come round its loop for {:.1} s (stuck_timeout {} s)",
                since_beat.as_secs_f64(),
                limit.as_secs()
            )
        })
}

/// How long a running thread may go without a commit while it has work, before it is not
/// ready: three intervals, and 10 s for a slow commit.
pub fn commit_grace(interval: Duration) -> Duration {
    interval * 3 + Duration::from_secs(10)
}

/// What readiness is judged on, besides the interval and the last error.
#[derive(Debug, Clone, Copy)]
pub struct Judged<'a> {
    pub phase: Phase,
    pub since_commit: Option<Duration>,
    /// Nothing processed since the last commit, and every partition read to its end.
    pub caught_up: bool,
    /// Why the consumer has no group coordinator, while it has none.
    pub no_coordinator: Option<&'a str>,
}

pub fn judge_ready(j: Judged<'_>, interval: Duration, error: Option<&str>) -> Result<(), String> {
    let Judged {
        phase,
        since_commit,
        caught_up,
        no_coordinator,
    } = j;
    let grace = commit_grace(interval);
    match phase {
        Phase::Running if no_coordinator.is_some() => Err(format!(
            "the consumer has no group coordinator, so it can neither be given partitions nor commit: {}",
            no_coordinator.unwrap_or_default()
        )),
        Phase::Running if caught_up || since_commit.is_some_and(|d| d <= grace) => Ok(()),
        Phase::Running => Err(match since_commit {
            Some(d) => format!(
                "no checkpoint committed for {:.1} s (allowed {} s) while records wait to be read or committed",
                d.as_secs_f64(),
                grace.as_secs()
            ),
            None => {
                "no checkpoint committed yet while records wait to be read or committed".to_string()
            }
        }),
        Phase::Starting => Err("starting: registering the producer, joining the group".to_string()),
        Phase::Restoring => Err("restoring the state of assigned partitions".to_string()),
        Phase::Restarting => Err(format!(
            "restarting after a failure: {}",
            error.unwrap_or("(no message)")
        )),
        Phase::Stopped => Err("stopped".to_string()),
        Phase::Failed => Err(format!("failed: {}", error.unwrap_or("(no message)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_loop_that_stopped_coming_round_is_not_alive() {
        assert!(judge_live(Phase::Running, 5 * S, 60 * S, None).is_ok());
        let e = judge_live(Phase::Running, 61 * S, 60 * S, None).unwrap_err();
        assert!(e.contains("61.0 s"), "{e}");
        assert!(judge_live(Phase::Starting, 61 * S, 60 * S, None).is_err());
        // a restore, a backoff or a stop is not a stuck loop
        for p in [Phase::Restoring, Phase::Restarting, Phase::Stopped] {
            assert!(judge_live(p, 600 * S, 60 * S, None).is_ok(), "{p:?}");
        }
        let e = judge_live(Phase::Failed, S, 60 * S, Some("fenced")).unwrap_err();
        assert!(e.contains("fenced"), "{e}");
    }

    #[test]
    fn a_loop_is_stuck_only_past_the_limit_and_only_while_it_should_come_round() {
        assert_eq!(judge_stuck(Phase::Running, 180 * S, 180 * S), None);
        let e = judge_stuck(Phase::Running, 181 * S, 180 * S).unwrap_or_default();
        assert!(
            e.contains("181.0 s") && e.contains("stuck_timeout 180 s"),
            "{e}"
        );
        assert!(judge_stuck(Phase::Starting, 181 * S, 180 * S).is_some());
        // a restore, a backoff, a stop or a failure is not a stuck loop
        for p in [
            Phase::Restoring,
            Phase::Restarting,
            Phase::Stopped,
            Phase::Failed,
        ] {
            assert_eq!(judge_stuck(p, 600 * S, 180 * S), None, "{p:?}");
        }
    }

    fn judge(
        phase: Phase,
        since_commit: Option<Duration>,
        caught_up: bool,
        interval: Duration,
    ) -> Result<(), String> {
        let j = Judged {
            phase,
            since_commit,
            caught_up,
            no_coordinator: None,
        };
        judge_ready(j, interval, None)
    }

    #[test]
    fn without_a_group_coordinator_a_running_thread_is_not_ready() {
        // caught up and just committed, but out of its group: it holds nothing and reads nothing
        let j = Judged {
            phase: Phase::Running,
            since_commit: Some(S),
            caught_up: true,
            no_coordinator: Some("librdkafka's group state \"query-coord\" for 12 s"),
        };
        let e = judge_ready(j, S, None).unwrap_err();
        assert!(
            e.contains("no group coordinator") && e.contains("query-coord"),
            "{e}"
        );
    }

    #[test]
    fn ready_when_running_and_committing_or_idle() {
        let i = 2 * S;
        assert!(judge(Phase::Running, Some(3 * S), false, i).is_ok());
        assert!(judge(Phase::Running, Some(16 * S), false, i).is_ok());
        let e = judge(Phase::Running, Some(17 * S), false, i).unwrap_err();
        assert!(e.contains("17.0 s"), "{e}");
        assert!(judge(Phase::Running, None, false, i).is_err());
        // an idle pipeline with nothing to read is ready, committed or not
        assert!(judge(Phase::Running, None, true, i).is_ok());
        assert!(judge(Phase::Running, Some(600 * S), true, i).is_ok());
        for p in [
            Phase::Starting,
            Phase::Restoring,
            Phase::Restarting,
            Phase::Stopped,
            Phase::Failed,
        ] {
            assert!(judge(p, Some(S), true, i).is_err(), "{p:?}");
        }
    }
}
