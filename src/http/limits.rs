//! The `server` block read into the listener's limits (`net::listener::Limits`).
//!
//! Here and not in `net`: `config` imports `net` (the outbound allow list), so `net` must
//! not import `config`; the API server is the one whose block this is.

use std::time::Duration;

use crate::config::ServerConfig;
use crate::net::listener::{Limits, MIN_CONNECTIONS};

impl Limits {
    /// The `server` block's values (defaults for the absent ones), with the total capped to
    /// the descriptors the process can spare: `fds` (the soft RLIMIT_NOFILE) minus
    /// `reserve` (`net::fdlimit::reserve`). Also returns whether that cap lowered what the
    /// config asked for, so the daemon can say so.
    pub fn from_server(s: &ServerConfig, fds: u64, reserve: u64) -> (Limits, bool) {
        let wanted = s
            .max_connections
            .unwrap_or(ServerConfig::DEFAULT_MAX_CONNECTIONS);
        let spare = fds.saturating_sub(reserve);
        let spare = usize::try_from(spare).unwrap_or(usize::MAX);
        let max_total = wanted.min(spare).max(MIN_CONNECTIONS.min(wanted));
        let max_per_source = s
            .max_connections_per_ip
            .unwrap_or(ServerConfig::DEFAULT_MAX_CONNECTIONS_PER_IP)
            .min(max_total);
        let ms = |v: Option<u64>, d: u64| Duration::from_millis(v.unwrap_or(d));
        let limits = Limits {
            max_total,
            max_per_source,
            header_timeout: ms(s.header_timeout_ms, ServerConfig::DEFAULT_HEADER_TIMEOUT_MS),
            idle_timeout: ms(s.idle_timeout_ms, ServerConfig::DEFAULT_IDLE_TIMEOUT_MS),
        };
        (limits, max_total < wanted)
    }
}

impl Default for Limits {
    /// The `server` defaults, with no shortage of descriptors.
    fn default() -> Self {
        Limits::from_server(&ServerConfig::default(), u64::MAX, 0).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_take_config_defaults_and_keep_a_descriptor_reserve() {
        let s = ServerConfig::default();
        let (l, lowered) = Limits::from_server(&s, 1 << 20, 1000);
        assert_eq!(l.max_total, ServerConfig::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            l.max_per_source,
            ServerConfig::DEFAULT_MAX_CONNECTIONS_PER_IP
        );
        assert_eq!(l.header_timeout, Duration::from_secs(10));
        assert_eq!(l.idle_timeout, Duration::from_secs(30));
        assert!(!lowered);
        // 1024 descriptors, 900 reserved: 124 left for connections.
        let (l, lowered) = Limits::from_server(&s, 1024, 900);
        assert_eq!((l.max_total, l.max_per_source, lowered), (124, 64, true));
        // Even with nothing to spare the operator keeps a few.
        let (l, _) = Limits::from_server(&s, 1024, 5000);
        assert_eq!(
            (l.max_total, l.max_per_source),
            (MIN_CONNECTIONS, MIN_CONNECTIONS)
        );
        let s = ServerConfig {
            max_connections: Some(4),
            max_connections_per_ip: Some(2),
            header_timeout_ms: Some(500),
            idle_timeout_ms: Some(1500),
            ..ServerConfig::default()
        };
        let (l, lowered) = Limits::from_server(&s, 1 << 20, 1000);
        assert_eq!((l.max_total, l.max_per_source, lowered), (4, 2, false));
        assert_eq!(l.header_timeout, Duration::from_millis(500));
        assert_eq!(l.idle_timeout, Duration::from_millis(1500));
    }
}
