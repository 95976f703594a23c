//! A per-thread wake-up signal that lets the dispatcher rouse a connection
//! thread sleeping in `ppoll(2)` on its socket, without a descriptor of its
//! own: each connection holds one descriptor (its socket), not two.
//!
//! ## How a wake reaches the thread
//! The thread [`Waker::attach`]es to its waker: that blocks [`WAKE_SIGNAL`]
//! (`SIGURG`) on the thread and records its thread id. [`Waker::wake`] sends
//! the signal to that thread with `tgkill(2)`. Since the signal is blocked,
//! it is only ever delivered inside [`Attached::wait`], whose `ppoll` sigmask
//! is the thread's mask minus the signal: `ppoll` unblocks it atomically, so
//! a wake sent while the thread was busy stays pending and makes the next
//! `ppoll` return `EINTR` at once. `EINTR` means "woken". A `ppoll` that
//! returns for a ready descriptor or a timeout leaves a pending signal
//! pending (the kernel restores the mask before delivering it), for the next
//! `ppoll`. So a signal is consumed only by a wait that reports "woken".
//!
//! The signal has a no-op handler, installed once per process with
//! `SA_RESTART` (a signal whose disposition is "ignore" would not interrupt
//! `ppoll`). `SIGURG`'s default disposition is "ignore" too, so a stray one
//! can never kill the process, and the handler makes one harmless on any
//! other thread (restarted system calls). Only attached threads are ever
//! sent the signal.
//!
//! ## Coalescing and no lost wake-up
//! While a wake is pending (`pending` set and not yet [`Waker::reset`]),
//! further wakes cost no system call. The connection thread runs
//! reset → drain → wait, and resets again only after a wait that reported
//! "woken" (draining on every turn). Take any wake W, whose item was queued
//! before it:
//! - W finds `pending` clear (and sets it): some reset R cleared it
//!   before, and W signals after R. The signal stays blocked until the
//!   thread's next wait, which comes after R's drain; that wait (or a later
//!   one, if the socket was ready first) reports "woken", then the thread
//!   resets and drains, after W's item was queued.
//! - W finds `pending` set: the wake W0 that set it is signalling as above,
//!   and W's swap comes before the reset that clears the flag, which W0's
//!   signal guarantees; the drain after that reset takes W's item.
//!
//! Unlike the eventfd this replaced (whose read had to come before clearing
//! the flag), a reset here consumes nothing: a signal of a wake that was
//! already drained only makes the next wait return at once (a spare turn).
//!
//! A wake while no thread is attached only sets `pending`; [`Waker::attach`]
//! then signals the attaching thread itself, so its first wait reports
//! "woken" at once.
//!
//! ## Thread id reuse
//! A thread id can be reused once its thread has exited, so no signal may be
//! sent to it after it detached. [`Attached`]'s drop detaches: it clears the
//! recorded id, then waits until no `wake` is between reading the id and
//! sending the signal (`in_flight`). A `wake` that starts after the id was
//! cleared reads 0 and sends nothing (all these accesses are `SeqCst`).

use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The signal that wakes an attached thread.
pub const WAKE_SIGNAL: libc::c_int = libc::SIGURG;

/// One connection's wake-up signal.
#[derive(Debug, Default)]
pub struct Waker {
    pending: AtomicBool,
    /// The attached thread's id; 0 when none is attached.
    tid: AtomicI32,
    /// Wakes between reading `tid` and sending the signal.
    in_flight: AtomicUsize,
}

/// Why a thread could not attach to a waker.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("cannot install the wake signal's handler: {0}")]
    Handler(io::Error),
    #[error("cannot block the wake signal: {0}")]
    Mask(io::Error),
    #[error("another thread is attached to this waker")]
    Taken,
}

impl Waker {
    /// A waker with no thread attached and no wake pending.
    pub fn new() -> Waker {
        Waker::default()
    }

    /// Signals the attached thread unless a wake is already pending; with no
    /// thread attached, only marks the wake pending.
    pub fn wake(&self) {
        if self.pending.swap(true, Ordering::SeqCst) {
            return;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let tid = self.tid.load(Ordering::SeqCst);
        if tid != 0 {
            signal_thread(tid);
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Ends the pending wake, if any: the next wake signals again. Call it
    /// *before* draining what the wake was for (see the module docs). A
    /// signal of the ended wake that is still pending at the thread only
    /// makes its next wait return at once (one spare turn).
    pub fn reset(&self) {
        self.pending.store(false, Ordering::SeqCst);
    }

    /// Makes the calling thread the one this waker signals, until the
    /// returned guard is dropped (on the same thread). Blocks
    /// [`WAKE_SIGNAL`] on the thread for good (it stays blocked after the
    /// guard is dropped). If a wake is already pending, the thread's first
    /// [`Attached::wait`] reports it.
    pub fn attach(&self) -> Result<Attached<'_>, AttachError> {
        install_handler().map_err(AttachError::Handler)?;
        let wait_mask = block_wake_signal().map_err(AttachError::Mask)?;
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        self.tid
            .compare_exchange(0, tid, Ordering::SeqCst, Ordering::SeqCst)
            .map_err(|_| AttachError::Taken)?;
        // A wake that read no thread id set `pending` before this load.
        if self.pending.load(Ordering::SeqCst) {
            signal_thread(tid);
        }
        Ok(Attached {
            waker: self,
            wait_mask,
            _thread: PhantomData,
        })
    }

    /// Forgets the attached thread and waits until no wake can still send
    /// it the signal.
    fn detach(&self) {
        self.tid.store(0, Ordering::SeqCst);
        let mut spins = 0u32;
        while self.in_flight.load(Ordering::SeqCst) != 0 {
            // A wake is inside one tgkill: short, unless its thread was
            // preempted there.
            if spins < 64 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// A thread attached to a [`Waker`]; dropping it detaches the thread.
/// Not `Send`: it must be dropped on the thread that attached.
#[derive(Debug)]
pub struct Attached<'a> {
    waker: &'a Waker,
    /// The thread's signal mask without [`WAKE_SIGNAL`], for `ppoll`.
    wait_mask: libc::sigset_t,
    /// Not `Send`: the guard belongs to the thread that attached.
    _thread: PhantomData<*const ()>,
}

impl Attached<'_> {
    /// Sleeps in `ppoll` on `fds` until one is ready, the waker fires, or
    /// `timeout` passes (`None`: no timeout). Returns true when woken (then
    /// no `revents` are set); otherwise `revents` tell what is ready (none
    /// on a timeout). Another handled signal also counts as a wake: a spare
    /// turn, never a lost one.
    pub fn wait(&self, fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<bool> {
        let timespec = timeout.map(|timeout| libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            // Below 10^9: fits any c_long.
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        });
        let timespec_ptr = timespec
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` is a live slice of initialised pollfd structs, the
        // timespec (if any) and the mask live across the call.
        let ready = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timespec_ptr,
                &self.wait_mask,
            )
        };
        if ready >= 0 {
            return Ok(false);
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => Ok(true),
            _ => Err(error),
        }
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.waker.detach();
    }
}

/// Sends [`WAKE_SIGNAL`] to thread `tid` of this process. A failure (the
/// thread is gone, impossible while it is attached) loses nothing: the
/// wake stays pending.
fn signal_thread(tid: libc::pid_t) {
    // SAFETY: tgkill takes no pointers; it can only reach a thread of this
    // process, whose handler for the signal is a no-op.
    unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::c_long::from(libc::getpid()),
            libc::c_long::from(tid),
            libc::c_long::from(WAKE_SIGNAL),
        )
    };
}

/// The wake signal's no-op handler: its only effect is to end `ppoll`.
extern "C" fn on_wake_signal(_: libc::c_int) {}

/// Installs the no-op handler for [`WAKE_SIGNAL`], once per process.
fn install_handler() -> io::Result<()> {
    static INSTALLED: OnceLock<Option<i32>> = OnceLock::new();
    let failure = INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed sigaction is valid; we set the handler, an empty
        // mask and the flags, and pass valid pointers to sigaction.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_wake_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(WAKE_SIGNAL, &action, std::ptr::null_mut()) != 0 {
                return io::Error::last_os_error().raw_os_error();
            }
        }
        None
    });
    match failure {
        Some(errno) => Err(io::Error::from_raw_os_error(*errno)),
        None => Ok(()),
    }
}

/// Blocks [`WAKE_SIGNAL`] on the calling thread; returns the thread's mask
/// without it (the mask to wait with).
fn block_wake_signal() -> io::Result<libc::sigset_t> {
    // SAFETY: the sets are initialised by sigemptyset before use and
    // pthread_sigmask only reads `wake` and writes `old`.
    unsafe {
        let mut wake: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut wake);
        libc::sigaddset(&mut wake, WAKE_SIGNAL);
        let mut old: libc::sigset_t = std::mem::zeroed();
        let status = libc::pthread_sigmask(libc::SIG_BLOCK, &wake, &mut old);
        if status != 0 {
            return Err(io::Error::from_raw_os_error(status));
        }
        libc::sigdelset(&mut old, WAKE_SIGNAL);
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::Instant;

    /// Long enough that only a lost wake ends a wait by timing out.
    const LONG: Duration = Duration::from_secs(5);
    /// A wait that should not end woken.
    const SHORT: Duration = Duration::from_millis(50);

    /// Waits on no descriptor: true when woken.
    fn woken_within(attached: &Attached<'_>, timeout: Duration) -> bool {
        attached.wait(&mut [], Some(timeout)).unwrap()
    }

    /// Takes a wake signal pending at this thread, if any; true if one was.
    fn take_pending_signal() -> bool {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: the set is initialised before use; the pointers are live.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, WAKE_SIGNAL);
            libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == WAKE_SIGNAL
        }
    }

    /// Many wakes racing with reset → drain → wait on another thread: a
    /// lost wake-up shows as a wait that timed out with items still queued.
    /// The producer often waits until the consumer has seen its items, so
    /// its next wake lands while the consumer heads for its wait.
    #[test]
    fn no_wake_is_lost_under_races() {
        let waker = Arc::new(Waker::new());
        let queued = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        let total = 200_000;
        let consumer = {
            let (waker, queued, seen) = (waker.clone(), queued.clone(), seen.clone());
            std::thread::spawn(move || {
                let attached = waker.attach().unwrap();
                let mut waits = 0u64;
                loop {
                    waker.reset();
                    let drained = queued.load(Ordering::SeqCst);
                    seen.store(drained, Ordering::SeqCst);
                    if drained == total {
                        return waits;
                    }
                    let woken = woken_within(&attached, LONG);
                    let still_queued = queued.load(Ordering::SeqCst) > drained;
                    assert!(woken || !still_queued, "a wake was lost");
                    waits += 1;
                }
            })
        };
        for n in 1..=total {
            queued.fetch_add(1, Ordering::SeqCst);
            waker.wake();
            while n % 4 == 0 && seen.load(Ordering::SeqCst) < n && !consumer.is_finished() {
                std::hint::spin_loop();
            }
        }
        let waits = consumer.join().unwrap();
        assert!(waits >= total / 4, "the consumer waited only {waits} times");
    }

    /// A wake before the thread attached is seen by its first wait; a
    /// reset ends it; two wakes before a wait are one.
    #[test]
    fn a_wake_before_attach_is_seen_at_once() {
        let waker = Arc::new(Waker::new());
        waker.wake();
        let thread = {
            let waker = waker.clone();
            std::thread::spawn(move || {
                let attached = waker.attach().unwrap();
                let started = Instant::now();
                assert!(woken_within(&attached, LONG), "early wake lost");
                assert!(started.elapsed() < SHORT, "early wake seen late");
                waker.reset();
                assert!(!woken_within(&attached, SHORT), "woken with no wake");
                waker.wake();
                waker.wake();
                assert!(woken_within(&attached, LONG), "wake after reset lost");
                assert!(!woken_within(&attached, SHORT), "one wake seen twice");
            })
        };
        thread.join().unwrap();
    }

    /// A ready descriptor is reported first and leaves a pending wake
    /// pending for the next wait (the session loop relies on it).
    #[test]
    fn a_ready_socket_leaves_the_wake_pending() {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let (mut near, mut far) = std::os::unix::net::UnixStream::pair().unwrap();
        let waker = Waker::new();
        let attached = waker.attach().unwrap();
        far.write_all(b"x").unwrap();
        waker.wake();
        let mut fds = [libc::pollfd {
            fd: near.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert!(!attached.wait(&mut fds, Some(LONG)).unwrap());
        assert_ne!(fds[0].revents & libc::POLLIN, 0, "socket not readable");
        near.read_exact(&mut [0u8; 1]).unwrap();
        fds[0].revents = 0;
        assert!(attached.wait(&mut fds, Some(LONG)).unwrap(), "wake lost");
    }

    /// Wakers hammering while the thread attaches and detaches over and
    /// over: once detached, no signal reaches the thread (one sent while it
    /// was attached is taken right after the detach).
    #[test]
    fn no_signal_reaches_a_detached_thread() {
        let waker = Arc::new(Waker::new());
        let stop = Arc::new(AtomicBool::new(false));
        let hammers: Vec<_> = (0..2)
            .map(|_| {
                let (waker, stop) = (waker.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        waker.wake();
                        waker.reset();
                    }
                })
            })
            .collect();
        let rounds = 20_000;
        let mut late = 0;
        for _ in 0..rounds {
            let attached = waker.attach().unwrap();
            let _ = woken_within(&attached, Duration::ZERO);
            drop(attached);
            take_pending_signal();
            for _ in 0..200 {
                std::hint::spin_loop();
            }
            late += usize::from(take_pending_signal());
        }
        stop.store(true, Ordering::Relaxed);
        for hammer in hammers {
            hammer.join().unwrap();
        }
        assert_eq!(late, 0, "signals sent after the thread detached");
    }

    #[test]
    fn a_second_thread_cannot_attach() {
        let waker = Arc::new(Waker::new());
        let attached = waker.attach().unwrap();
        let other = waker.clone();
        let refused = std::thread::spawn(move || matches!(other.attach(), Err(AttachError::Taken)));
        assert!(refused.join().unwrap());
        drop(attached);
        let other = waker.clone();
        let accepted = std::thread::spawn(move || other.attach().is_ok());
        assert!(accepted.join().unwrap(), "attach after detach refused");
    }
}
