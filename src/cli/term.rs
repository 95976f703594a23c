//! The few terminal and clock services the client needs, through libc:
//! termios modes (no echo for passwords, non-canonical input for the chat)
//! restored on drop, polling stdin with a timeout, the terminal width, and
//! the local time as HH:MM.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Standard input's file descriptor.
pub const STDIN: i32 = 0;
/// Standard output's file descriptor.
pub const STDOUT: i32 = 1;

/// Is `fd` a terminal?
pub fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// A changed terminal mode; the previous one comes back on drop.
pub struct TermMode {
    fd: i32,
    saved: libc::termios,
}

impl TermMode {
    fn change(fd: i32, edit: impl FnOnce(&mut libc::termios)) -> io::Result<TermMode> {
        // SAFETY: termios is plain old data; tcgetattr fills it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to write into.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut mode = saved;
        edit(&mut mode);
        // SAFETY: `mode` is a valid termios made from the current one.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &mode) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TermMode { fd, saved })
    }

    /// Input is not echoed (passwords); lines are still edited by the tty.
    pub fn no_echo(fd: i32) -> io::Result<TermMode> {
        Self::change(fd, |t| t.c_lflag &= !libc::ECHO)
    }

    /// Keys arrive one by one, unechoed, Ctrl-C and Ctrl-Z included (the
    /// chat's line editor handles them).
    pub fn keys(fd: i32) -> io::Result<TermMode> {
        Self::change(fd, |t| {
            t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
            t.c_iflag &= !libc::IXON;
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
        })
    }
}

impl Drop for TermMode {
    fn drop(&mut self) {
        // SAFETY: restores the termios read from this descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Waits up to `timeout` for input on `fd` and reads what is there:
/// `None` if nothing came, an empty vector at end of input.
pub fn poll_read(fd: i32, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(None)
        } else {
            Err(e)
        };
    }
    if n == 0 {
        return Ok(None);
    }
    let mut buf = [0u8; 1024];
    // SAFETY: reads at most buf.len() bytes into buf.
    let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(buf[..got as usize].to_vec()))
}

/// The width of the terminal on `fd`, if it is one.
pub fn width(fd: i32) -> Option<usize> {
    // SAFETY: winsize is plain old data; TIOCGWINSZ fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: `ws` is a valid winsize to write into.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// `time` in the local time zone, as HH:MM.
pub fn local_hhmm(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as libc::time_t;
    // SAFETY: tm is plain old data; localtime_r fills it from `secs`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return "--:--".to_string();
    }
    format!("{:02}:{:02}", tm.tm_hour, tm.tm_min)
}

/// The local time now, as HH:MM.
pub fn now_hhmm() -> String {
    local_hhmm(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_look_like_hh_mm() {
        let t = now_hhmm();
        assert_eq!(t.len(), 5, "{t}");
        assert_eq!(&t[2..3], ":");
        assert!(t.chars().filter(char::is_ascii_digit).count() == 4, "{t}");
    }

    #[test]
    fn polling_a_pipe_reads_data_then_end() {
        let mut fds = [0; 2];
        // SAFETY: a valid array of two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        assert_eq!(poll_read(fds[0], Duration::from_millis(1)).unwrap(), None);
        // SAFETY: writes two bytes from a valid buffer, then closes.
        unsafe {
            libc::write(fds[1], b"hi".as_ptr().cast(), 2);
            libc::close(fds[1]);
        }
        let got = poll_read(fds[0], Duration::from_millis(100)).unwrap();
        assert_eq!(got.as_deref(), Some(&b"hi"[..]));
        let end = poll_read(fds[0], Duration::from_millis(100)).unwrap();
        assert_eq!(end.as_deref(), Some(&b""[..]));
        // SAFETY: closes our descriptor.
        unsafe { libc::close(fds[0]) };
        assert!(!is_tty(fds[0]));
    }
}
