//! How session connections are made: this node accepts and dials every remote-actor session
//! itself, plaintext or over mutual TLS (tls.rs), and hands each stream to ractor_cluster's node
//! server as an external transport.
//!
//! ```text
//! peer ──TCP──▶ actor_listen (this module's listener; TCP_NODELAY, TCP_USER_TIMEOUT)
//!               TLS: at most MAX_HANDSHAKES at once, each within HANDSHAKE_TIMEOUT (tls.rs)
//!           ──▶ NodeServer (ConnectionOpenedExternal): ractor_cluster's cookie handshake, frames
//! ```
//!
//! Owning the sockets is what lets a session follow its link. Every session socket has
//! TCP_USER_TIMEOUT set to [`STALL_TIMEOUT`]: data left unacknowledged that long (the peer's
//! host unreachable, one direction of the link dropped) aborts the connection instead of
//! leaving it in TCP's exponential retransmission backoff, where it would carry traffic again
//! only at the next backed-off retransmission, seconds after the link heals. The session ends, its
//! attempts fail over at once, the peer's actors stop being targets (their failure history goes
//! with them), and the session loop dials the peer again every `advanced.redial_interval_ms`,
//! each dial's TCP connect bounded by [`connect_timeout`] so that a SYN lost in the outage is sent
//! again at the next round, not at the kernel's 1 s retransmission.
//!
//! ractor_cluster's own listener cannot be turned off: it listens on an ephemeral port of
//! 127.0.0.1 (plaintext, cookie-checked, reachable from this host only).

use std::net::SocketAddr;
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};
use tokio::net::{TcpListener, TcpStream};

use crate::tls::SessionTls;

/// Longest time data sent on a session may stay unacknowledged before the connection is aborted
/// (TCP_USER_TIMEOUT). A LAN acknowledges within a millisecond; at TCP's 200 ms minimum
/// retransmission timeout, 1 s is three retransmissions of the same segment in a row without an
/// answer. With 20% loss each way a round trip fails about 36% of the time, so a segment that no
/// later acknowledgement covers is aborted on about one time in twenty: the session is then
/// dialed again, and its attempts fail over.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(1);

/// A session socket without traffic for this long sends a keepalive probe, and another each
/// such interval (Linux counts both in whole seconds). With TCP_USER_TIMEOUT set, Linux aborts an
/// idle connection once nothing has arrived for [`STALL_TIMEOUT`] and a probe is unanswered (the
/// probe count does not apply): an idle session over a dead link ends after about 2 s, and so,
/// under heavy loss, does an idle healthy one whose probe was lost. Such a session has no attempt
/// in flight; it is dialed again at the next round.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(1);

/// How long one dial may take in all (TCP connect, then the TLS handshake if any).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a dial's TCP connect may take: a little less than the redial interval (so the next
/// round can dial again with a fresh SYN), between 100 ms and [`DIAL_TIMEOUT`].
pub fn connect_timeout(redial: Duration) -> Duration {
    (redial * 4 / 5).clamp(Duration::from_millis(100), DIAL_TIMEOUT)
}

/// Plaintext or mutual TLS.
#[derive(Clone, Debug)]
pub enum Transport {
    /// TCP only (the cookie handshake still applies; what crosses the wire is readable).
    Plain,
    /// Mutual TLS 1.3 with the certificates of `cluster.tls_dir`.
    Tls(SessionTls),
}

impl Transport {
    /// Dials `addr` and hands the session to `server`: TCP within `connect_limit`, everything
    /// within [`DIAL_TIMEOUT`]. The error says what failed, in words.
    pub async fn dial(
        &self,
        server: &ActorRef<NodeServerMessage>,
        addr: SocketAddr,
        connect_limit: Duration,
    ) -> Result<(), String> {
        let dial = async {
            let tcp = tokio::time::timeout(connect_limit, TcpStream::connect(addr))
                .await
                .map_err(|_| format!("connecting to {addr} timed out after {connect_limit:?}"))?
                .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
            prepare(&tcp);
            let peer = addr.to_string();
            let stream: Box<dyn ClusterBidiStream> = match self {
                Transport::Plain => Box::new(Session { stream: tcp, peer }),
                Transport::Tls(tls) => Box::new(Session { stream: tls.connect(tcp, addr).await?, peer }),
            };
            Ok::<_, String>(stream)
        };
        let stream = tokio::time::timeout(DIAL_TIMEOUT, dial)
            .await
            .map_err(|_| format!("connecting to {addr} timed out after {DIAL_TIMEOUT:?}"))??;
        server
            .cast(NodeServerMessage::ConnectionOpenedExternal { stream, is_server: false })
            .map_err(|err| format!("the node server is gone: {err}"))
    }

    /// Accepts sessions on `listener` forever and hands each to `server` (over TLS, once its
    /// handshake completes: tls.rs bounds those in flight and their time).
    pub async fn serve(self, listener: TcpListener, server: ActorRef<NodeServerMessage>) {
        let tls = match &self {
            Transport::Plain => None,
            Transport::Tls(tls) => Some((tls, crate::tls::Accepting::new())),
        };
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot accept a remote-actor connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            prepare(&tcp);
            match &tls {
                None => {
                    let stream = Box::new(Session { stream: tcp, peer: peer.to_string() });
                    let _ = server.cast(NodeServerMessage::ConnectionOpenedExternal { stream, is_server: true });
                }
                Some((tls, accepting)) => accepting.accept(tls, tcp, peer, &server),
            }
        }
    }
}

/// Socket options of every session: no Nagle delay (attempts are small messages that want an
/// answer), [`STALL_TIMEOUT`], and keepalive probes after [`KEEPALIVE_IDLE`] without traffic,
/// so that a side with nothing to send learns of a dead link (or, once the link is back, of a
/// peer that has already dropped the connection: its kernel answers the probe with a reset).
/// Public for the LAN suite's delay proxy (`testsuite`), whose sockets must behave as these.
pub fn prepare(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let socket = socket2::SockRef::from(tcp);
    let keepalive =
        socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_IDLE).with_retries(4);
    let set = socket.set_tcp_user_timeout(Some(STALL_TIMEOUT)).and_then(|()| socket.set_tcp_keepalive(&keepalive));
    if let Err(err) = set {
        tracing::warn!(error = %err, "cannot set TCP_USER_TIMEOUT or keepalive on a session socket");
    }
}

/// A session stream handed to ractor_cluster, labelled with the peer's address.
pub(crate) struct Session<S> {
    pub(crate) stream: S,
    pub(crate) peer: String,
}

impl<S> ClusterBidiStream for Session<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = tokio::io::split(self.stream);
        (Box::new(read), Box::new(write))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dial_connects_within_most_of_a_redial_interval() {
        assert_eq!(connect_timeout(Duration::from_millis(500)), Duration::from_millis(400));
        assert_eq!(connect_timeout(Duration::from_millis(10)), Duration::from_millis(100));
        assert_eq!(connect_timeout(Duration::from_secs(60)), DIAL_TIMEOUT);
    }

    #[tokio::test]
    async fn session_sockets_carry_the_stall_timeout_and_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        prepare(&tcp);
        let socket = socket2::SockRef::from(&tcp);
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(STALL_TIMEOUT));
        assert!(socket.tcp_nodelay().unwrap() && socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_IDLE);
    }
}
