//! The process's file descriptor limit (RLIMIT_NOFILE): raised to the hard limit at start,
//! and the share of it that TCP listeners may use.
//!
//! Why: every connection, socket, event log segment and child pipe is a descriptor. With
//! the usual soft limit of 1024 a flood of half-open API connections used them all up, and
//! then `quoll ctl`, the event log and RTSP inputs failed with EMFILE. The soft limit is
//! raised to the hard one (systemd's default hard limit is 524 288; a process may raise its
//! own soft limit up to it without privileges), and the listeners' connection caps are
//! derived so that a reserve always stays free for everything else (`net::listener`).
//!
//! The only `unsafe` of this concern lives here: three libc calls on a plain struct.

// Wraps syscalls (see the module doc): one of the few modules where `unsafe` may be.
#![allow(unsafe_code)]

use std::io;

/// The limit before and after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit found at start.
    pub was: u64,
    /// The soft limit now in force.
    pub soft: u64,
    pub hard: u64,
}

/// Raise the soft RLIMIT_NOFILE to the hard limit. An unlimited hard limit is not taken
/// literally: the soft limit goes to the kernel's `fs.nr_open` ceiling instead (setrlimit
/// refuses anything above it), read from /proc, or 1 048 576 when that cannot be read.
pub fn raise_nofile() -> io::Result<FdLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let was = wide(lim.rlim_cur);
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        nr_open().unwrap_or(1 << 20) as libc::rlim_t
    } else {
        lim.rlim_max
    };
    if lim.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct, which we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = target;
    }
    Ok(FdLimit {
        was,
        soft: wide(lim.rlim_cur),
        hard: wide(lim.rlim_max),
    })
}

/// `rlim_t` is 64 bits on the 64-bit targets and 32 on armv7: a cast that is a no-op here.
/// The soft RLIMIT_NOFILE now (after [`raise_nofile`], what it left); unlimited when it
/// cannot be read.
pub fn soft_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return u64::MAX;
    }
    wide(lim.rlim_cur)
}

#[allow(clippy::unnecessary_cast)]
fn wide(v: libc::rlim_t) -> u64 {
    v as u64
}

fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Descriptors kept out of the listeners' reach: the control socket, the event log, stdio,
/// the runtime's epoll and timer descriptors and RTSP/ffmpeg children need some whatever the
/// flows (`BASE`), and each flow the budget allows needs its input's sockets (an RTSP input
/// holds a TCP and up to four RTP/RTCP sockets, an SRT input two legs) and one per output,
/// doubled for the moment a restart holds the old and the new socket.
pub fn reserve(max_flows: usize, max_outputs_per_flow: usize) -> u64 {
    const BASE: u64 = 128;
    const PER_FLOW: u64 = 8;
    const PER_OUTPUT: u64 = 2;
    BASE + max_flows as u64 * (PER_FLOW + PER_OUTPUT * max_outputs_per_flow as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit_and_is_idempotent() {
        let first = raise_nofile().unwrap();
        assert!(first.soft >= first.was);
        assert!(first.soft <= first.hard || first.hard == wide(libc::RLIM_INFINITY));
        let again = raise_nofile().unwrap();
        assert_eq!(again.was, first.soft);
        assert_eq!(again.soft, first.soft);
    }

    #[test]
    fn the_reserve_grows_with_the_budget() {
        assert_eq!(reserve(0, 0), 128);
        // A Pi 4: 16 flows of 8 outputs.
        assert_eq!(reserve(16, 8), 128 + 16 * 24);
        assert!(reserve(64, 16) > reserve(16, 8));
    }
}
