//! A wake-up file descriptor (Linux `eventfd`) that lets the dispatcher rouse a
//! connection thread sleeping in `poll(2)` on its socket. Wakes are coalesced:
//! while one is pending and not yet consumed, further wakes cost no syscall.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// One connection's wake-up signal.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
    pending: AtomicBool,
}

impl Waker {
    /// Creates a non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd takes no pointers; a negative result is an error.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Waker {
            fd,
            pending: AtomicBool::new(false),
        })
    }

    /// Makes the descriptor readable unless a wake is already pending.
    pub fn wake(&self) {
        if self.pending.swap(true, Ordering::SeqCst) {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own. A
        // failure (counter overflow, impossible here) only loses a wake that
        // is already pending.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Consumes pending wakes. Call it *before* draining what the wake was for.
    ///
    /// The descriptor is read first and the flag cleared after: a wake that
    /// lands in between finds the flag still set and writes nothing, but its
    /// item was queued before it and the drain that follows takes it. (The
    /// other order, flag first, lets such a wake's write be swallowed by the
    /// read while the flag stays set, and every later wake is then skipped:
    /// a lost wake-up that left a connection asleep with messages queued.)
    pub fn reset(&self) {
        let mut counter: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN when nothing is
        // pending is expected and harmless.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut counter as *mut u64).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
        self.pending.store(false, Ordering::SeqCst);
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(waker: &Waker) -> bool {
        let mut poll = libc::pollfd {
            fd: waker.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready == 1
    }

    /// Many wakes racing with reset-then-drain: every item is seen by a
    /// drain that follows a wake or a readable descriptor, none is stranded.
    #[test]
    fn no_wake_is_lost_under_races() {
        use std::sync::atomic::AtomicU64;
        use std::sync::Arc;
        let waker = Arc::new(Waker::new().unwrap());
        let queued = Arc::new(AtomicU64::new(0));
        let total = 200_000;
        let producer = {
            let (waker, queued) = (waker.clone(), queued.clone());
            std::thread::spawn(move || {
                for _ in 0..total {
                    queued.fetch_add(1, Ordering::SeqCst);
                    waker.wake();
                }
            })
        };
        let mut drained = 0;
        while drained < total {
            waker.reset();
            drained = queued.load(Ordering::SeqCst);
            if drained < total {
                let mut poll = libc::pollfd {
                    fd: waker.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; a lost wake shows as this timeout.
                let ready = unsafe { libc::poll(&mut poll, 1, 2000) };
                let still_queued = queued.load(Ordering::SeqCst) > drained;
                assert!(ready == 1 || !still_queued, "a wake was lost");
            }
        }
        producer.join().unwrap();
    }

    #[test]
    fn wake_makes_readable_and_reset_clears() {
        let waker = Waker::new().unwrap();
        assert!(!readable(&waker));
        waker.wake();
        waker.wake();
        assert!(readable(&waker));
        waker.reset();
        assert!(!readable(&waker));
        waker.wake();
        assert!(readable(&waker), "a wake after reset must signal again");
    }
}
