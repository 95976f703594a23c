//! The renewal policy (random frame and time thresholds, the output hold)
//! and the schedule that tracks when the server's next renewal is due.

use rand::Rng;
use std::time::{Duration, Instant};

/// When the server renews a connection's keys (PROTOCOL.md 2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalPolicy {
    /// Renew after a random number in `min_frames..=max_frames` of sent frames.
    pub min_frames: u32,
    pub max_frames: u32,
    /// ... or after a random `min_secs..=max_secs` seconds, whichever first.
    pub min_secs: u64,
    pub max_secs: u64,
    /// How long output stays held after a `RENEGOTIATE_RESPONSE` to a client
    /// that did not say `"immediate": true` (zero disables the hold).
    pub hold: Duration,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        RenewalPolicy {
            min_frames: 50,
            max_frames: 100,
            min_secs: 1800,
            max_secs: 3600,
            hold: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("renewal min_frames must be at least 1")]
    ZeroFrames,
    #[error("renewal min_frames ({min}) is above max_frames ({max})")]
    FrameRange { min: u32, max: u32 },
    #[error("renewal min_secs ({min}) is above max_secs ({max})")]
    TimeRange { min: u64, max: u64 },
}

impl RenewalPolicy {
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.min_frames == 0 {
            return Err(PolicyError::ZeroFrames);
        }
        if self.min_frames > self.max_frames {
            return Err(PolicyError::FrameRange {
                min: self.min_frames,
                max: self.max_frames,
            });
        }
        if self.min_secs > self.max_secs {
            return Err(PolicyError::TimeRange {
                min: self.min_secs,
                max: self.max_secs,
            });
        }
        Ok(())
    }

    /// A random frame threshold (never panics, even on an invalid policy).
    fn random_frames(&self) -> u32 {
        let low = self.min_frames.min(self.max_frames).max(1);
        let high = self.max_frames.max(low);
        rand::thread_rng().gen_range(low..=high)
    }

    /// A random timer length (never panics, even on an invalid policy).
    fn random_timer(&self) -> Duration {
        let low = self.min_secs.min(self.max_secs);
        let high = self.max_secs.max(low);
        Duration::from_secs(rand::thread_rng().gen_range(low..=high))
    }
}

/// `now + length`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(now: Instant, length: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    now.checked_add(length.min(FAR)).unwrap_or(now)
}

/// The server's renewal triggers: frames sent against a random threshold,
/// and a timer.
#[derive(Debug)]
pub(crate) struct Schedule {
    frames_sent: u32,
    frame_threshold: u32,
    /// When the frame threshold was reached (so the owner has a deadline).
    frames_due_at: Option<Instant>,
    timer_due: Instant,
}

impl Schedule {
    pub(crate) fn new(policy: &RenewalPolicy, now: Instant) -> Schedule {
        Schedule {
            frames_sent: 0,
            frame_threshold: policy.random_frames(),
            frames_due_at: None,
            timer_due: deadline_after(now, policy.random_timer()),
        }
    }

    /// Counts one sent frame.
    pub(crate) fn count_sent(&mut self, now: Instant) {
        self.frames_sent = self.frames_sent.saturating_add(1);
        if self.frames_sent >= self.frame_threshold && self.frames_due_at.is_none() {
            self.frames_due_at = Some(now);
        }
    }

    pub(crate) fn frames_due_at(&self) -> Option<Instant> {
        self.frames_due_at
    }

    pub(crate) fn timer_due_at(&self) -> Instant {
        self.timer_due
    }

    pub(crate) fn timer_fired(&self, now: Instant) -> bool {
        now >= self.timer_due
    }

    /// New random timer from `now`.
    pub(crate) fn rearm_timer(&mut self, policy: &RenewalPolicy, now: Instant) {
        self.timer_due = deadline_after(now, policy.random_timer());
    }

    /// After a completed renewal: counter reset, new random thresholds.
    pub(crate) fn restart(&mut self, policy: &RenewalPolicy, now: Instant) {
        *self = Schedule::new(policy, now);
    }

    #[cfg(test)]
    pub(crate) fn frames_sent(&self) -> u32 {
        self.frames_sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_matches_protocol() {
        let policy = RenewalPolicy::default();
        assert_eq!((policy.min_frames, policy.max_frames), (50, 100));
        assert_eq!((policy.min_secs, policy.max_secs), (1800, 3600));
        assert_eq!(policy.hold, Duration::from_millis(200));
        assert_eq!(policy.validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_bad_ranges() {
        let base = RenewalPolicy::default();
        let zero = RenewalPolicy {
            min_frames: 0,
            ..base.clone()
        };
        assert_eq!(zero.validate(), Err(PolicyError::ZeroFrames));
        let frames = RenewalPolicy {
            min_frames: 10,
            max_frames: 9,
            ..base.clone()
        };
        assert_eq!(
            frames.validate(),
            Err(PolicyError::FrameRange { min: 10, max: 9 })
        );
        let secs = RenewalPolicy {
            min_secs: 10,
            max_secs: 9,
            ..base
        };
        assert_eq!(
            secs.validate(),
            Err(PolicyError::TimeRange { min: 10, max: 9 })
        );
    }

    #[test]
    fn thresholds_stay_in_range() {
        let policy = RenewalPolicy {
            min_frames: 5,
            max_frames: 8,
            min_secs: 10,
            max_secs: 20,
            hold: Duration::ZERO,
        };
        for _ in 0..200 {
            assert!((5..=8).contains(&policy.random_frames()));
            let timer = policy.random_timer();
            assert!(timer >= Duration::from_secs(10) && timer <= Duration::from_secs(20));
        }
    }

    #[test]
    fn invalid_policy_does_not_panic() {
        let policy = RenewalPolicy {
            min_frames: 9,
            max_frames: 0,
            min_secs: u64::MAX,
            max_secs: 3,
            hold: Duration::ZERO,
        };
        let now = Instant::now();
        let schedule = Schedule::new(&policy, now);
        assert!(schedule.frame_threshold >= 1);
        assert!(schedule.timer_due >= now);
    }

    #[test]
    fn frame_threshold_sets_due_time_once() {
        let policy = RenewalPolicy {
            min_frames: 2,
            max_frames: 2,
            ..RenewalPolicy::default()
        };
        let now = Instant::now();
        let mut schedule = Schedule::new(&policy, now);
        schedule.count_sent(now);
        assert_eq!(schedule.frames_due_at(), None);
        let later = now + Duration::from_secs(1);
        schedule.count_sent(later);
        schedule.count_sent(later + Duration::from_secs(1));
        assert_eq!(schedule.frames_due_at(), Some(later));
        schedule.restart(&policy, later);
        assert_eq!(schedule.frames_due_at(), None);
        assert_eq!(schedule.frames_sent(), 0);
    }
}
