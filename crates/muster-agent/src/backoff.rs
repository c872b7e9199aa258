//! Restart decisions: `restartPolicy` and kubelet's crash-loop back-off.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// The pod's `spec.restartPolicy` (Kubernetes defaults to Always).
    pub fn parse(value: Option<&str>) -> RestartPolicy {
        match value {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    pub fn should_restart(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffSettings {
    pub initial: Duration,
    pub max: Duration,
    /// A container that ran this long starts over from no back-off.
    pub reset_after: Duration,
}

impl Default for BackoffSettings {
    /// kubelet's values: 10 s doubling up to 5 min, forgotten after 10 min of running.
    fn default() -> Self {
        BackoffSettings {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

/// Per-container back-off. As in kubelet, the first restart is immediate; each further one
/// waits 10 s, 20 s, 40 s, ... up to 5 min.
#[derive(Debug, Clone)]
pub struct RestartBackoff {
    settings: BackoffSettings,
    current: Option<Duration>,
}

impl RestartBackoff {
    pub fn new(settings: BackoffSettings) -> Self {
        RestartBackoff {
            settings,
            current: None,
        }
    }

    /// Called when the container exited after running for `ran_for`; returns how long to wait
    /// before starting it again.
    pub fn after_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.settings.reset_after {
            self.current = None;
        }
        let delay = self.current.unwrap_or(Duration::ZERO);
        self.current = Some(match self.current {
            None => self.settings.initial,
            Some(d) => (d * 2).min(self.settings.max),
        });
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_sequence() {
        let mut b = RestartBackoff::new(BackoffSettings::default());
        let s = Duration::from_secs;
        let got: Vec<u64> = (0..9).map(|_| b.after_exit(s(1)).as_secs()).collect();
        assert_eq!(got, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
        // a long run forgets the crash loop
        assert_eq!(b.after_exit(s(600)), Duration::ZERO);
        assert_eq!(b.after_exit(s(1)), s(10));
        assert_eq!(b.after_exit(s(599)), s(20));
    }

    #[test]
    fn policy_table() {
        use RestartPolicy::*;
        let cases = [
            (None, 0, true),
            (Some("Always"), 0, true),
            (Some("Always"), 1, true),
            (Some("OnFailure"), 0, false),
            (Some("OnFailure"), 137, true),
            (Some("Never"), 0, false),
            (Some("Never"), 2, false),
        ];
        for (policy, code, want) in cases {
            let p = RestartPolicy::parse(policy);
            assert_eq!(p.should_restart(code), want, "{policy:?} {code}");
        }
        assert_eq!(RestartPolicy::parse(Some("bogus")), Always);
    }
}
