//! Per-connection command rate limit after login (README.md, "Limits and security"): a token
//! bucket for all chat commands and a smaller one for typing notices. Pure:
//! time is passed in, so the unit tests drive a fake clock.
//!
//! Over the limit a command is dropped; the first time the client is told
//! (`ERROR` "rate limit exceeded"), and if it sends more than `strikes`
//! further commands while over, the connection is closed. The strike count
//! starts again once the client has slowed down (a command accepted with
//! the bucket at least half full).

use std::time::Instant;

/// Rate and burst of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketSettings {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Most tokens held (the largest burst).
    pub burst: f64,
}

/// A token bucket, full at start.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    settings: BucketSettings,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(settings: BucketSettings, now: Instant) -> TokenBucket {
        TokenBucket {
            settings,
            tokens: settings.burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.settings.per_sec).min(self.settings.burst);
        self.last = now;
    }

    /// Takes one token if there is one; returns whether it did and whether
    /// the bucket was at least half full before.
    pub fn take(&mut self, now: Instant) -> (bool, bool) {
        self.refill(now);
        let half_full = self.tokens >= self.settings.burst / 2.0;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            (true, half_full)
        } else {
            (false, false)
        }
    }
}

/// Settings of [`CommandRate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSettings {
    pub commands: BucketSettings,
    pub typing: BucketSettings,
    /// Commands over the limit after the notice before the close.
    pub strikes: u32,
}

/// What to do with one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: handle it.
    Allow,
    /// Over the limit for the first time: drop it and tell the client.
    Notify,
    /// Over again: drop it silently.
    Drop,
    /// Over too often: close the connection.
    Close,
}

/// The rate state of one connection.
#[derive(Debug, Clone)]
pub struct CommandRate {
    commands: TokenBucket,
    typing: TokenBucket,
    strikes_allowed: u32,
    /// `None`: not over the limit since the client last slowed down.
    strikes: Option<u32>,
}

impl CommandRate {
    pub fn new(settings: RateSettings, now: Instant) -> CommandRate {
        CommandRate {
            commands: TokenBucket::new(settings.commands, now),
            typing: TokenBucket::new(settings.typing, now),
            strikes_allowed: settings.strikes,
            strikes: None,
        }
    }

    /// Accounts one command (`typing`: a typing notice) at `now`.
    pub fn check(&mut self, typing: bool, now: Instant) -> Verdict {
        let bucket = if typing {
            &mut self.typing
        } else {
            &mut self.commands
        };
        match (bucket.take(now), self.strikes) {
            ((true, half_full), _) => {
                if half_full {
                    self.strikes = None;
                }
                Verdict::Allow
            }
            ((false, _), None) => {
                self.strikes = Some(0);
                Verdict::Notify
            }
            ((false, _), Some(strikes)) => {
                let strikes = strikes.saturating_add(1);
                self.strikes = Some(strikes);
                if strikes > self.strikes_allowed {
                    Verdict::Close
                } else {
                    Verdict::Drop
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> RateSettings {
        RateSettings {
            commands: BucketSettings {
                per_sec: 10.0,
                burst: 20.0,
            },
            typing: BucketSettings {
                per_sec: 1.0,
                burst: 2.0,
            },
            strikes: 3,
        }
    }

    #[test]
    fn burst_then_notice_then_close() {
        let now = Instant::now();
        let mut rate = CommandRate::new(settings(), now);
        for _ in 0..20 {
            assert_eq!(rate.check(false, now), Verdict::Allow);
        }
        assert_eq!(rate.check(false, now), Verdict::Notify);
        for _ in 0..3 {
            assert_eq!(rate.check(false, now), Verdict::Drop);
        }
        assert_eq!(rate.check(false, now), Verdict::Close);
    }

    #[test]
    fn refills_at_the_rate_and_slowing_down_forgives() {
        let start = Instant::now();
        let mut rate = CommandRate::new(settings(), start);
        for _ in 0..20 {
            rate.check(false, start);
        }
        assert_eq!(rate.check(false, start), Verdict::Notify);
        // 100 ms later: one token.
        let later = start + Duration::from_millis(100);
        assert_eq!(rate.check(false, later), Verdict::Allow);
        assert_eq!(rate.check(false, later), Verdict::Drop);
        // A second later the bucket is half full: strikes start again.
        let calm = later + Duration::from_secs(1);
        assert_eq!(rate.check(false, calm), Verdict::Allow);
        for _ in 0..9 {
            assert_eq!(rate.check(false, calm), Verdict::Allow);
        }
        assert_eq!(rate.check(false, calm), Verdict::Notify);
    }

    #[test]
    fn typing_has_its_own_bucket() {
        let now = Instant::now();
        let mut rate = CommandRate::new(settings(), now);
        assert_eq!(rate.check(true, now), Verdict::Allow);
        assert_eq!(rate.check(true, now), Verdict::Allow);
        assert_eq!(rate.check(true, now), Verdict::Notify);
        assert_eq!(rate.check(false, now), Verdict::Allow);
    }
}
