//! Where an RTMP push goes: `rtmp(s)://host[:port]/app[/more]/key[?query]` (or the URL up
//! to the app and the key apart, the manager's `dest_url` + `stream_key`), parsed once for
//! config validation and for the output (`output/rtmp.rs`). Errors never quote the key.

use std::fmt;

use super::publish::Target;

pub const RTMP_PORT: u16 = 1935;
pub const RTMPS_PORT: u16 = 443;

/// Why a push URL is not one. Never quotes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    NotUrl,
    Scheme(String),
    NoHost,
    /// No application name in the path.
    NoApp,
    /// No stream key: neither a last path segment after the app nor `stream_key`.
    NoKey,
    /// `stream_key` given and the URL's path also has a query (whose key would it be?).
    QueryWithStreamKey,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FORM: &str = "expected rtmp(s)://host[:port]/app/key";
        match self {
            UrlError::NotUrl => write!(f, "not a URL ({FORM})"),
            UrlError::Scheme(s) => write!(f, "scheme \"{s}\" is not rtmp or rtmps ({FORM})"),
            UrlError::NoHost => write!(f, "has no host ({FORM})"),
            UrlError::NoApp => write!(f, "has no application name ({FORM})"),
            UrlError::NoKey => write!(f, "has no stream key: {FORM}, or the key in stream_key"),
            UrlError::QueryWithStreamKey => write!(
                f,
                "has a query and stream_key is set: the query belongs to the stream key"
            ),
        }
    }
}

/// Where an output pushes, from its `url` (and `stream_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    /// As written (`[::1]` with its brackets).
    pub host: String,
    pub port: u16,
    /// App, tcUrl and key (whose `Debug` hides it).
    pub target: Target,
}

impl Endpoint {
    /// `rtmp(s)://host[:port]/app[/more]/key[?query]`: the app is every path segment but
    /// the last, the key the last and the query (platforms put tokens there). With
    /// `stream_key`, the whole path is the app.
    pub fn parse(url: &str, stream_key: Option<&str>) -> Result<Endpoint, UrlError> {
        let u = url::Url::parse(url).map_err(|_| UrlError::NotUrl)?;
        let (tls, default_port) = match u.scheme() {
            "rtmp" => (false, RTMP_PORT),
            "rtmps" => (true, RTMPS_PORT),
            other => return Err(UrlError::Scheme(other.to_owned())),
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(UrlError::NoHost)?
            .to_owned();
        let port = u.port().unwrap_or(default_port);
        // App and key as written: the URL parser would percent-encode some characters of a
        // key, and the server compares the key byte for byte.
        let after_scheme = &url[url.find("://").map_or(0, |i| i + 3)..];
        let raw = after_scheme
            .find('/')
            .map_or("", |i| &after_scheme[i + 1..]);
        let raw = raw.split('#').next().unwrap_or("");
        let (path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw, None),
        };
        let path = path.trim_end_matches('/');
        let (app, key) = match stream_key {
            Some(k) => {
                if query.is_some() {
                    return Err(UrlError::QueryWithStreamKey);
                }
                (path.to_owned(), k.to_owned())
            }
            None => {
                let (app, last) = path.rsplit_once('/').ok_or(if path.is_empty() {
                    UrlError::NoApp
                } else {
                    UrlError::NoKey
                })?;
                let key = match query {
                    Some(q) => format!("{last}?{q}"),
                    None => last.to_owned(),
                };
                (app.to_owned(), key)
            }
        };
        if app.is_empty() {
            return Err(UrlError::NoApp);
        }
        if key.is_empty() {
            return Err(UrlError::NoKey);
        }
        let authority = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        Ok(Endpoint {
            tls,
            host,
            port,
            target: Target {
                tc_url: format!("{}://{authority}/{app}", u.scheme()),
                app,
                key,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_app_and_key() {
        let e = Endpoint::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh", None).unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (false, "a.rtmp.youtube.com", 1935)
        );
        assert_eq!(e.target.app, "live2");
        assert_eq!(e.target.key, "abcd-efgh");
        assert_eq!(e.target.tc_url, "rtmp://a.rtmp.youtube.com/live2");
        let e = Endpoint::parse(
            "rtmps://live-api-s.facebook.com:443/rtmp/FB-1?s_bl=1&a=b",
            None,
        )
        .unwrap();
        assert_eq!((e.tls, e.port), (true, 443));
        assert_eq!(e.target.app, "rtmp");
        assert_eq!(e.target.key, "FB-1?s_bl=1&a=b");
        assert_eq!(e.target.tc_url, "rtmps://live-api-s.facebook.com:443/rtmp");
        assert!(!format!("{e:?}").contains("FB-1"), "Debug hides the key");
        let e = Endpoint::parse("rtmp://[::1]:1936/a/b/key", None).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("[::1]", 1936));
        assert_eq!(e.target.app, "a/b");
        // The key byte for byte, as the server will compare it.
        let e = Endpoint::parse("rtmp://h/app/k{1}|x^", None).unwrap();
        assert_eq!(e.target.key, "k{1}|x^");
        // The manager's form: the key apart.
        let e = Endpoint::parse("rtmps://ingest.example/app/", Some("k1")).unwrap();
        assert_eq!(
            (e.target.app.as_str(), e.target.key.as_str()),
            ("app", "k1")
        );
        assert_eq!((e.tls, e.port), (true, 443));
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_the_key() {
        let cases = [
            ("rtmp://host/app", None, UrlError::NoKey),
            ("rtmp://host/", None, UrlError::NoApp),
            ("rtmp://host//key", None, UrlError::NoApp),
            (
                "rtmp://host/app?x=1",
                Some("k"),
                UrlError::QueryWithStreamKey,
            ),
            ("http://host/app/key", None, UrlError::Scheme("http".into())),
            ("host/app/key", None, UrlError::NotUrl),
            ("rtmp:///app/key", None, UrlError::NoHost),
        ];
        for (url, key, want) in cases {
            assert_eq!(Endpoint::parse(url, key), Err(want.clone()), "{url}");
            assert!(!want.to_string().contains("key\""));
        }
    }
}
