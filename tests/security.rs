//! The attacks of issue 13 against a running quoll, each refused: a caller without the API
//! token, a wrong one, a cross-site form post (text/plain), a DNS-rebinding page (a foreign
//! `Host`), a page of another origin opening a stream, a viewer without a token on a node
//! reachable beyond loopback. And the token files: mode 0600, reused, never logged.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::{Value, json};

/// A loopback UDP flow `main`, and a bridge stream `tap` reading it (no camera needed: the
/// WebSocket handshake is what is tested).
fn config(dir: &TempDir, listen_addr: &str) -> Value {
    json!({
        "version": 1,
        "server": { "listen_addr": listen_addr, "listen_port": free_tcp_port() },
        "storage": { "data_dir": dir.path().join("data") },
        "flows": [{
            "id": "main",
            "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{}", free_udp_port()) },
            "outputs": []
        }],
        "bridge": { "streams": { "tap": { "flow_id": "main" } } }
    })
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `raw_http` with `Host: 127.0.0.1:PORT` first, then `extra`.
fn request(q: &Quoll, method: &str, path: &str, extra: &[(&str, &str)], body: &str) -> RawResponse {
    let host = format!("127.0.0.1:{}", q.api_port);
    let mut headers = vec![("Host", host.as_str())];
    headers.extend_from_slice(extra);
    raw_http(q.api_port, method, path, &headers, body)
}

/// A WebSocket upgrade of `path` with `extra` headers; the handshake's status.
fn ws_upgrade(q: &Quoll, path: &str, extra: &[(&str, &str)]) -> RawResponse {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    headers.extend_from_slice(extra);
    request(q, "GET", path, &headers, "")
}

fn assert_refused(r: &RawResponse, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
    let v = r.json();
    assert_eq!(v["error_code"], code, "{what}: {r:?}");
    assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{what}: no CORS headers, ever: {r:?}"
    );
}

#[test]
fn the_api_needs_its_token_and_healthz_says_little_without_it() {
    let dir = TempDir::new("sec-token");
    let cfg = config(&dir, "127.0.0.1");
    let q = Quoll::start_with_env(dir.path(), &cfg, &[("QUOLL_LOG", "debug")]);

    // The generated token: 32 random bytes as hex, in a file only the owner can read.
    let token_path = q.data_dir.join("api-token");
    assert_eq!(mode(&token_path), 0o600);
    let token = q.token.clone();
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(
        q.log().contains(&token_path.display().to_string()),
        "the log names the token file:\n{}",
        q.log()
    );
    let viewer = q.token_file("viewer-token");
    assert_eq!(mode(&q.data_dir.join("viewer-token")), 0o600);
    assert_ne!(viewer, token);

    // No token, a wrong one, one of the same length with one digit changed, the viewer's,
    // another scheme: 401 with a JSON error and a Bearer challenge, on every API path
    // (an unknown one too: nothing about the routes is given away).
    let mut last = token.clone().into_bytes();
    *last.last_mut().unwrap() = if *last.last().unwrap() == b'0' {
        b'1'
    } else {
        b'0'
    };
    let same_length = String::from_utf8(last).unwrap();
    let wrong = [
        None,
        Some("Bearer not-the-token".to_string()),
        Some(format!("Bearer {same_length}")),
        Some(format!("Bearer {viewer}")),
        Some(format!("Basic {token}")),
        Some(token.clone()),
    ];
    for path in ["/api/v1/flows", "/api/v1/stats", "/api/v1/nothing"] {
        for auth in &wrong {
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            let r = request(&q, "GET", path, &headers, "");
            assert_refused(
                &r,
                401,
                "unauthorized",
                &format!("GET {path} with {auth:?}"),
            );
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{r:?}");
        }
    }
    // A refused mutation changes nothing.
    let r = request(
        &q,
        "DELETE",
        "/api/v1/flows/main",
        &[("Content-Type", "application/json")],
        "",
    );
    assert_refused(&r, 401, "unauthorized", "DELETE without a token");
    assert_eq!(q.api("GET", "/api/v1/flows/main", None).0, 200);

    // The right token.
    let bearer = format!("Bearer {token}");
    let r = request(
        &q,
        "GET",
        "/api/v1/flows",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()[0]["id"], "main");

    // /healthz: status and version only without a token, everything with it, 401 with a
    // wrong one.
    let r = request(&q, "GET", "/healthz", &[], "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})
    );
    let (code, full) = q.api("GET", "/healthz", None);
    assert_eq!(code, 200);
    for key in [
        "git_rev",
        "uptime_secs",
        "total_flows",
        "event_log",
        "bridge",
        "sessions",
    ] {
        assert!(full.get(key).is_some(), "full healthz has {key}: {full}");
    }
    let r = request(
        &q,
        "GET",
        "/healthz",
        &[("Authorization", "Bearer nope")],
        "",
    );
    assert_refused(&r, 401, "unauthorized", "healthz with a wrong token");

    // On loopback a viewer needs no token, but one that is given is checked.
    let r = ws_upgrade(&q, "/ws/stream/tap", &[]);
    assert_eq!(r.status, 101, "{r:?}");
    let r = ws_upgrade(&q, "/ws/stream/tap?token=wrong", &[]);
    assert_refused(&r, 401, "unauthorized", "viewer with a wrong token");

    // The same tokens after a restart.
    let (status, log) = q.terminate();
    assert!(status.success());
    for secret in [&token, &viewer] {
        assert!(
            !log.contains(secret.as_str()),
            "a token is in the log:\n{log}"
        );
    }
    let q = Quoll::start(dir.path(), &cfg);
    assert_eq!(q.token, token, "the token file is reused");
    assert_eq!(q.token_file("viewer-token"), viewer);
    assert_eq!(q.api("GET", "/api/v1/flows/main", None).0, 200);
}

#[test]
fn a_cross_site_form_post_is_refused_and_nothing_is_saved() {
    let dir = TempDir::new("sec-csrf");
    let mut cfg = config(&dir, "127.0.0.1");
    cfg["server"]["api_token"] = json!("configured-token-0123456789");
    let q = Quoll::start(dir.path(), &cfg);
    let config_path = dir.path().join("config.json");
    let saved_before = std::fs::read(&config_path).unwrap();
    let bearer = format!("Bearer {}", q.token);
    let flow = json!({
        "id": "evil",
        "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{}", free_udp_port()) },
        "outputs": [{ "type": "udp", "id": "o", "dest_addr": "127.0.0.1:9" }]
    })
    .to_string();

    // What a page on another site can send without asking: a "simple" request. Refused
    // whatever it carries, a token included (a browser could not add one, a proxy could).
    for ctype in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        for auth in [None, Some(bearer.as_str())] {
            let mut headers = vec![("Origin", "http://evil.example")];
            headers.extend(ctype.map(|c| ("Content-Type", c)));
            headers.extend(auth.map(|a| ("Authorization", a)));
            let r = request(&q, "POST", "/api/v1/flows", &headers, &flow);
            assert_refused(
                &r,
                415,
                "unsupported_media_type",
                &format!("{ctype:?} {auth:?}"),
            );
        }
    }
    let r = request(
        &q,
        "DELETE",
        "/api/v1/flows/main",
        &[("Authorization", &bearer), ("Content-Type", "text/plain")],
        "",
    );
    assert_refused(&r, 415, "unsupported_media_type", "DELETE as text/plain");

    // A DNS-rebinding page: its own name in Host, even with a JSON body and a token.
    for host in [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
    ] {
        let r = raw_http(
            q.api_port,
            "POST",
            "/api/v1/flows",
            &[
                ("Host", host),
                ("Content-Type", "application/json"),
                ("Authorization", &bearer),
            ],
            &flow,
        );
        assert_refused(&r, 421, "misdirected_request", host);
        let r = raw_http(q.api_port, "GET", "/healthz", &[("Host", host)], "");
        assert_refused(&r, 421, "misdirected_request", host);
    }
    let r = raw_http(q.api_port, "GET", "/healthz", &[], "");
    assert_refused(&r, 421, "misdirected_request", "no Host at all");

    // Nothing was created, nothing deleted, the file is as it was.
    assert_eq!(q.api("GET", "/api/v1/flows/evil", None).0, 404);
    assert_eq!(q.api("GET", "/api/v1/flows/main", None).0, 200);
    assert_eq!(std::fs::read(&config_path).unwrap(), saved_before);

    // A preflight gets no CORS answer: the browser then never sends the real request.
    let r = request(
        &q,
        "OPTIONS",
        "/api/v1/flows",
        &[
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        "",
    );
    assert!(r.status >= 400, "{r:?}");
    assert!(
        !r.headers
            .iter()
            .any(|(k, _)| k.starts_with("access-control-")),
        "{r:?}"
    );

    // The same request done right works (the configured token, no file written).
    let r = request(
        &q,
        "POST",
        "/api/v1/flows",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
        &flow,
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert!(!q.data_dir.join("api-token").exists());
    let (_, log) = q.terminate();
    assert!(!log.contains("configured-token-0123456789"), "{log}");
}

#[test]
fn allowed_hosts_names_are_accepted() {
    let dir = TempDir::new("sec-hosts");
    let mut cfg = config(&dir, "127.0.0.1");
    cfg["server"]["allowed_hosts"] = json!(["quoll-box.test"]);
    let q = Quoll::start(dir.path(), &cfg);
    let bearer = format!("Bearer {}", q.token);
    let port = q.api_port;
    for host in [
        format!("quoll-box.test:{port}"),
        "QUOLL-BOX.test".to_string(),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "192.0.2.7".to_string(),
    ] {
        let r = raw_http(
            port,
            "GET",
            "/api/v1/flows",
            &[("Host", &host), ("Authorization", &bearer)],
            "",
        );
        assert_eq!(r.status, 200, "{host}: {r:?}");
    }
    for host in [
        "other.test",
        "quoll-box.test.evil.example",
        "box.quoll-box.test",
    ] {
        let r = raw_http(
            port,
            "GET",
            "/api/v1/flows",
            &[("Host", host), ("Authorization", &bearer)],
            "",
        );
        assert_refused(&r, 421, "misdirected_request", host);
    }
}

#[test]
fn viewers_off_loopback_need_a_token_and_pages_an_origin_of_ours() {
    let dir = TempDir::new("sec-viewer");
    let mut cfg = config(&dir, "0.0.0.0");
    cfg["bridge"]["allowed_origins"] = json!(["http://dash.example:3000"]);
    cfg["bridge"]["viewer_token"] = json!("viewer-token-from-config-0123");
    let q = Quoll::start_with_env(dir.path(), &cfg, &[("QUOLL_LOG", "debug")]);
    let viewer = "viewer-token-from-config-0123";
    assert!(
        !q.data_dir.join("viewer-token").exists(),
        "configured: no file"
    );
    let own = format!("http://127.0.0.1:{}", q.api_port);
    let with_token = format!("/ws/stream/tap?token={viewer}");

    // Bound to 0.0.0.0 (reached here over loopback): no token, no stream.
    let r = ws_upgrade(&q, "/ws/stream/tap", &[]);
    assert_refused(&r, 401, "unauthorized", "viewer without a token");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = ws_upgrade(
        &q,
        "/ws/stream/tap?token=viewer-token-from-config-0124",
        &[],
    );
    assert_refused(&r, 401, "unauthorized", "viewer with a wrong token");
    // Not even whether a stream exists is told.
    let r = ws_upgrade(&q, "/ws/stream/nope", &[]);
    assert_refused(&r, 401, "unauthorized", "unknown stream without a token");

    // The viewer token, the API token, by query or header: a stream.
    let api_query = format!("/ws/stream/tap?token={}", q.token);
    let bearer = format!("Bearer {viewer}");
    for (path, headers) in [
        (with_token.as_str(), vec![]),
        (api_query.as_str(), vec![]),
        ("/ws/stream/tap", vec![("Authorization", bearer.as_str())]),
        (with_token.as_str(), vec![("Origin", own.as_str())]),
        (
            with_token.as_str(),
            vec![("Origin", "http://dash.example:3000")],
        ),
    ] {
        let r = ws_upgrade(&q, path, &headers);
        assert_eq!(r.status, 101, "{path} {headers:?}: {r:?}");
        assert!(r.header("sec-websocket-accept").is_some());
    }

    // A page of another origin: 403, token or not.
    for origin in [
        "http://evil.example",
        "null",
        "http://127.0.0.1:1",
        "http://dash.example:3001",
    ] {
        let r = ws_upgrade(&q, &with_token, &[("Origin", origin)]);
        assert_refused(&r, 403, "forbidden_origin", origin);
    }

    // The viewer token opens streams only.
    let r = request(
        &q,
        "GET",
        "/api/v1/flows",
        &[("Authorization", &bearer)],
        "",
    );
    assert_refused(&r, 401, "unauthorized", "the API with the viewer token");
    let r = request(&q, "GET", "/healthz", &[("Authorization", &bearer)], "");
    assert_refused(
        &r,
        401,
        "unauthorized",
        "full healthz with the viewer token",
    );

    let api_token = q.token.clone();
    let (_, log) = q.terminate();
    for secret in [viewer, api_token.as_str()] {
        assert!(!log.contains(secret), "a token is in the log:\n{log}");
    }
}

/// Every attack of issue 13 in a row against one daemon. Each is refused, and after each one
/// `/healthz`, asked from another loopback source (the operator's own browser), answers
/// within 100 ms, and the daemon's RSS stays under 64 MiB. Under emulation
/// (`QUOLL_RUNNER`) the bounds are 1 s and 256 MiB: the emulator's own memory counts there.
#[test]
fn attacks_in_a_row_are_refused_while_healthz_stays_fast_and_memory_bounded() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let emulated = std::env::var_os("QUOLL_RUNNER").is_some();
    let (fast, rss_bound_kib) = if emulated {
        (Duration::from_secs(1), 256 * 1024)
    } else {
        (Duration::from_millis(100), 64 * 1024)
    };
    let dir = TempDir::new("sec-row");
    let mut cfg = config(&dir, "127.0.0.1");
    // The node's own budgets, as a small board would have them.
    cfg["limits"] = json!({"max_flows": 4, "max_ring_bytes": 16 << 20});
    let q = Quoll::start(dir.path(), &cfg);
    let bearer = format!("Bearer {}", q.token);
    let token = q.token.clone();
    let from = |source: &str| connect_from(source, q.api_port);
    let probe = |after: &str| {
        let t = Instant::now();
        let mut s = from("127.0.0.2");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        let took = t.elapsed();
        assert!(reply.starts_with("HTTP/1.1 200"), "after {after}: {reply}");
        assert!(took < fast, "after {after}: /healthz took {took:?}");
        let rss = std::fs::read_to_string(format!("/proc/{}/status", q.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap();
        assert!(rss < rss_bound_kib, "after {after}: RSS {rss} KiB");
    };
    probe("start");

    // No token, a wrong one of the same length.
    assert_eq!(request(&q, "GET", "/api/v1/flows", &[], "").status, 401);
    let wrong = format!("Bearer {}", "0".repeat(q.token.len()));
    let r = request(&q, "GET", "/api/v1/flows", &[("Authorization", &wrong)], "");
    assert_eq!(r.status, 401);
    probe("tokens");

    // A cross-site form post and a DNS-rebinding page.
    let r = request(
        &q,
        "POST",
        "/api/v1/flows",
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "http://evil.example"),
        ],
        "{}",
    );
    assert_eq!(r.status, 415);
    let r = raw_http(
        q.api_port,
        "GET",
        "/api/v1/flows",
        &[("Host", "evil.example"), ("Authorization", &bearer)],
        "",
    );
    assert_eq!(r.status, 421);
    probe("browser attacks");

    // Memory: huge rings, then more flows than the budget, all with the token.
    let flow = |id: &str, ring: Option<u64>| {
        let mut f = json!({"id": id, "input": {"type": "udp",
            "bind_addr": format!("127.0.0.1:{}", free_udp_port())}, "outputs": []});
        if let Some(r) = ring {
            f["ring_chunks"] = json!(r);
        }
        f.to_string()
    };
    let json_auth = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    for i in 0..5 {
        let r = request(
            &q,
            "POST",
            "/api/v1/flows",
            &json_auth,
            &flow(&format!("big{i}"), Some(65536)),
        );
        assert_eq!(r.status, 409, "{r:?}");
        assert_eq!(r.json()["error_code"], "limit_exceeded");
    }
    let mut created = 0;
    for i in 0..10 {
        match request(
            &q,
            "POST",
            "/api/v1/flows",
            &json_auth,
            &flow(&format!("f{i}"), None),
        )
        .status
        {
            201 => created += 1,
            409 => break,
            other => panic!("flow f{i}: {other}"),
        }
    }
    assert_eq!(created, 3, "the config's flow plus three fill max_flows 4");
    probe("budgets");

    // A connection flood from one source: beyond its share the connections are closed at
    // once, and the operator's source still gets in.
    let mut flood = Vec::new();
    for _ in 0..300 {
        if let Ok(mut s) = try_connect_from("127.0.0.1", q.api_port) {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            flood.push(s);
        }
    }
    probe("a connection flood");
    drop(flood);

    // A page of another origin opening a stream.
    let r = ws_upgrade(&q, "/ws/stream/tap", &[("Origin", "http://evil.example")]);
    assert_eq!(r.status, 403);
    probe("a foreign page's stream");
    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
    assert!(!log.contains(&token), "the token is never logged");
}
