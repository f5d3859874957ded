//! The Kafka listener: accepts connections, bounds how many run at once, and gives each one a
//! task and a span. Owns nothing about what a connection says: that is `connection.rs`.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, info_span, warn};

use crate::connection;
use crate::ctx::Ctx;
use crate::shutdown::{CancellationToken, TaskTracker};

/// Accept until `cancel` fires. Each connection holds one permit of the connection limit.
pub async fn serve(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections as usize));
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
                    // Running out of file descriptors is transient; don't spin on it.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let cancel = cancel.clone();
        tracker.spawn(
            async move {
                let r = connection::serve(&ctx, stream, &cancel).await;
                if let Err(e) = r {
                    debug!(error = %e, "connection closed");
                }
                drop(permit);
            }
            .instrument(info_span!("conn", %peer)),
        );
    }
}
