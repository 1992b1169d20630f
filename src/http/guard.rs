//! The request checks of the local API, as pure functions of header values: who may ask
//! (`Authorization: Bearer`, the viewer's `?token=`), and which requests a browser page on
//! another site may have made for its visitor (DNS rebinding via `Host`, cross-site form
//! posts via `Content-Type`, cross-site WebSockets via `Origin`).
//!
//! `access.rs` applies them to a request; everything here is testable without a socket.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use hyper::StatusCode;

/// Why a request is refused before it reaches a route. Each maps to one status and one
/// `error_code` of the API's JSON errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token, a malformed `Authorization`, or a token that is not the right one.
    Unauthorized,
    /// A mutating request whose body is not declared `application/json`.
    UnsupportedMediaType,
    /// `Host` names something this node does not answer to (DNS rebinding), or is missing.
    MisdirectedHost,
    /// A WebSocket opened by a page of another origin.
    ForbiddenOrigin,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
            Refusal::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::MisdirectedHost => StatusCode::MISDIRECTED_REQUEST,
            Refusal::ForbiddenOrigin => StatusCode::FORBIDDEN,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Refusal::Unauthorized => "unauthorized",
            Refusal::UnsupportedMediaType => "unsupported_media_type",
            Refusal::MisdirectedHost => "misdirected_request",
            Refusal::ForbiddenOrigin => "forbidden_origin",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::Unauthorized => {
                "missing or wrong token (send Authorization: Bearer <token>; see docs/security.md)"
            }
            Refusal::UnsupportedMediaType => {
                "POST, PUT, PATCH and DELETE requests must have Content-Type: application/json"
            }
            Refusal::MisdirectedHost => {
                "the Host header must be an IP address, localhost or a name in server.allowed_hosts"
            }
            Refusal::ForbiddenOrigin => {
                "this page's origin may not open streams (see bridge.allowed_origins)"
            }
        }
    }
}

/// The token of an `Authorization` header value, when it is `Bearer <token>` (the scheme
/// is case-insensitive, RFC 9110 section 11.1). Anything else, including an empty token or
/// one with spaces inside, is `None`.
pub fn bearer(value: &str) -> Option<&str> {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, token) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim_start_matches([' ', '\t']);
    (!token.is_empty() && !token.contains([' ', '\t'])).then_some(token)
}

/// The first value of `name` in a URL query (`a=1&token=x`), percent- and `+`-decoded.
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Whether a method changes state: only these must declare a JSON body.
pub fn is_mutating(method: &hyper::Method) -> bool {
    use hyper::Method;
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Whether a `Content-Type` value is `application/json`, parameters (`; charset=utf-8`)
/// allowed. A browser can send `text/plain`, `application/x-www-form-urlencoded` and
/// `multipart/form-data` to any site without asking it first; `application/json` makes it
/// ask (a CORS preflight), and Quoll answers no preflight, so such a request never leaves
/// the browser.
pub fn is_json_content_type(value: &str) -> bool {
    let media_type = value.split(';').next().unwrap_or("");
    media_type
        .trim_matches(|c| c == ' ' || c == '\t')
        .eq_ignore_ascii_case("application/json")
}

/// Whether a `Host` value (`name-or-ip[:port]`) is one this node answers to: an IPv4
/// literal, a bracketed IPv6 literal, `localhost`, or a name in `allowed_hosts` (compared
/// case-insensitively, any port). A page that rebinds its own name to this node's address
/// still sends its own name, so it is refused here.
pub fn host_allowed(host: &str, allowed_hosts: &[String]) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => return valid_port(port),
                None => return false,
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if port.is_some_and(|p| !valid_port(p)) || name.is_empty() {
        return false;
    }
    name.parse::<Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(name))
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
}

/// Whether a page of `origin` may open a stream: its origin is the request's own
/// `http[s]://` + `Host` (the page came from this node, through this address), or it is
/// listed in `allowed_origins`. Browsers always send `Origin` on WebSockets and cannot
/// forge it; a request without one is not from a page and is not checked here.
pub fn origin_allowed(origin: &str, host: Option<&str>, allowed_origins: &[String]) -> bool {
    let origin = origin.trim_matches(|c| c == ' ' || c == '\t');
    if allowed_origins
        .iter()
        .any(|a| a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let authority = strip_prefix_ignore_case(origin, "http://")
        .or_else(|| strip_prefix_ignore_case(origin, "https://"));
    match (authority, host) {
        (Some(a), Some(h)) => !a.is_empty() && a.eq_ignore_ascii_case(h.trim()),
        _ => false,
    }
}

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER   abc  "), Some("abc"));
        assert_eq!(bearer("Bearer\tabc"), Some("abc"));
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            "Bearerabc",
            "abc",
            "Token abc",
        ] {
            assert_eq!(bearer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn query_tokens_are_decoded() {
        assert_eq!(
            query_param(Some("token=abc"), "token").as_deref(),
            Some("abc")
        );
        assert_eq!(
            query_param(Some("x=1&token=a%2Bb+c&token=second"), "token").as_deref(),
            Some("a+b c")
        );
        assert_eq!(query_param(Some("tokens=abc"), "token"), None);
        assert_eq!(query_param(Some(""), "token"), None);
        assert_eq!(query_param(None, "token"), None);
    }

    #[test]
    fn only_json_bodies_are_accepted() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            " application/json ",
        ] {
            assert!(is_json_content_type(ok), "{ok:?}");
        }
        for bad in [
            "",
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "application/json-seq",
            "application/ld+json",
            "text/json",
            "application/json, text/plain",
        ] {
            assert!(!is_json_content_type(bad), "{bad:?}");
        }
        use hyper::Method;
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_mutating(&m), "{m}");
        }
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!is_mutating(&m), "{m}");
        }
    }

    #[test]
    fn hosts_are_ip_literals_localhost_or_listed() {
        let allowed = names(&["quoll-box", "cam.example.net"]);
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "192.168.1.10:80",
            "0.0.0.0",
            "[::1]",
            "[::1]:8080",
            "[fe80::1]:65535",
            "localhost",
            "LocalHost:8080",
            "quoll-box",
            "QUOLL-BOX:8080",
            "cam.example.net:1",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok:?}");
        }
        for bad in [
            "",
            ":8080",
            "evil.example",
            "evil.example:8080",
            "quoll-box.evil.example",
            "localhost.evil.example",
            "evil-quoll-box",
            "localhost.",
            "::1",
            "[::1",
            "[::1]8080",
            "[evil.example]",
            "[::1]:",
            "[::1]:99999",
            "127.0.0.1:",
            "127.0.0.1:http",
            "127.0.0.1:65536",
            "127.0.0.1:80:80",
            "127.1",
            "2130706433",
            "quoll-box:x",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad:?}");
        }
        assert!(!host_allowed("quoll-box", &[]));
    }

    #[test]
    fn origins_are_the_request_host_or_listed() {
        let allowed = names(&["http://dash.example:3000", "https://ops.example"]);
        let host = Some("192.168.1.10:8080");
        for ok in [
            "http://192.168.1.10:8080",
            "https://192.168.1.10:8080",
            "HTTP://192.168.1.10:8080",
            "http://dash.example:3000",
            "HTTPS://OPS.EXAMPLE",
        ] {
            assert!(origin_allowed(ok, host, &allowed), "{ok:?}");
        }
        for bad in [
            "",
            "null",
            "http://evil.example",
            "http://192.168.1.10",
            "http://192.168.1.10:9000",
            "http://192.168.1.10:8080.evil.example",
            "ws://192.168.1.10:8080",
            "file://",
            "http://dash.example",
            "http://dash.example:3001",
            "https://ops.example:443",
            "http://",
        ] {
            assert!(!origin_allowed(bad, host, &allowed), "{bad:?}");
        }
        // Without a Host only a listed origin passes.
        assert!(!origin_allowed("http://192.168.1.10:8080", None, &allowed));
        assert!(origin_allowed("http://dash.example:3000", None, &allowed));
    }

    #[test]
    fn every_refusal_has_its_status() {
        assert_eq!(Refusal::Unauthorized.status(), 401);
        assert_eq!(Refusal::UnsupportedMediaType.status(), 415);
        assert_eq!(Refusal::MisdirectedHost.status(), 421);
        assert_eq!(Refusal::ForbiddenOrigin.status(), 403);
        assert_eq!(Refusal::Unauthorized.code(), "unauthorized");
    }
}
