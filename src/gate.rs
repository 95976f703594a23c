//! [`Gate`]: bounds how many connection threads do one kind of heavy work
//! at the same time.
//!
//! - argon2 (`Services::hash_gate`): at most `cores` hashes at once and a
//!   short queue; anyone beyond is answered `SERVER_ERROR` "server busy".
//!   Without it, a burst of password logins would run one 19 MiB argon2 per
//!   connection thread at the same time.
//! - sealing a user list (`Services::list_gate`): every presence broadcast
//!   wakes every connection thread; unbounded, thousands of sealed copies of
//!   a list of hundreds of KiB would be in memory together. Nobody is
//!   refused: the queue is unbounded, and a turn never waits for a peer.

use std::sync::{Condvar, Mutex, MutexGuard};

/// At most `max_running` holders at once; up to `max_waiting` more callers
/// wait for a turn, anyone beyond is refused at once.
pub struct Gate {
    state: Mutex<GateState>,
    freed: Condvar,
    max_running: usize,
    max_waiting: usize,
}

#[derive(Default)]
struct GateState {
    running: usize,
    waiting: usize,
}

/// A turn; the next waiter goes when it is dropped.
pub struct Permit<'a> {
    gate: &'a Gate,
}

impl Gate {
    /// A gate for `max_running` holders at once (at least one) and
    /// `max_waiting` waiters.
    pub fn new(max_running: usize, max_waiting: usize) -> Gate {
        Gate {
            state: Mutex::new(GateState::default()),
            freed: Condvar::new(),
            max_running: max_running.max(1),
            max_waiting,
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for a turn; `None` when the waiting queue is full.
    pub fn enter(&self) -> Option<Permit<'_>> {
        let mut state = self.lock();
        if state.running >= self.max_running {
            if state.waiting >= self.max_waiting {
                return None;
            }
            state.waiting += 1;
            while state.running >= self.max_running {
                state = self
                    .freed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            state.waiting -= 1;
        }
        state.running += 1;
        Some(Permit { gate: self })
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.gate.lock().running -= 1;
        self.gate.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;
    use std::time::Duration;

    #[test]
    fn gate_runs_at_most_n_and_refuses_beyond_the_queue() {
        let gate = Gate::new(1, 1);
        let first = gate.enter().expect("first runs");
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| gate.enter().map(drop).is_some());
            while gate.lock().waiting == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(gate.enter().is_none(), "queue of one is full");
            drop(first);
            assert!(waiter.join().unwrap(), "the waiter got its turn");
        });
        assert!(gate.enter().is_some());
    }

    #[test]
    fn an_unbounded_queue_serves_everyone_never_more_than_n_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let gate = Gate::new(2, usize::MAX);
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let served = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..16 {
                scope.spawn(|| {
                    let _turn = gate.enter().expect("never refused");
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(2));
                    inside.fetch_sub(1, Ordering::SeqCst);
                    served.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(served.load(Ordering::SeqCst), 16);
        assert!(most.load(Ordering::SeqCst) <= 2);
    }
}
