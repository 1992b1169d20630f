//! Validation: every problem, each named by its JSON path.
//!
//! Problems come out in the order of the document as Quoll writes it (version, server,
//! flows in order and within a flow id, name, input, outputs, ring_chunks; then storage), so
//! an operator can fix them top to bottom. A conflict between two items is reported once, on
//! the later one (or on the output, for an output against an input), naming the other.
//!
//! A field's own check (a range, a token's shape) is declared with the field in `model.rs`
//! and run here through the block's `check_fields`, at the point of the block where it
//! comes; what is left here are the rules between fields and between blocks (ports, address
//! families, a mode's required fields, ids, the outbound allow list), each run where its
//! problem comes in the document.

use std::net::{IpAddr, SocketAddr};

#[cfg(feature = "rtsp")]
use super::declare::check;
use super::error::{ConfigError, ErrorKind, child, index, quoted};
use super::model::*;
use crate::net::outbound::split_host_port;

/// Longest flow or output id: ids end up in URLs, file names and event messages.
pub const MAX_ID_LEN: usize = 64;

/// Check `cfg`; an empty list means it is valid.
pub fn validate(cfg: &Config) -> Vec<ConfigError> {
    let index: Vec<usize> = (0..cfg.flows.len()).collect();
    validate_at(cfg, &index, &[])
}

/// Check `cfg` whose `flows[i]` stood at `flows[flow_index[i]]` of the document (flows that
/// could not be read were left out), so every path names the document's own index.
/// `unparsed` lists the blocks (inputs, outputs, SRT legs, by path) holding a value that did
/// not parse, read with a stand-in: they are left out of the rules between fields (their
/// ports, address families, …), which the stand-in would mislead; their fields' own checks
/// still run.
pub(crate) fn validate_at(
    cfg: &Config,
    flow_index: &[usize],
    unparsed: &[String],
) -> Vec<ConfigError> {
    let mut v = Validator {
        errors: Vec::new(),
        flow_index,
        unparsed,
        outbound: None,
    };
    v.config(cfg);
    v.errors
}

/// A UDP port somebody binds, for conflict checks.
struct Bind {
    addr: SocketAddr,
    path: String,
}

struct Validator<'i> {
    errors: Vec<ConfigError>,
    flow_index: &'i [usize],
    unparsed: &'i [String],
    /// `security.outbound_allow` (its valid entries), known before the flows are checked.
    outbound: Option<crate::net::outbound::AllowList>,
}

impl Validator<'_> {
    /// `flows[N]` with the document's index of the i-th flow read.
    fn flow_path(&self, i: usize) -> String {
        index("flows", self.flow_index.get(i).copied().unwrap_or(i))
    }

    /// Whether the block at `path` holds a value that did not parse (see `validate_at`).
    fn unparsed(&self, path: &str) -> bool {
        self.unparsed.iter().any(|p| p == path)
    }

    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.err_of(ErrorKind::Invalid, path, message);
    }

    fn err_of(&mut self, kind: ErrorKind, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::of(kind, path, message));
    }

    fn config(&mut self, cfg: &Config) {
        if cfg.version != 1 {
            self.err(
                "version",
                format!(
                    "unsupported version {} (this build reads version 1)",
                    cfg.version
                ),
            );
        }
        self.server(&cfg.server);
        let allow = cfg
            .security
            .as_ref()
            .and_then(|s| s.outbound_allow.as_ref());
        let allow_errors =
            allow.map(
                |entries| match crate::net::outbound::AllowList::parse(entries) {
                    Ok(list) => {
                        self.outbound = Some(list);
                        Vec::new()
                    }
                    Err(bad) => bad,
                },
            );

        // Input binds of every flow, known before the outputs are checked, so an output
        // can be checked against a flow that comes after it.
        let input_binds: Vec<Bind> = cfg
            .flows
            .iter()
            .enumerate()
            .flat_map(|(i, f)| {
                let path = child(&self.flow_path(i), "input");
                match &f.input {
                    InputConfig::Udp(_) | InputConfig::Rtp(_) if self.unparsed(&path) => Vec::new(),
                    InputConfig::Udp(u) | InputConfig::Rtp(u) => vec![Bind {
                        addr: u.bind_addr,
                        path: child(&path, "bind_addr"),
                    }],
                    InputConfig::Srt(c) => self.srt_binds(c, &path),
                    _ => Vec::new(),
                }
            })
            .collect();
        let mut output_binds: Vec<Bind> = Vec::new();
        let mut seen_ids: Vec<(&str, String)> = Vec::new();
        for (i, flow) in cfg.flows.iter().enumerate() {
            let path = self.flow_path(i);
            self.flow(flow, &path, &mut seen_ids, &input_binds, &mut output_binds);
        }
        cfg.storage.check_fields("storage", &mut self.errors);
        cfg.limits.check_fields("limits", &mut self.errors);
        if let Some(m) = &cfg.manager {
            self.manager(m);
        }
        if let Some(b) = &cfg.bridge {
            self.bridge(b, cfg);
        }
        let mut tunnel_ids: Vec<&str> = Vec::new();
        for (i, t) in cfg.tunnels.iter().enumerate() {
            let path = index("tunnels", i);
            if tunnel_ids.contains(&t.id.as_str()) {
                self.err(
                    child(&path, "id"),
                    format!("duplicate tunnel id {}", quoted(&t.id)),
                );
            }
            tunnel_ids.push(&t.id);
            self.tunnel(t, &path);
        }
        cfg.tunnel_tls.check_fields("tunnel_tls", &mut self.errors);
        for (i, why) in allow_errors.unwrap_or_default() {
            self.err(index("security.outbound_allow", i), why.to_string());
        }
    }

    /// A destination the node connects or sends to, written as an address: it must be in
    /// `security.outbound_allow` when that is set (`net::outbound`).
    fn outbound(&mut self, path: &str, ip: IpAddr) {
        if let Some(list) = &self.outbound
            && let Err(e) = list.check(&ip.to_string(), ip)
        {
            self.err(path, e.to_string());
        }
    }

    fn manager(&mut self, m: &ManagerConfig) {
        if m.enabled && m.urls.is_empty() {
            self.err("manager.urls", "must list at least one URL when enabled");
        }
        for (i, u) in m.urls.iter().enumerate() {
            let path = index("manager.urls", i);
            match ManagerUrl::parse(u) {
                // A URL with user info may carry a password: not echoed.
                Err(why) if u.contains('@') => self.err(path, format!("URL {why}")),
                Err(why) => self.err(path, format!("{} {why}", quoted(u))),
                Ok(url) if !url.tls && !m.allow_plain_ws => self.err(
                    path,
                    format!(
                        "{} is plain ws:// (unencrypted); use wss:// or set manager.allow_plain_ws",
                        quoted(u)
                    ),
                ),
                Ok(_) => {}
            }
        }
        let has_creds = m.node_id.is_some() || m.node_secret.is_some();
        match (&m.node_id, &m.node_secret) {
            (Some(_), None) => self.err("manager.node_secret", "required together with node_id"),
            (None, Some(_)) => self.err("manager.node_id", "required together with node_secret"),
            _ => {}
        }
        for (key, v) in [
            ("registration_token", &m.registration_token),
            ("node_id", &m.node_id),
            ("node_secret", &m.node_secret),
        ] {
            if v.as_deref().is_some_and(str::is_empty) {
                self.err(child("manager", key), "must not be empty");
            }
        }
        if m.enabled && !has_creds && m.registration_token.is_none() {
            self.err(
                "manager",
                "needs registration_token (to enroll) or node_id and node_secret",
            );
        }
        if let Some(fp) = &m.cert_fingerprint
            && parse_fingerprint(fp).is_none()
        {
            self.err(
                "manager.cert_fingerprint",
                format!(
                    "{} is not a SHA-256 fingerprint (64 hex digits, colons allowed)",
                    quoted(fp)
                ),
            );
        }
        if m.accept_self_signed_cert && m.cert_fingerprint.is_none() {
            self.err(
                "manager.accept_self_signed_cert",
                "requires cert_fingerprint (a self-signed certificate is only trusted when pinned)",
            );
        }
        if m.protocol_version == 0 {
            self.err_of(
                ErrorKind::Range,
                "manager.protocol_version",
                "must be at least 1",
            );
        }
    }

    /// The fields each mode needs (`shared/spec/relay-protocol.md`).
    fn tunnel(&mut self, t: &TunnelConfig, path: &str) {
        t.check_fields(path, &mut self.errors);
        let mut need = |key: &str, present: bool, why: &str| {
            if !present {
                self.err_of(
                    ErrorKind::Missing,
                    child(path, key),
                    format!("required {why}"),
                );
            }
        };
        need(
            "tunnel_encryption_key",
            t.tunnel_encryption_key.is_some(),
            "(the data plane's key)",
        );
        match (t.mode, t.direction) {
            (TunnelMode::Relay, _) => {
                need("relay_addr", !t.relays().is_empty(), "in relay mode");
                need(
                    "tunnel_bind_secret",
                    t.tunnel_bind_secret.is_some(),
                    "in relay mode",
                );
            }
            (TunnelMode::Direct, dir) => {
                need("tunnel_psk", t.tunnel_psk.is_some(), "in direct mode");
                match dir {
                    TunnelDirection::Ingress => need(
                        "direct_listen_addr",
                        t.direct_listen_addr.is_some(),
                        "in direct mode on the ingress edge (it listens)",
                    ),
                    TunnelDirection::Egress => need(
                        "peer_addr",
                        t.peer_addr.is_some(),
                        "in direct mode on the egress edge (it dials)",
                    ),
                }
            }
        }
        // Where the tunnel dials (relays, the direct peer) and, on the ingress edge, where it
        // delivers: written as addresses, they must be in `security.outbound_allow` (a name
        // is checked when dialled).
        let dialled = t
            .relay_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (index(&child(path, "relay_addrs"), i), a))
            .chain(t.relay_addr.iter().map(|a| (child(path, "relay_addr"), a)))
            .chain(t.peer_addr.iter().map(|a| (child(path, "peer_addr"), a)));
        for (at, host_port) in dialled {
            if let Some(ip) = split_host_port(host_port).and_then(|(h, _)| h.parse().ok()) {
                self.outbound(&at, ip);
            }
        }
        if t.direction == TunnelDirection::Ingress {
            self.outbound(&child(path, "local_addr"), t.local_addr.ip());
        }
        if t.relay_addrs.len() > TunnelConfig::MAX_RELAYS {
            self.err_of(
                ErrorKind::Range,
                child(path, "relay_addrs"),
                format!(
                    "at most {} relays (a primary and a backup)",
                    TunnelConfig::MAX_RELAYS
                ),
            );
        }
    }

    fn bridge(&mut self, b: &BridgeConfig, cfg: &Config) {
        #[cfg(feature = "rtsp")]
        self.bridge_streams(b, cfg);
        // Without the bridge, a block without streams (its settings, the viewer token) is
        // kept and checked, so a config round-trips; a stream could never be served.
        #[cfg(not(feature = "rtsp"))]
        if !b.streams.is_empty() {
            self.err_of(
                ErrorKind::Unsupported,
                "bridge.streams",
                "the RTSP bridge is not in this build",
            );
        }
        b.check_fields("bridge", &mut self.errors);
        if let Some(t) = &b.viewer_token {
            // The viewer token goes into page URLs and players; the API token must not be
            // one of them.
            if cfg.server.api_token.as_deref() == Some(t.as_str()) {
                self.err(
                    "bridge.viewer_token",
                    "must differ from server.api_token (the viewer token grants no API access)",
                );
            }
        }
    }

    /// The bridge's streams: each one source, a camera's URL or a flow.
    #[cfg(feature = "rtsp")]
    fn bridge_streams(&mut self, b: &BridgeConfig, cfg: &Config) {
        if b.streams.len() > BridgeConfig::MAX_STREAMS {
            self.err_of(
                ErrorKind::Range,
                "bridge.streams",
                format!(
                    "{} streams (at most {})",
                    b.streams.len(),
                    BridgeConfig::MAX_STREAMS
                ),
            );
        }
        for s in &b.streams {
            let path = child("bridge.streams", &s.id);
            self.id(path.clone(), &s.id);
            match (&s.rtsp_url, &s.flow_id) {
                (Some(url), None) => {
                    self.rtsp_url(&child(&path, "rtsp_url"), url);
                    // A camera stream's fields are an RTSP input's, with its checks (its
                    // transport is the reader's).
                    let timeout = child(&path, "timeout_secs");
                    check::range(RtspInputConfig::TIMEOUT_SECS_RANGE)(
                        &s.timeout_secs,
                        &timeout,
                        &mut self.errors,
                    );
                }
                (None, Some(flow)) => {
                    if !cfg.flows.iter().any(|f| &f.id == flow) {
                        self.err(
                            child(&path, "flow_id"),
                            format!("no flow has id {}", quoted(flow)),
                        );
                    }
                    if s.worker != BridgeWorker::InProcess {
                        self.err(
                            child(&path, "worker"),
                            "a flow_id stream is read in-process: worker must be \"inprocess\"",
                        );
                    }
                }
                (Some(_), Some(_)) => self.err(
                    path.clone(),
                    "has both rtsp_url and flow_id; a stream has one source",
                ),
                (None, None) => self.err(
                    path.clone(),
                    "needs a source: rtsp_url (a camera) or flow_id (a flow's output)",
                ),
            }
            if s.worker == BridgeWorker::Ffmpeg {
                let video = child(&path, "ffmpeg_video");
                check::one_of(BridgeStreamConfig::FFMPEG_VIDEO)(
                    &s.ffmpeg_video,
                    &video,
                    &mut self.errors,
                );
            }
        }
    }

    /// An RTMP input: a fixed TCP port, a plain app name, a key (TCP: no conflict with the
    /// UDP binds; flows may share a `listen_addr`, the app and key tell them apart).
    #[cfg(feature = "rtmp")]
    fn rtmp_input(&mut self, r: &RtmpInputConfig, path: &str) {
        if !self.unparsed(path) && r.listen_addr.port() == 0 {
            self.err(
                child(path, "listen_addr"),
                "port must not be 0 (publishers need a fixed port)",
            );
        }
        if r.app.trim_matches('/').is_empty() || r.app.contains(['?', ' ']) {
            self.err(
                child(path, "app"),
                "must be a non-empty name without spaces or '?'",
            );
        }
        if r.stream_key.is_empty() {
            self.err(child(path, "stream_key"), "must not be empty");
        }
    }

    #[cfg(feature = "rtsp")]
    fn rtsp_input(&mut self, r: &RtspInputConfig, path: &str) {
        self.rtsp_url(&child(path, "rtsp_url"), &r.rtsp_url);
        r.check_fields(path, &mut self.errors);
    }

    /// An RTMP push: a URL with an app and a key (never echoed: the key is a secret), an
    /// address host allowed by `security.outbound_allow` (a name is checked when resolved),
    /// and a certificate pin only where there is TLS.
    #[cfg(feature = "rtmp")]
    fn rtmp_output(&mut self, r: &RtmpOutputConfig, path: &str) {
        let (upath, url) = match (&r.url, &r.dest_url) {
            (Some(u), None) => (child(path, "url"), u),
            (None, Some(u)) => (child(path, "dest_url"), u),
            (Some(_), Some(_)) => {
                self.err(
                    child(path, "dest_url"),
                    "url and dest_url both given: keep one",
                );
                return;
            }
            (None, None) => {
                self.err(
                    child(path, "url"),
                    "required (rtmp(s)://host[:port]/app/key, or dest_url with stream_key)",
                );
                return;
            }
        };
        match crate::rtmp::url::Endpoint::parse(url, r.stream_key.as_deref()) {
            Ok(ep) => {
                if let Ok(ip) = ep.host.trim_matches(['[', ']']).parse::<IpAddr>() {
                    self.outbound(&upath, ip);
                }
                if r.cert_fingerprint.is_some() && !ep.tls {
                    self.err(
                        child(path, "cert_fingerprint"),
                        "only for an rtmps:// url (plain RTMP has no certificate)",
                    );
                }
            }
            Err(e) => self.err(upath, e.to_string()),
        }
        if let Some(fp) = &r.cert_fingerprint
            && parse_fingerprint(fp).is_none()
        {
            self.err(
                child(path, "cert_fingerprint"),
                format!(
                    "{} is not a SHA-256 fingerprint (64 hex digits, colons allowed)",
                    quoted(fp)
                ),
            );
        }
        r.check_fields(path, &mut self.errors);
    }

    #[cfg(feature = "hls")]
    fn hls_output(&mut self, h: &HlsOutputConfig, path: &str) {
        let upath = child(path, "ingest_url");
        match url::Url::parse(&h.ingest_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                // A name is checked when it is resolved, at connect time.
                match u.host() {
                    Some(url::Host::Ipv4(ip)) => self.outbound(&upath, ip.into()),
                    Some(url::Host::Ipv6(ip)) => self.outbound(&upath, ip.into()),
                    _ => {}
                }
            }
            Ok(u) if !matches!(u.scheme(), "http" | "https") => self.err(
                upath,
                format!(
                    "scheme {} is not http or https (expected http(s)://host[:port]/path/)",
                    quoted(u.scheme())
                ),
            ),
            _ => self.err(
                upath,
                "not a URL (expected http(s)://host[:port]/path/)".to_string(),
            ),
        }
        for (name, value) in h.headers.iter().flatten() {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            let hpath = child(&child(path, "headers"), name);
            if !valid_name {
                self.err(hpath, "not a valid HTTP header name".to_string());
            } else if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                // The value itself is not quoted: it is a secret.
                self.err(hpath, "the value holds control characters".to_string());
            }
        }
        h.check_fields(path, &mut self.errors);
    }

    #[cfg(feature = "rtsp")]
    fn rtsp_url(&mut self, path: &str, s: &str) {
        match url::Url::parse(s) {
            Ok(u) if u.scheme() == "rtsp" && u.host_str().is_some_and(|h| !h.is_empty()) => {
                // A name is checked when it is resolved, at connect time (`rtsp::connect`).
                // rtsp is not a "special" scheme to the URL parser: an IPv4 host comes back
                // as a domain, and is parsed here.
                match u.host() {
                    Some(url::Host::Ipv4(ip)) => self.outbound(path, ip.into()),
                    Some(url::Host::Ipv6(ip)) => self.outbound(path, ip.into()),
                    Some(url::Host::Domain(d)) => {
                        if let Ok(ip) = d.parse::<IpAddr>() {
                            self.outbound(path, ip);
                        }
                    }
                    None => {}
                }
            }
            Ok(u) if u.scheme() != "rtsp" => self.err(
                path,
                format!(
                    "scheme {} is not rtsp (expected rtsp://host[:port]/path)",
                    quoted(u.scheme())
                ),
            ),
            _ => self.err(
                path,
                "is not an RTSP URL (expected rtsp://host[:port]/path)",
            ),
        }
    }

    fn server(&mut self, s: &ServerConfig) {
        let mut own = Vec::new();
        s.check_fields("server", &mut own);
        if let (Some(n), Some(total)) = (s.max_connections_per_ip, s.max_connections)
            && n > total
        {
            // In document order: after the per-IP field's own check, before the timeouts'.
            let timeouts = ["server.header_timeout_ms", "server.idle_timeout_ms"];
            let at = own
                .iter()
                .position(|e| timeouts.contains(&e.path.as_str()))
                .unwrap_or(own.len());
            own.insert(
                at,
                ConfigError::new(
                    "server.max_connections_per_ip",
                    format!("{n} is above server.max_connections ({total})"),
                ),
            );
        }
        self.errors.append(&mut own);
    }

    /// Non-empty, at most 64 characters of `[A-Za-z0-9._-]`.
    fn id(&mut self, path: String, id: &str) -> bool {
        if id.is_empty() {
            self.err(path, "must not be empty");
            return false;
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            self.err(
                path,
                format!(
                    "{} contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed",
                    quoted(id)
                ),
            );
            return false;
        }
        if id.len() > MAX_ID_LEN {
            self.err_of(
                ErrorKind::Range,
                path,
                format!(
                    "{} is {} characters long (at most {MAX_ID_LEN})",
                    quoted(id),
                    id.len()
                ),
            );
            return false;
        }
        true
    }

    fn flow<'c>(
        &mut self,
        flow: &'c FlowConfig,
        path: &str,
        seen_ids: &mut Vec<(&'c str, String)>,
        input_binds: &[Bind],
        output_binds: &mut Vec<Bind>,
    ) {
        let id_path = child(path, "id");
        if self.id(id_path.clone(), &flow.id) {
            if let Some((_, first)) = seen_ids.iter().find(|(id, _)| *id == flow.id) {
                self.err(
                    id_path.clone(),
                    format!("{} is already used by {first}", quoted(&flow.id)),
                );
            } else {
                seen_ids.push((&flow.id, id_path));
            }
        }
        self.input(&flow.input, &child(path, "input"), input_binds);

        let mut out_ids: Vec<(&str, String)> = Vec::new();
        for (j, out) in flow.outputs.iter().enumerate() {
            let opath = index(&child(path, "outputs"), j);
            let oid = child(&opath, "id");
            if self.id(oid.clone(), &out.id) {
                if let Some((_, first)) = out_ids.iter().find(|(id, _)| *id == out.id) {
                    self.err(
                        oid.clone(),
                        format!(
                            "{} is already used by {first} in this flow",
                            quoted(&out.id)
                        ),
                    );
                } else {
                    out_ids.push((&out.id, oid));
                }
            }
            self.output(&out.kind, &opath, input_binds, output_binds);
        }

        flow.check_fields(path, &mut self.errors);
    }

    fn input(&mut self, input: &InputConfig, path: &str, input_binds: &[Bind]) {
        let u = match input {
            InputConfig::Udp(u) | InputConfig::Rtp(u) => u,
            InputConfig::Srt(c) => {
                self.srt(c, path, false);
                self.srt_input_binds(c, path, input_binds);
                return;
            }
            #[cfg(feature = "rtsp")]
            InputConfig::Rtsp(r) => {
                self.rtsp_input(r, path);
                return;
            }
            #[cfg(feature = "rtmp")]
            InputConfig::Rtmp(r) => {
                self.rtmp_input(r, path);
                return;
            }
            other => {
                self.unsupported(
                    child(path, "type"),
                    other.type_name(),
                    InputConfig::SUPPORTED_TYPES,
                );
                return;
            }
        };
        if !self.unparsed(path) {
            let bind_path = child(path, "bind_addr");
            let b = u.bind_addr;
            if b.port() == 0 {
                // Port 0 asks the kernel for any free port: nobody could send to it.
                self.err(
                    bind_path.clone(),
                    "port must not be 0 (senders need a fixed port)",
                );
            } else if let Some(other) = earlier_input(input_binds, &bind_path, b) {
                self.port_taken(bind_path.clone(), b, other);
            }
            if let Some(iface) = u.interface_addr {
                self.interface(&child(path, "interface_addr"), iface, b, "bind_addr");
            }
        }
        u.check_fields(path, &mut self.errors);
    }

    fn output(
        &mut self,
        kind: &OutputKind,
        path: &str,
        input_binds: &[Bind],
        output_binds: &mut Vec<Bind>,
    ) {
        let u = match kind {
            OutputKind::Udp(u) | OutputKind::Rtp(u) => u,
            OutputKind::Srt(c) => {
                self.srt(c, path, true);
                for b in self.srt_binds(c, path) {
                    self.claim_output_bind(b, input_binds, output_binds);
                }
                return;
            }
            #[cfg(feature = "hls")]
            OutputKind::Hls(h) => {
                self.hls_output(h, path);
                return;
            }
            #[cfg(feature = "rtmp")]
            OutputKind::Rtmp(r) => {
                self.rtmp_output(r, path);
                return;
            }
            other => {
                self.unsupported(
                    child(path, "type"),
                    other.type_name(),
                    OutputKind::SUPPORTED_TYPES,
                );
                return;
            }
        };
        if !self.unparsed(path) {
            let dest_path = child(path, "dest_addr");
            let d = u.dest_addr;
            if d.port() == 0 {
                self.err(dest_path.clone(), "port must not be 0");
            }
            self.outbound(&dest_path, d.ip());
            if let Some(b) = u.bind_addr {
                let bpath = child(path, "bind_addr");
                if d.is_ipv4() != b.is_ipv4() {
                    self.err(
                        bpath.clone(),
                        format!(
                            "{b} is {} but dest_addr {d} is {}",
                            family(b.ip()),
                            family(d.ip())
                        ),
                    );
                }
                // Port 0 is an ephemeral source port: never a conflict.
                if b.port() != 0 {
                    let bind = Bind {
                        addr: b,
                        path: bpath,
                    };
                    self.claim_output_bind(bind, input_binds, output_binds);
                }
            }
            if let Some(iface) = u.interface_addr {
                self.interface(&child(path, "interface_addr"), iface, d, "dest_addr");
            }
        }
        u.check_fields(path, &mut self.errors);
    }

    /// One SRT endpoint and its `redundancy` leg. `output` allows `max_connections`.
    fn srt(&mut self, c: &SrtConfig, path: &str, output: bool) {
        self.srt_leg(c, path, output);
        if c.window_ms.is_some() {
            self.err(
                child(path, "window_ms"),
                "only in the redundancy leg of an SRT input (the 2022-7 merge's window)",
            );
        }
        if let Some(leg) = &c.redundancy {
            let lpath = child(path, "redundancy");
            self.srt_leg(leg, &lpath, output);
            if let Some(w) = leg.window_ms {
                let wpath = child(&lpath, "window_ms");
                let r = SrtConfig::WINDOW_MS_RANGE;
                if output {
                    self.err(
                        wpath,
                        "only SRT inputs merge their legs (an output feeds both)",
                    );
                } else if !r.contains(&w) {
                    self.err_of(
                        ErrorKind::Range,
                        wpath,
                        format!("{w} is out of range ({}..={})", r.start(), r.end()),
                    );
                }
            }
            if leg.redundancy.is_some() {
                self.err(
                    child(&lpath, "redundancy"),
                    "a redundancy leg cannot have a redundancy leg of its own (2 legs at most)",
                );
            }
        }
    }

    fn srt_leg(&mut self, c: &SrtConfig, path: &str, output: bool) {
        if self.unparsed(path) {
            c.check_fields(path, &mut self.errors);
            return;
        }
        let lpath = child(path, "local_addr");
        let l = c.local_addr;
        if l.port() == 0 && c.mode != SrtMode::Caller {
            self.err(
                lpath,
                format!(
                    "port must not be 0 in {} mode (the peer needs a fixed port)",
                    c.mode.as_str()
                ),
            );
        }
        let rpath = child(path, "remote_addr");
        match (&c.remote_addr, c.mode) {
            (None, SrtMode::Caller | SrtMode::Rendezvous) => {
                self.err(rpath, format!("required in {} mode", c.mode.as_str()))
            }
            (Some(r), _) => {
                let r = *r;
                if r.port() == 0 {
                    self.err(rpath.clone(), "port must not be 0");
                } else if r.ip().is_unspecified() && c.mode != SrtMode::Listener {
                    self.err(
                        rpath.clone(),
                        format!("{r} is not an address to connect to"),
                    );
                }
                // A caller connects to it and a rendezvous peer is sent to; a listener's
                // remote_addr only filters who may call.
                if c.mode != SrtMode::Listener {
                    self.outbound(&rpath, r.ip());
                }
                if l.is_ipv4() != r.is_ipv4() {
                    self.err(
                        rpath,
                        format!(
                            "{r} is {} but local_addr {l} is {}",
                            family(r.ip()),
                            family(l.ip())
                        ),
                    );
                }
            }
            (None, SrtMode::Listener) => {}
        }
        c.check_fields(path, &mut self.errors);
        if let Some(n) = c.max_connections {
            let mpath = child(path, "max_connections");
            let r = SrtConfig::MAX_CONNECTIONS_RANGE;
            if !output {
                self.err(mpath, "only SRT outputs in listener mode take callers");
            } else if c.mode != SrtMode::Listener {
                self.err(mpath, "only applies in listener mode");
            } else if !r.contains(&n) {
                self.err_of(
                    ErrorKind::Range,
                    mpath,
                    format!("{n} is out of range ({}..={})", r.start(), r.end()),
                );
            }
        }
    }

    /// An SRT input's UDP ports against the inputs before it (and leg 2 against leg 1).
    fn srt_input_binds(&mut self, c: &SrtConfig, path: &str, input_binds: &[Bind]) {
        for b in self.srt_binds(c, path) {
            if let Some(other) = earlier_input(input_binds, &b.path, b.addr) {
                self.port_taken(b.path.clone(), b.addr, other);
            }
        }
    }

    fn port_taken(&mut self, path: String, addr: SocketAddr, other: &Bind) {
        self.err_of(
            ErrorKind::PortConflict,
            path,
            format!(
                "UDP port {} on {} is already bound by {} ({})",
                addr.port(),
                addr.ip(),
                other.path,
                other.addr
            ),
        );
    }

    /// An output's fixed bind: an error if an input or an earlier output holds the port,
    /// else it is taken.
    fn claim_output_bind(&mut self, b: Bind, input_binds: &[Bind], output_binds: &mut Vec<Bind>) {
        let clash = input_binds
            .iter()
            .chain(output_binds.iter())
            .find(|o| overlaps(o.addr, b.addr));
        match clash {
            Some(other) => self.port_taken(b.path, b.addr, other),
            None => output_binds.push(b),
        }
    }

    fn unsupported(&mut self, path: String, ty: &str, supported: &[&str]) {
        self.err_of(
            ErrorKind::Unsupported,
            path,
            format!(
                "{} is not supported by this build yet (supported: {})",
                quoted(ty),
                supported.join(", ")
            ),
        );
    }

    /// The interface address must be an IP of the same family as the address it serves:
    /// an IPv4 group is joined / sent on through an IPv4 interface address.
    fn interface(&mut self, path: &str, ip: IpAddr, with: SocketAddr, with_name: &str) {
        if ip.is_ipv4() != with.is_ipv4() {
            self.err(
                path,
                format!(
                    "{ip} is {} but {with_name} {with} is {}",
                    family(ip),
                    family(with.ip())
                ),
            );
        }
    }

    /// The fixed UDP ports an SRT endpoint binds (its legs' `local_addr`s with a port; a
    /// leg holding a value that did not parse binds nothing known).
    fn srt_binds(&self, c: &SrtConfig, path: &str) -> Vec<Bind> {
        let leg2 = c
            .redundancy
            .as_deref()
            .map(|r| (r, child(path, "redundancy")));
        std::iter::once((c, path.to_string()))
            .chain(leg2)
            .filter(|(_, p)| !self.unparsed(p))
            .filter(|(l, _)| l.local_addr.port() != 0)
            .map(|(l, p)| Bind {
                addr: l.local_addr,
                path: child(&p, "local_addr"),
            })
            .collect()
    }
}

/// A SHA-256 fingerprint written as 64 hex digits, optionally separated by colons.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
    if hex.len() != 64 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The input bind listed before `path` (inputs are collected in document order) that
/// overlaps `addr`: each clash is reported once, on the later of the two.
fn earlier_input<'a>(input_binds: &'a [Bind], path: &str, addr: SocketAddr) -> Option<&'a Bind> {
    input_binds
        .iter()
        .take_while(|o| o.path != path)
        .find(|o| overlaps(o.addr, addr))
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Whether two UDP binds would fight over the same packets or fail to bind.
///
/// Same port, and: the same address, or either is the wildcard. `0.0.0.0` covers every IPv4
/// address; `::` covers every IPv6 address and, because Quoll's sockets leave IPV6_V6ONLY at
/// the Linux default (off), every IPv4 address too. Two different multicast groups on one
/// port do not overlap: each socket is bound to its own group address.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() {
        return false;
    }
    let (x, y) = (a.ip(), b.ip());
    if x == y {
        return true;
    }
    let covers = |w: IpAddr, other: IpAddr| match w {
        IpAddr::V4(v4) => v4.is_unspecified() && other.is_ipv4(),
        IpAddr::V6(v6) => v6.is_unspecified(),
    };
    covers(x, y) || covers(y, x)
}
