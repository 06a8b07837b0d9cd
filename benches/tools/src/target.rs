//! Which servers the load generator may send to: loopback only.
//!
//! Load is sent only to this machine (127.0.0.0/8, `localhost`, `::1`); any other host is refused
//! before a single packet leaves, with an error that says why. `localhost` is additionally pinned
//! to 127.0.0.1 by the caller (reqwest's `resolve`), so a surprising hosts file cannot redirect it.

use std::net::IpAddr;

use reqwest::Url;

/// Why a URL is not an acceptable load target.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TargetError {
    /// Not a URL at all.
    #[error("invalid URL {url:?}: {reason}")]
    Parse {
        /// As given.
        url: String,
        /// The parser's message.
        reason: String,
    },
    /// Only plain HTTP is spoken (senti serves HTTP; TLS would measure something else).
    #[error("the URL {url:?} must start with http:// (got scheme {scheme:?})")]
    Scheme {
        /// As given.
        url: String,
        /// The scheme found.
        scheme: String,
    },
    /// The host is not on this machine.
    #[error(
        "refusing to send load to {host:?}: only loopback targets are allowed \
         (127.0.0.0/8, localhost or [::1]), e.g. --url http://127.0.0.1:8080"
    )]
    NotLoopback {
        /// The host found in the URL.
        host: String,
    },
}

/// Parses `raw` and accepts it only if its host is a loopback address or `localhost`.
/// The path is dropped: routes are chosen with `--route`.
pub fn loopback_url(raw: &str) -> Result<Url, TargetError> {
    let url = Url::parse(raw).map_err(|err| TargetError::Parse { url: raw.to_owned(), reason: err.to_string() })?;
    if url.scheme() != "http" {
        return Err(TargetError::Scheme { url: raw.to_owned(), scheme: url.scheme().to_owned() });
    }
    let host = url.host_str().unwrap_or("");
    if !is_loopback_host(host) {
        return Err(TargetError::NotLoopback { host: host.to_owned() });
    }
    Ok(url)
}

/// `host` as the URL parser normalised it: IPv4 in dotted form (`127.1` became `127.0.0.1`),
/// IPv6 in brackets, names lowercased.
fn is_loopback_host(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_accepted() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.3.2.1:1/",
            "http://127.1:9000",
            "http://localhost:8080",
            "http://LOCALHOST:8080",
            "http://[::1]:8080",
        ] {
            assert!(loopback_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn other_hosts_are_refused_with_a_clear_error() {
        for url in [
            "http://10.0.0.1:8080",
            "http://192.168.1.10",
            "http://example.com",
            "http://localhost.example.com",
            "http://0.0.0.0:8080",
            "http://[::ffff:127.0.0.1]:80",
            "http://[2001:db8::1]",
        ] {
            let err = loopback_url(url).unwrap_err();
            assert!(matches!(err, TargetError::NotLoopback { .. }), "{url}: {err}");
            assert!(err.to_string().contains("only loopback targets"), "{err}");
        }
    }

    #[test]
    fn non_http_and_garbage_are_refused() {
        assert!(matches!(loopback_url("https://127.0.0.1"), Err(TargetError::Scheme { .. })));
        assert!(matches!(
            loopback_url("127.0.0.1:8080"),
            Err(TargetError::Scheme { .. }) | Err(TargetError::Parse { .. })
        ));
        assert!(matches!(loopback_url("not a url"), Err(TargetError::Parse { .. })));
    }
}
