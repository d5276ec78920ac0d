//! The TCP side of gossip, on the same port number as the UDP socket:
//! full-state push-pull, foca messages too big for one datagram, and leave
//! notices.
//!
//! One request per connection. A frame is a 4-byte big-endian length then
//! the body: a postcard-encoded [`Wire`] message, sealed with the keyring
//! when encryption is on. Frames are bounded and every connection has a
//! deadline, so a slow or hostile peer holds at most one task for a while.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;

use super::keyring::KeyringError;
use super::runtime::Inbound;
use super::{Member, Shared};

/// Largest frame read or written.
pub(super) const MAX_FRAME: usize = 4 << 20;
/// Connections served at once; more are closed at once.
const MAX_INBOUND: usize = 128;

/// What goes over a gossip TCP connection.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Wire {
    /// A foca message, as it would have gone over UDP. One way.
    Packet(Vec<u8>),
    /// The sender's full membership view; answered with the receiver's.
    PushPull(SyncState),
    /// The sender is about to leave the cluster; answered with `Ack`.
    Leaving(Member),
    /// Receipt of `Leaving`.
    Ack,
}

/// A full membership view.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct SyncState {
    /// Every member known, down ones included, and the sender itself.
    pub members: Vec<foca::Member<Member>>,
    /// Members that announced their leave, with how long ago it was heard
    /// (in ms), so that every agent forgets them at about the same time.
    pub left: Vec<(Member, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum TransportError {
    #[error("cannot {op} {peer}: {source}")]
    Io {
        op: &'static str,
        peer: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{peer} did not answer within {after:?}")]
    Timeout { peer: SocketAddr, after: Duration },
    #[error("a frame of {len} bytes to or from {peer} is over the {MAX_FRAME}-byte limit")]
    TooLarge { peer: SocketAddr, len: usize },
    #[error("dropped a frame from {peer}: {source}")]
    Open {
        peer: SocketAddr,
        #[source]
        source: KeyringError,
    },
    #[error("undecodable frame from {peer}: {source}")]
    Decode {
        peer: SocketAddr,
        #[source]
        source: postcard::Error,
    },
    #[error("cannot encode a frame for {peer}: {source}")]
    Encode {
        peer: SocketAddr,
        #[source]
        source: postcard::Error,
    },
    #[error("{peer} sent {what}, which makes no sense here")]
    Unexpected { peer: SocketAddr, what: &'static str },
}

fn io_err(op: &'static str, peer: SocketAddr) -> impl FnOnce(std::io::Error) -> TransportError {
    move |source| TransportError::Io { op, peer, source }
}

async fn read_frame(stream: &mut TcpStream, peer: SocketAddr) -> Result<Vec<u8>, TransportError> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(io_err("read from", peer))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(TransportError::TooLarge { peer, len });
    }
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(io_err("read from", peer))?;
    Ok(body)
}

async fn write_frame(stream: &mut TcpStream, peer: SocketAddr, body: &[u8]) -> Result<(), TransportError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l as usize <= MAX_FRAME)
        .ok_or(TransportError::TooLarge {
            peer,
            len: body.len(),
        })?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame).await.map_err(io_err("write to", peer))?;
    stream.flush().await.map_err(io_err("write to", peer))
}

fn encode(shared: &Shared, peer: SocketAddr, msg: &Wire) -> Result<Vec<u8>, TransportError> {
    let plain = postcard::to_allocvec(msg).map_err(|source| TransportError::Encode { peer, source })?;
    let body = shared.seal(&plain);
    shared.count_sent(body.len() + 4);
    Ok(body)
}

fn decode(shared: &Shared, peer: SocketAddr, body: &[u8]) -> Result<Wire, TransportError> {
    shared.count_received(body.len() + 4);
    let plain = shared
        .open(body)
        .map_err(|source| TransportError::Open { peer, source })?;
    postcard::from_bytes(&plain).map_err(|source| TransportError::Decode { peer, source })
}

/// Sends `msg` to `peer`'s gossip port and, if `reply`, reads the answer;
/// all within `timeout`.
pub(super) async fn request(
    shared: &Shared,
    peer: SocketAddr,
    msg: &Wire,
    reply: bool,
    timeout: Duration,
) -> Result<Option<Wire>, TransportError> {
    let body = encode(shared, peer, msg)?;
    let exchange = async {
        let mut stream = TcpStream::connect(peer)
            .await
            .map_err(io_err("connect to", peer))?;
        let _ = stream.set_nodelay(true);
        write_frame(&mut stream, peer, &body).await?;
        if !reply {
            return Ok(None);
        }
        let answer = read_frame(&mut stream, peer).await?;
        decode(shared, peer, &answer).map(Some)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| TransportError::Timeout { peer, after: timeout })?
}

/// Accepts gossip connections until the task is aborted; each request goes
/// to the runtime through `inbound`.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    inbound: mpsc::Sender<Inbound>,
    timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(MAX_INBOUND));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::debug!(error = %e, "gossip TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many gossip TCP connections: closed one");
            continue;
        };
        let shared = shared.clone();
        let inbound = inbound.clone();
        tokio::spawn(
            async move {
                let _slot = slot;
                match tokio::time::timeout(timeout, serve_one(stream, peer, &shared, &inbound)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "gossip TCP request failed"),
                    Err(_) => tracing::debug!(%peer, after = ?timeout, "gossip TCP request timed out"),
                }
            }
            .in_current_span(),
        );
    }
}

async fn serve_one(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    inbound: &mpsc::Sender<Inbound>,
) -> Result<(), TransportError> {
    let body = read_frame(&mut stream, peer).await?;
    match decode(shared, peer, &body)? {
        Wire::Packet(data) => {
            let _ = inbound.send(Inbound::Packet { from: peer, data }).await;
        }
        Wire::PushPull(state) => {
            let (tx, rx) = oneshot::channel();
            let asked = Inbound::PushPull {
                from: peer,
                state,
                reply: tx,
            };
            if inbound.send(asked).await.is_err() {
                return Ok(());
            }
            // The runtime has stopped when the sender is dropped.
            let Ok(ours) = rx.await else { return Ok(()) };
            let answer = encode(shared, peer, &Wire::PushPull(ours))?;
            write_frame(&mut stream, peer, &answer).await?;
        }
        Wire::Leaving(member) => {
            let _ = inbound.send(Inbound::Leaving { from: peer, member }).await;
            let answer = encode(shared, peer, &Wire::Ack)?;
            write_frame(&mut stream, peer, &answer).await?;
        }
        Wire::Ack => {
            return Err(TransportError::Unexpected {
                peer,
                what: "an unasked Ack",
            });
        }
    }
    Ok(())
}
