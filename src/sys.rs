//! Syscall wrappers: the few libc calls outside the packet path that std has no API for,
//! each behind a small safe function (the interface of an address, the page size, the
//! terminal width, the user id). The packet path's own syscalls stay with their code in
//! `net::mmsg`, `net::wake`, `net::gate` and `net::fdlimit`. `unsafe` is denied everywhere
//! else in the crate (`[lints]` in Cargo.toml).

// This module exists to wrap libc calls: the one place outside `net` where `unsafe` may be.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv6Addr};

/// The index of the interface that holds IPv6 address `ip` (`getifaddrs`), `None` if no
/// interface does. Only IPv6 addresses are looked for.
pub fn interface_index_of(ip: IpAddr) -> io::Result<Option<u32>> {
    // SAFETY: getifaddrs/freeifaddrs are used as documented; every pointer is checked.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cur = list;
        let mut found = None;
        while !cur.is_null() {
            let a = (*cur).ifa_addr;
            if !a.is_null() && i32::from((*a).sa_family) == libc::AF_INET6 {
                let sin6 = &*(a as *const libc::sockaddr_in6);
                if IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)) == ip {
                    found = Some(libc::if_nametoindex((*cur).ifa_name));
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
        Ok(found)
    }
}

/// The size of a memory page in bytes (at least 1).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; a failure returns -1, clamped to 1.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64
}

/// The width in columns of the terminal on stdout, if stdout is one.
pub fn stdout_columns() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; on failure we ignore it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some(ws.ws_col as usize)
}

/// The real user id of the process.
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}
