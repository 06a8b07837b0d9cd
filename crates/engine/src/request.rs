//! The id that ties one request's log lines together, on every node it crosses.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Longest id accepted from a client (`x-request-id`) or another node.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// A request id: the client's `x-request-id` if it is a short printable ASCII string, else
/// generated. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The client's id if acceptable (1 to 64 printable ASCII characters, no spaces), else `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty() && raw.len() <= MAX_REQUEST_ID_LEN && raw.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(raw.into()))
    }

    /// A new id: this process's start time and a counter, in hex (unique across restarts and
    /// nodes in practice, and cheap: no random source on the request path).
    pub fn generate() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        static EPOCH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let epoch = *EPOCH.get_or_init(|| {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        });
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self(format!("{:012x}-{n:x}", epoch & 0xffff_ffff_ffff).into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_bounded_printable_ascii() {
        assert_eq!(RequestId::parse("abc-123").unwrap().as_str(), "abc-123");
        assert!(RequestId::parse("").is_none());
        assert!(RequestId::parse("has space").is_none());
        assert!(RequestId::parse("日志").is_none());
        assert!(RequestId::parse(&"x".repeat(65)).is_none());
        assert!(RequestId::parse(&"x".repeat(64)).is_some());
    }

    #[test]
    fn generated_ids_differ_and_parse() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_ne!(a, b);
        assert_eq!(RequestId::parse(a.as_str()), Some(a));
    }
}
