//! Offline message expiry: a background thread that deletes offline
//! messages older than the configured age (`CHAT_OFFLINE_MAX_AGE`).
//!
//! It runs on its own thread with its own store calls, so nothing waits for
//! it: the store deletes in small batches ([`crate::store::PURGE_BATCH`]
//! rows a statement), and connection threads and the dispatcher never touch
//! this thread. A message purged while it is being delivered is still
//! delivered (deleting a row that is already gone is not an error).

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{info, warn};

use crate::store::Store;

/// Longest pause between two purges.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest pause between two purges (for tiny ages in tests).
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// The running purge thread; dropping this stops it (after the purge in
/// progress, if any; nobody waits for it).
pub struct Expiry {
    _stop: Sender<()>,
}

/// How often a queue with messages of at most `max_age` is purged: a tenth
/// of the age, between [`MIN_INTERVAL`] and [`MAX_INTERVAL`].
pub fn purge_interval(max_age: Duration) -> Duration {
    (max_age / 10).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

impl Expiry {
    /// Starts the thread: one purge at once, then one every
    /// [`purge_interval`].
    pub fn start(store: Arc<dyn Store>, max_age: Duration) -> io::Result<Expiry> {
        let (stop, stopped) = crossbeam_channel::bounded(0);
        thread::Builder::new()
            .name("offline-expiry".into())
            .spawn(move || run(store.as_ref(), max_age, &stopped))?;
        info!(
            "offline messages expire after {}",
            crate::admin::format_age(max_age.as_secs())
        );
        Ok(Expiry { _stop: stop })
    }
}

fn run(store: &dyn Store, max_age: Duration, stopped: &Receiver<()>) {
    let interval = purge_interval(max_age);
    loop {
        match store.purge_offline_older_than(max_age) {
            Ok(0) => {}
            Ok(purged) => info!("purged {purged} expired offline messages"),
            Err(error) => warn!("offline expiry: {error}"),
        }
        match stopped.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_a_tenth_of_the_age_within_bounds() {
        assert_eq!(
            purge_interval(Duration::from_secs(30 * 86_400)),
            MAX_INTERVAL
        );
        assert_eq!(
            purge_interval(Duration::from_secs(600)),
            Duration::from_secs(60)
        );
        assert_eq!(purge_interval(Duration::from_secs(1)), MIN_INTERVAL);
    }
}
