//! The kubelet's crash-loop back-off for restarting containers: `client-go/util/flowcontrol/backoff.go`
//! as `kuberuntime_manager.go` `doBackOff` uses it (10 s doubling to 5 min, forgotten after 10 min
//! without a failure), and Go's duration format for its message.

use std::time::{Duration, SystemTime};

/// The kubelet's crash-loop back-off: 10 s doubling to 5 min (`MaxContainerBackOff`).
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy { initial: Duration::from_secs(10), max: Duration::from_secs(300) }
    }
}

/// One container's back-off entry, as `flowcontrol.Backoff` keeps it per container.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    entry: Option<(Duration, SystemTime)>,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff { policy, entry: None }
    }

    /// No failure for twice the maximum: the entry starts over.
    fn expired(&self, event: SystemTime, last: SystemTime) -> bool {
        event.duration_since(last).unwrap_or_default() > 2 * self.policy.max
    }

    /// Whether a container that finished at `finished` must still wait at `now` (`IsInBackOffSince`).
    pub fn in_backoff_since(&self, finished: SystemTime, now: SystemTime) -> bool {
        match self.entry {
            None => false,
            Some((_, last)) if self.expired(finished, last) => false,
            Some((backoff, _)) => now.duration_since(finished).unwrap_or_default() < backoff,
        }
    }

    /// Records a restart for a container that finished at `finished` (`Next`).
    pub fn next(&mut self, finished: SystemTime) {
        let backoff = match self.entry {
            Some((b, last)) if !self.expired(finished, last) => (b * 2).min(self.policy.max),
            _ => self.policy.initial,
        };
        self.entry = Some((backoff, finished));
    }

    /// The current back-off (`Get`).
    pub fn current(&self) -> Duration {
        self.entry.map(|(b, _)| b).unwrap_or_default()
    }
}

/// A duration as Go prints it: `10s`, `1m20s`, `5m0s`, `500ms`.
pub fn go_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    let frac = d.subsec_millis();
    let s = if frac == 0 {
        format!("{}s", secs % 60)
    } else {
        format!("{}.{}s", secs % 60, format!("{frac:03}").trim_end_matches('0'))
    };
    match (secs / 3600, (secs / 60) % 60) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_quiet() {
        let mut b = Backoff::new(BackoffPolicy::default());
        // First crash: no entry, restart at once; the entry starts at 10s.
        assert!(!b.in_backoff_since(t(0), t(0)));
        b.next(t(0));
        assert_eq!(b.current(), Duration::from_secs(10));
        // Second crash 1 s later: wait 10 s from it.
        assert!(b.in_backoff_since(t(1), t(5)));
        assert!(!b.in_backoff_since(t(1), t(11)));
        b.next(t(1));
        assert_eq!(b.current(), Duration::from_secs(20));
        let mut last = 1;
        let mut seen = vec![];
        for _ in 0..6 {
            last += 5;
            b.next(t(last));
            seen.push(b.current().as_secs());
        }
        assert_eq!(seen, [40, 80, 160, 300, 300, 300]);
        // More than 2×max (10 min) since the last crash: back to the start.
        assert!(!b.in_backoff_since(t(last + 601), t(last + 601)));
        b.next(t(last + 601));
        assert_eq!(b.current(), Duration::from_secs(10));
    }

    #[test]
    fn durations_print_as_go() {
        let cases = [
            (10_000, "10s"),
            (80_000, "1m20s"),
            (300_000, "5m0s"),
            (500, "500ms"),
            (1_500, "1.5s"),
            (3_700_000, "1h1m40s"),
        ];
        for (ms, want) in cases {
            assert_eq!(go_duration(Duration::from_millis(ms)), want);
        }
    }
}
