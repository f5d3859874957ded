//! Accepting connections, for every listener kelp has: Kafka, peer, admin and webhook.
//!
//! Owns: the accept loop, the cap on connections open at once, the back-off after a failed
//! accept, one tracked task and one span per connection. Does not own what a connection says:
//! that is the handler each listener passes in (`connection`, `connection::peer`, `admin`,
//! `webhook`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{Instrument, info_span, warn};

use crate::shutdown::{CancellationToken, TaskTracker};

/// Pause after a failed accept. Running out of file descriptors is the usual cause and it is
/// transient; retrying at once would spin a core on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One listener's name (a span field) and connection cap.
#[derive(Debug, Clone, Copy)]
pub struct Door {
    pub name: &'static str,
    pub max_connections: usize,
}

/// Accept until `cancel` fires. Each connection holds one permit of the cap while `handle`
/// runs on `tracker`, so a drain waits for it; the accept loop itself stops at once.
pub async fn serve<H, F>(
    listener: TcpListener,
    door: Door,
    cancel: CancellationToken,
    tracker: TaskTracker,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(door.max_connections));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = limit.clone().acquire_owned() => p.expect("the connection semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(listener = door.name, error = %e, "accept failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let served = handle(stream, peer);
        tracker.spawn(
            async move {
                served.await;
                drop(permit);
            }
            .instrument(info_span!("conn", listener = door.name, %peer)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_until_one_ends_and_shutdown_stops_accepting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let door = Door { name: "test", max_connections: 1 };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let accepting = tokio::spawn(serve(listener, door, cancel.clone(), tracker.clone(), {
            move |mut s: TcpStream, _| {
                let tx = tx.clone();
                async move {
                    tx.send(()).unwrap();
                    let _ = s.read(&mut [0u8; 1]).await;
                }
            }
        }));
        let first = TcpStream::connect(addr).await.unwrap();
        rx.recv().await.unwrap();
        let _second = TcpStream::connect(addr).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
        assert!(waited.is_err(), "the second connection is not served while the first runs");
        drop(first);
        rx.recv().await.unwrap();
        cancel.cancel();
        accepting.await.unwrap();
    }
}
