//! Taking a connection from the pool without a round trip.
//!
//! The `mysql` pool's health check sends `COM_PING` before every checkout:
//! one round trip, and one wake-up of a database thread, per statement (a
//! login storm spent a tenth of its rate on them, BENCHMARKS.md run 149).
//! The pool's check is off; instead:
//! - at checkout, the socket is peeked without blocking: a connection the
//!   server closed (a restart, `wait_timeout`, `KILL`) reads as end of
//!   file, and one holding bytes nobody asked for (the late answer of a
//!   timed-out statement) is out of step; either is dropped and the next
//!   one taken;
//! - a loan whose statement lost its connection (see
//!   [`note_connection_lost`]: a timeout, a reset) drops the connection
//!   when it ends, instead of handing it to the next caller: a connection
//!   cut off without a word (no end of file to see) would otherwise fail
//!   every statement it is given.
//!
//! A connection is dropped by shutting its socket down and asking the pool
//! for a reset on return: the reset fails, and the pool then forgets the
//! connection and frees its slot.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};

use ::mysql::PooledConn;

thread_local! {
    /// Set when a statement on this thread lost its connection; a loan
    /// lives on one thread, from checkout to drop.
    static CONNECTION_LOST: Cell<bool> = const { Cell::new(false) };
}

/// Records that a statement of the current loan lost its connection.
pub(super) fn note_connection_lost() {
    CONNECTION_LOST.with(|flag| flag.set(true));
}

/// A pooled connection on loan; see the module documentation.
pub(super) struct Loan(PooledConn);

impl Loan {
    /// The connection, if its socket shows it is still usable; otherwise
    /// `None`, and the pool drops it.
    pub(super) fn check_out(mut conn: PooledConn) -> Option<Loan> {
        if socket_idle(&conn) {
            CONNECTION_LOST.with(|flag| flag.set(false));
            Some(Loan(conn))
        } else {
            discard(&mut conn);
            None
        }
    }
}

impl Deref for Loan {
    type Target = PooledConn;

    fn deref(&self) -> &PooledConn {
        &self.0
    }
}

impl DerefMut for Loan {
    fn deref_mut(&mut self) -> &mut PooledConn {
        &mut self.0
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        if CONNECTION_LOST.with(|flag| flag.replace(false)) {
            discard(&mut self.0);
        }
    }
}

/// Makes the pool drop `conn` when it comes back (see the module docs).
fn discard(conn: &mut PooledConn) {
    shut_down(conn);
    conn.reset_connection(true);
}

/// Whether the socket has nothing to read and is not at end of file: the
/// state of a connection that finished its last statement.
#[cfg(unix)]
fn socket_idle(conn: &PooledConn) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: peeks at most one byte into a local buffer, on a descriptor
    // the connection owns for as long as `conn` is borrowed; MSG_DONTWAIT
    // never blocks, MSG_PEEK consumes nothing.
    let read = unsafe {
        libc::recv(
            conn.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    read < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

#[cfg(not(unix))]
fn socket_idle(_conn: &PooledConn) -> bool {
    true
}

#[cfg(unix)]
fn shut_down(conn: &PooledConn) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on a descriptor the connection owns; it stays
    // open (the connection closes it when dropped), only unusable.
    unsafe {
        libc::shutdown(conn.as_raw_fd(), libc::SHUT_RDWR);
    }
}

#[cfg(not(unix))]
fn shut_down(_conn: &PooledConn) {}
