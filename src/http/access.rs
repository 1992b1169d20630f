//! Who may use the local API, and what for: the node's tokens and lists, applied to a
//! request with the checks of `guard.rs`.
//!
//! - Every request: `Host` must be an IP literal, `localhost` or a listed name (421), and a
//!   POST, PUT, PATCH or DELETE must declare a JSON body (415).
//! - `/api/v1/*`: `Authorization: Bearer <api token>` (401).
//! - `/healthz`: open, but only status and version without a token; everything with it.
//! - `/ws/stream/*`: an `Origin` (when sent) of this host or listed (403), and a token
//!   (`?token=` or `Authorization: Bearer`, the viewer's or the API's) that is required when
//!   the listener is reachable beyond loopback and checked whenever it is given (401).
//!
//! The viewer token is read-only by construction: nothing but the stream route accepts it.

use std::path::Path;

use hyper::{Request, header};

use super::guard::{self, Refusal};
use super::token::{self, API_TOKEN_FILE, Origin, TokenError, VIEWER_TOKEN_FILE};
use crate::config::Config;
use crate::secret::Secret;

/// What `/healthz` shows a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthView {
    /// No token: status and version only.
    Summary,
    /// A valid API token: the whole health document.
    Full,
}

/// The node's access rules, built once at start (a config change applies at the next
/// start, like the listen address).
#[derive(Debug)]
pub struct Access {
    api_token: Secret,
    /// `None` when the config has no `bridge` block: then only the API token opens streams
    /// (and there are none).
    viewer_token: Option<Secret>,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    /// The listener is reachable beyond loopback: a viewer must bring a token.
    viewer_token_required: bool,
}

impl Access {
    pub fn new(
        api_token: Secret,
        viewer_token: Option<Secret>,
        allowed_hosts: Vec<String>,
        allowed_origins: Vec<String>,
        viewer_token_required: bool,
    ) -> Access {
        Access {
            api_token,
            viewer_token,
            allowed_hosts,
            allowed_origins,
            viewer_token_required,
        }
    }

    /// The rules of `config`: tokens from the config, else from (or newly written to) the
    /// token files in `data_dir`. Logs where each token comes from, never the token.
    ///
    /// A token file that cannot be written (no data dir, read-only disk) does not stop the
    /// node, as a degraded event log does not: the API then has a token nobody knows and
    /// refuses every request until `server.api_token` is set or the disk is fixed, and the
    /// error says so. Flows run on. Errors are only what no token can be made without.
    pub fn load(config: &Config, data_dir: &Path) -> Result<Access, TokenError> {
        let api_token = resolve(
            "API token",
            "server.api_token",
            config.server.api_token.as_deref(),
            data_dir,
            API_TOKEN_FILE,
        )?;
        let viewer_token = match &config.bridge {
            Some(b) => Some(resolve(
                "bridge viewer token",
                "bridge.viewer_token",
                b.viewer_token.as_deref(),
                data_dir,
                VIEWER_TOKEN_FILE,
            )?),
            None => None,
        };
        let viewer_token = viewer_token.filter(|v| {
            let same = v.matches(api_token.expose());
            if same {
                // Validation refuses this when both are in the config; here one comes from
                // a file. The viewer token sits in page URLs: it must not open the API.
                tracing::error!(
                    "the bridge viewer token equals the API token: only the API token opens \
                     streams until one of them is changed"
                );
            }
            !same
        });
        let loopback = config.server.listen_addr.to_canonical().is_loopback();
        let allowed_origins = config
            .bridge
            .as_ref()
            .map(|b| b.allowed_origins.clone())
            .unwrap_or_default();
        Ok(Access::new(
            api_token,
            viewer_token,
            config.server.allowed_hosts.clone(),
            allowed_origins,
            !loopback,
        ))
    }

    /// The checks every request passes first, whatever its route: `Host` (DNS rebinding)
    /// and, for a method that changes state, a JSON `Content-Type` (cross-site form posts).
    /// Neither depends on a secret, so they come before the token.
    pub fn check_request<B>(&self, req: &Request<B>) -> Result<(), Refusal> {
        self.host(req)?;
        if guard::is_mutating(req.method()) {
            match single(req, header::CONTENT_TYPE) {
                Ok(Some(ct)) if guard::is_json_content_type(ct) => {}
                _ => return Err(Refusal::UnsupportedMediaType),
            }
        }
        Ok(())
    }

    /// `/api/v1/*`: the API token, and nothing else.
    pub fn check_api<B>(&self, req: &Request<B>) -> Result<(), Refusal> {
        match single(req, header::AUTHORIZATION) {
            Ok(Some(v)) => match guard::bearer(v) {
                Some(t) if self.api_token.matches(t) => Ok(()),
                _ => Err(Refusal::Unauthorized),
            },
            _ => Err(Refusal::Unauthorized),
        }
    }

    /// `/healthz`: anyone gets the summary; a caller that sends a token gets the whole
    /// document if it is the API token, and a 401 if it is not (a monitor with a stale
    /// token hears about it instead of silently seeing less).
    pub fn health_view<B>(&self, req: &Request<B>) -> Result<HealthView, Refusal> {
        if req.headers().get(header::AUTHORIZATION).is_none() {
            return Ok(HealthView::Summary);
        }
        self.check_api(req).map(|()| HealthView::Full)
    }

    /// `/ws/stream/*`: the page's origin, then the viewer's token.
    pub fn check_viewer<B>(&self, req: &Request<B>) -> Result<(), Refusal> {
        match single(req, header::ORIGIN) {
            Ok(None) => {}
            Ok(Some(origin)) => {
                let host = self.host(req)?;
                if !guard::origin_allowed(origin, Some(host), &self.allowed_origins) {
                    return Err(Refusal::ForbiddenOrigin);
                }
            }
            Err(()) => return Err(Refusal::ForbiddenOrigin),
        }
        let from_query = guard::query_param(req.uri().query(), "token");
        let given = match (&from_query, single(req, header::AUTHORIZATION)) {
            (Some(t), _) => Some(t.as_ref()),
            (None, Ok(None)) => None,
            (None, Ok(Some(v))) => Some(guard::bearer(v).ok_or(Refusal::Unauthorized)?),
            (None, Err(())) => return Err(Refusal::Unauthorized),
        };
        match given {
            Some(t) => {
                let viewer = self.viewer_token.as_ref().is_some_and(|v| v.matches(t));
                // Both are compared, always: which one matched must not show in the time.
                let api = self.api_token.matches(t);
                if viewer | api {
                    Ok(())
                } else {
                    Err(Refusal::Unauthorized)
                }
            }
            None if self.viewer_token_required => Err(Refusal::Unauthorized),
            None => Ok(()),
        }
    }

    /// The host the request names, when it is one this node answers to. In absolute form
    /// (`GET http://host/path`) the URI's authority is what counts (RFC 9112 section 3.2.2)
    /// and must pass as well.
    fn host<'r, B>(&self, req: &'r Request<B>) -> Result<&'r str, Refusal> {
        if let Some(a) = req.uri().authority()
            && !guard::host_allowed(a.as_str(), &self.allowed_hosts)
        {
            return Err(Refusal::MisdirectedHost);
        }
        let host = match single(req, header::HOST) {
            Ok(Some(h)) => h,
            Ok(None) => match req.uri().authority() {
                Some(a) => a.as_str(),
                None => return Err(Refusal::MisdirectedHost),
            },
            Err(()) => return Err(Refusal::MisdirectedHost),
        };
        if guard::host_allowed(host, &self.allowed_hosts) {
            Ok(host)
        } else {
            Err(Refusal::MisdirectedHost)
        }
    }
}

/// The one value of a header: `Ok(None)` when absent, `Err` when repeated or not visible
/// ASCII (a request that says two things is not guessed at).
fn single<B>(req: &Request<B>, name: header::HeaderName) -> Result<Option<&str>, ()> {
    let mut values = req.headers().get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    first.to_str().map(Some).map_err(|_| ())
}

/// One token: the config's, else the file's (read, or created).
fn resolve(
    what: &str,
    key: &str,
    configured: Option<&str>,
    data_dir: &Path,
    file: &str,
) -> Result<Secret, TokenError> {
    if let Some(t) = configured {
        tracing::info!("{what}: {key} from the config");
        return Ok(Secret::new(t));
    }
    let path = data_dir.join(file);
    match token::load_or_create(data_dir, file) {
        Ok((t, origin)) => {
            match origin {
                Origin::Read => {
                    tracing::info!(path = %path.display(), "{what} read from its file")
                }
                Origin::Created => {
                    tracing::info!(path = %path.display(), "{what} generated (first start)")
                }
                Origin::Replaced => tracing::warn!(
                    path = %path.display(),
                    "{what} file held no usable token: generated a new one"
                ),
            }
            Ok(t)
        }
        Err(TokenError::Random) => Err(TokenError::Random),
        Err(e) => {
            tracing::error!(
                "{what}: {e}; using a token nobody knows for this run: requests that need \
                 it are refused until {key} is set or the file can be written"
            );
            token::generate()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = "api-token-0123456789abcdef";
    const VIEWER: &str = "viewer-token-0123456789abcdef";

    fn access(required: bool) -> Access {
        Access::new(
            Secret::new(API),
            Some(Secret::new(VIEWER)),
            vec!["quoll-box".into()],
            vec!["http://dash.example:3000".into()],
            required,
        )
    }

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn every_request_names_a_known_host_and_mutations_declare_json() {
        let a = access(false);
        let ok = |m, h: &[(&str, &str)]| a.check_request(&req(m, "/api/v1/flows", h));
        assert_eq!(ok("GET", &[("host", "127.0.0.1:8080")]), Ok(()));
        assert_eq!(ok("GET", &[("host", "quoll-box:8080")]), Ok(()));
        assert_eq!(
            ok("GET", &[("host", "evil.example:8080")]),
            Err(Refusal::MisdirectedHost)
        );
        assert_eq!(ok("GET", &[]), Err(Refusal::MisdirectedHost));
        assert_eq!(
            ok("GET", &[("host", "127.0.0.1"), ("host", "evil.example")]),
            Err(Refusal::MisdirectedHost)
        );
        // Absolute form: the URI's authority counts too.
        assert_eq!(
            a.check_request(&req(
                "GET",
                "http://evil.example/api/v1/flows",
                &[("host", "127.0.0.1")]
            )),
            Err(Refusal::MisdirectedHost)
        );
        assert_eq!(
            ok(
                "POST",
                &[("host", "127.0.0.1"), ("content-type", "text/plain")]
            ),
            Err(Refusal::UnsupportedMediaType)
        );
        assert_eq!(
            ok("DELETE", &[("host", "127.0.0.1")]),
            Err(Refusal::UnsupportedMediaType)
        );
        assert_eq!(
            ok(
                "POST",
                &[
                    ("host", "127.0.0.1"),
                    ("content-type", "application/json; charset=utf-8")
                ]
            ),
            Ok(())
        );
        // The Host check comes first.
        assert_eq!(
            ok(
                "POST",
                &[("host", "evil.example"), ("content-type", "text/plain")]
            ),
            Err(Refusal::MisdirectedHost)
        );
    }

    #[test]
    fn the_api_takes_the_api_token_only() {
        let a = access(false);
        let check = |h: &[(&str, &str)]| a.check_api(&req("GET", "/api/v1/flows", h));
        assert_eq!(
            check(&[("authorization", &format!("Bearer {API}"))]),
            Ok(())
        );
        assert_eq!(check(&[]), Err(Refusal::Unauthorized));
        for bad in [
            format!("Bearer {VIEWER}"),
            format!("Bearer {API}x"),
            format!("Basic {API}"),
            API.to_string(),
            "Bearer".to_string(),
        ] {
            assert_eq!(
                check(&[("authorization", &bad)]),
                Err(Refusal::Unauthorized),
                "{bad}"
            );
        }
        let twice = [
            ("authorization", format!("Bearer {API}")),
            ("authorization", format!("Bearer {API}")),
        ];
        let twice: Vec<(&str, &str)> = twice.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(check(&twice), Err(Refusal::Unauthorized));
    }

    #[test]
    fn health_shows_more_with_the_api_token_only() {
        let a = access(false);
        let view = |h: &[(&str, &str)]| a.health_view(&req("GET", "/healthz", h));
        assert_eq!(view(&[]), Ok(HealthView::Summary));
        assert_eq!(
            view(&[("authorization", &format!("Bearer {API}"))]),
            Ok(HealthView::Full)
        );
        assert_eq!(
            view(&[("authorization", "Bearer wrong")]),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            view(&[("authorization", &format!("Bearer {VIEWER}"))]),
            Err(Refusal::Unauthorized)
        );
    }

    #[test]
    fn viewers_need_an_origin_of_ours_and_a_token_beyond_loopback() {
        let host = ("host", "192.168.1.10:8080");
        for required in [false, true] {
            let a = access(required);
            let check = |uri: &str, h: &[(&str, &str)]| a.check_viewer(&req("GET", uri, h));
            let with_viewer = format!("/ws/stream/cam?token={VIEWER}");
            let with_api = format!("/ws/stream/cam?token={API}");
            // Origins.
            for origin in ["http://192.168.1.10:8080", "http://dash.example:3000"] {
                assert_eq!(
                    check(&with_viewer, &[host, ("origin", origin)]),
                    Ok(()),
                    "{origin}"
                );
            }
            for origin in ["http://evil.example", "null", "http://192.168.1.10:9000"] {
                assert_eq!(
                    check(&with_viewer, &[host, ("origin", origin)]),
                    Err(Refusal::ForbiddenOrigin),
                    "{origin}"
                );
            }
            // Tokens: either one, by query or header; a wrong one never passes.
            assert_eq!(check(&with_viewer, &[host]), Ok(()));
            assert_eq!(check(&with_api, &[host]), Ok(()));
            let bearer = format!("Bearer {VIEWER}");
            assert_eq!(
                check("/ws/stream/cam", &[host, ("authorization", &bearer)]),
                Ok(())
            );
            assert_eq!(
                check("/ws/stream/cam?token=wrong", &[host]),
                Err(Refusal::Unauthorized)
            );
            assert_eq!(
                check("/ws/stream/cam?token=", &[host]),
                Err(Refusal::Unauthorized)
            );
            // None at all: fine on loopback only.
            let expect = if required {
                Err(Refusal::Unauthorized)
            } else {
                Ok(())
            };
            assert_eq!(check("/ws/stream/cam", &[host]), expect);
        }
    }

    #[test]
    fn load_takes_configured_tokens_and_knows_loopback() {
        let dir = std::env::temp_dir().join(format!("quoll-access-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = crate::config::parse(crate::config::EMBEDDED_DEFAULT).unwrap();
        cfg.server.api_token = Some(API.into());
        let a = Access::load(&cfg, &dir).unwrap();
        assert!(a.api_token.matches(API));
        assert!(a.viewer_token.is_none(), "no bridge, no viewer token");
        assert!(!a.viewer_token_required);
        assert!(
            !dir.join(API_TOKEN_FILE).exists(),
            "a configured token makes no file"
        );

        cfg.server.api_token = None;
        cfg.server.listen_addr = "0.0.0.0".parse().unwrap();
        cfg.bridge = Some(crate::config::BridgeConfig::default());
        let a = Access::load(&cfg, &dir).unwrap();
        assert!(a.viewer_token_required);
        let file = std::fs::read_to_string(dir.join(API_TOKEN_FILE)).unwrap();
        assert!(a.api_token.matches(file.trim()));
        let file = std::fs::read_to_string(dir.join(VIEWER_TOKEN_FILE)).unwrap();
        assert!(a.viewer_token.as_ref().unwrap().matches(file.trim()));

        for (addr, required) in [("::1", false), ("::ffff:127.0.0.1", false), ("::", true)] {
            cfg.server.listen_addr = addr.parse().unwrap();
            let a = Access::load(&cfg, &dir).unwrap();
            assert_eq!(a.viewer_token_required, required, "{addr}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
