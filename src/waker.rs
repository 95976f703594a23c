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

    /// Consumes pending wakes. Call it *before* draining what the wake was for,
    /// so that a wake racing with the drain is never lost.
    pub fn reset(&self) {
        self.pending.store(false, Ordering::SeqCst);
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
