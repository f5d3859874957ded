//! One long-lived `PublishMessage` stream per partition, shared by every caller.
//!
//! Owns: the stream task (spawned on the process's task tracker, so shutdown waits for it),
//! matching acks to batches, and writing the partition markers into an empty partition.
//! Does not own: which publisher serves a partition, retries on a fresh stream, or turning
//! broker offsets into Kafka offsets (all in `Seaweed::publish`).
//!
//! How the 4.48 broker answers (read in `broker_grpc_pub.go` and checked against the server):
//! after the init request it sends one empty "hello" response (or a response whose `error`
//! says why it refuses, then ends the stream); after that it answers every data message with
//! exactly one response, in order, carrying the `assigned_offset`. `ack_interval` is ignored
//! (periodic acks are switched off upstream). A failed append ends the stream with a status.
//!
//! So acks are matched to callers first-in first-out: each batch waits for as many responses
//! as it has messages. When the stream breaks, every waiting batch gets a retriable error —
//! a batch is never dropped silently — and the next publish opens a new stream (after a fresh
//! topic lookup, so a moved partition is followed). Batches that never reached the stream are
//! reported as [`Outcome::NotSent`] so the caller can retry them on a new stream without
//! risking duplicates.
//!
//! A broker that restarts continues a partition's offsets from its checkpoint in the filer
//! (see `progress`), so offsets it assigned after the checkpoint would be handed out again.
//! A stream that follows a failed one therefore first publishes one hidden record (the
//! partition marker, which fetches skip) and compares its offset with the highest offset this
//! process was acknowledged ([`Progress`]). When the broker fell back, the offsets up to that
//! one are filled with more hidden records before any producer's record goes out, so no
//! offset is acknowledged twice. (The partition's high-water mark cannot tell: after a
//! restart `GetPartitionRangeInfo` reported the end of the flushed files while the broker
//! assigned offsets from its older checkpoint.)

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::pb::messaging_pb::publish_message_request::{InitMessage, Message as Req};
use super::pb::messaging_pb::{
    DataMessage, GetPartitionRangeInfoRequest, PublishMessageRequest, PublishMessageResponse,
};
use super::pb::schema_pb::{Partition, Topic};
use super::progress::Progress;
use super::rpc::{Clients, Failure, call, request};
use super::{Message, layout};
use crate::error::{Error, UpstreamCode};
use crate::shutdown::{CancellationToken, TaskTracker};

/// Most messages sent on one stream and not yet acknowledged, and (separately) most
/// messages admitted but not yet sent. Callers beyond this wait (bounded by their call
/// timeout), which is the backpressure towards Kafka producers.
const MAX_IN_FLIGHT: usize = 4096;

/// Requests buffered between the stream task and the HTTP/2 body.
const REQUEST_BUFFER: usize = 64;

/// Most batches queued for one stream before callers wait for room.
const QUEUED_BATCHES: usize = 256;

/// A stream with nothing in flight is closed after this long, so idle partitions do not pin
/// broker memory. The next publish opens it again. Once the process is stopping, a stream is
/// closed as soon as it has nothing in flight.
const IDLE_CLOSE: Duration = Duration::from_secs(60);

/// Most lost offsets a stream fills when it finds the broker fell back; beyond that the
/// stream refuses to publish (an error log says why) rather than reuse offsets.
const MAX_FILL: i64 = 1_000_000;

/// Fill records sent before their acks are read (the broker answers each in turn).
const FILL_CHUNK: i64 = 32;

/// Name the broker shows for kelp's publishers.
const PUBLISHER_NAME: &str = "kelp";

/// Where a publisher's stream goes: one generation of one partition of one MQ topic, on the
/// broker that leads it. A publisher whose target differs from the current topic layout is
/// stale and gets replaced.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Target {
    pub(super) namespace: String,
    pub(super) mq_topic: String,
    pub(super) partition: Partition,
    pub(super) leader: String,
}

/// What happened to one batch.
pub(super) enum Outcome {
    /// Every message acknowledged; offsets in message order.
    Acked(Vec<i64>),
    /// The batch never reached the stream; retrying it elsewhere cannot duplicate anything.
    NotSent(Error),
    /// The stream failed with the batch (partly) sent; the caller must report the error.
    Failed(Error),
}

struct Batch {
    messages: Vec<Message>,
    reply: oneshot::Sender<Outcome>,
    /// [`QUEUED`] until the task admits the batch to the stream ([`ADMITTED`]) or its caller
    /// gives up on it first ([`ABANDONED`]): whichever comes first decides, so a caller that
    /// gave up knows whether the batch can still be stored.
    state: Arc<AtomicU8>,
}

const QUEUED: u8 = 0;
const ADMITTED: u8 = 1;
const ABANDONED: u8 = 2;

/// Handle to a running stream task. Cloning is cheap; the task ends when its stream fails,
/// after [`IDLE_CLOSE`] without traffic, when the process is stopping and nothing is in
/// flight, or when every handle is gone.
#[derive(Clone)]
pub(super) struct Publisher {
    target: Arc<Target>,
    tx: mpsc::Sender<Batch>,
    /// The stream answers an admitted batch within this long (its acknowledgement deadline).
    call_timeout: Duration,
}

impl Publisher {
    /// Start the task for `target` on `tracker`. `acked` is notified whenever records were
    /// acknowledged, which wakes fetches waiting on this partition in this process. After
    /// `cancel`, the task still takes batches (requests finishing during the drain) but closes
    /// the stream as soon as none is in flight.
    pub(super) fn spawn(
        clients: Arc<Clients>,
        target: Target,
        progress: Arc<Progress>,
        acked: Arc<Notify>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Publisher {
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        let target = Arc::new(target);
        let call_timeout = clients.call_timeout;
        let span = tracing::debug_span!("publish_stream", topic = %target.mq_topic,
            range = %format!("{}-{}", target.partition.range_start, target.partition.range_stop),
            broker = %target.leader);
        tracker.spawn(tracing::Instrument::instrument(
            run(clients, Arc::clone(&target), progress, rx, acked, cancel),
            span,
        ));
        Publisher { target, tx, call_timeout }
    }

    pub(super) fn target(&self) -> &Target {
        &self.target
    }

    /// Whether the task has ended (the handle must then be replaced).
    pub(super) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Queue `messages` behind every batch queued before (the stream sends batches in the
    /// order they were queued); the wait for their acknowledgement until `deadline`
    /// ([`Acks::outcome`]), or why they were not queued (the stream had closed, or it could
    /// not take them before `deadline`: they will never be stored).
    pub(super) async fn enqueue(
        &self,
        messages: Vec<Message>,
        deadline: Instant,
    ) -> Result<Acks, Error> {
        let (reply, wait) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let batch = Batch { messages, reply, state: Arc::clone(&state) };
        match tokio::time::timeout_at(deadline, self.tx.send(batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(closed("publish stream already closed")),
            Err(_) => return Err(Error::Timeout { op: "publish", after: self.call_timeout }),
        }
        Ok(Acks { wait, state, deadline, call_timeout: self.call_timeout })
    }
}

/// The acknowledgement of one queued batch. Dropped unawaited, a batch the stream has not
/// taken yet is skipped.
pub(super) struct Acks {
    wait: oneshot::Receiver<Outcome>,
    state: Arc<AtomicU8>,
    deadline: Instant,
    call_timeout: Duration,
}

impl Acks {
    /// Wait for the acknowledgement until the deadline given to [`Publisher::enqueue`]. A
    /// batch still queued then is withdrawn ([`Outcome::NotSent`]: it will never be stored).
    /// A batch already on the stream cannot be withdrawn, so its answer is awaited past the
    /// deadline: the stream answers it within its acknowledgement deadline (one call timeout
    /// after it was admitted). So an error means the batch is not stored and will not be,
    /// except [`Outcome::Failed`], which means it may be.
    pub(super) async fn outcome(self) -> Outcome {
        let Acks { mut wait, state, deadline, call_timeout } = self;
        let timed_out = || Error::Timeout { op: "publish", after: call_timeout };
        let answer = match tokio::time::timeout_at(deadline, &mut wait).await {
            Ok(answer) => answer,
            Err(_) => {
                if state.compare_exchange(QUEUED, ABANDONED, SeqCst, SeqCst).is_ok() {
                    return Outcome::NotSent(timed_out());
                }
                match tokio::time::timeout(call_timeout, wait).await {
                    Ok(answer) => answer,
                    Err(_) => return Outcome::Failed(timed_out()),
                }
            }
        };
        match answer {
            Ok(outcome) => outcome,
            // The task ended without answering: it was dropped before taking the batch.
            Err(_) => Outcome::NotSent(closed("publish stream closed")),
        }
    }
}

fn closed(why: &str) -> Error {
    Error::Broker { op: "publish", code: UpstreamCode::Unavailable, message: why.to_string() }
}

/// A batch admitted to the stream, waiting for its acks.
struct Pending {
    reply: oneshot::Sender<Outcome>,
    offsets: Vec<i64>,
    want: usize,
    /// How many of its messages were handed to the stream.
    sent: usize,
    admitted_at: Instant,
}

async fn run(
    clients: Arc<Clients>,
    target: Arc<Target>,
    progress: Arc<Progress>,
    mut rx: mpsc::Receiver<Batch>,
    acked: Arc<Notify>,
    cancel: CancellationToken,
) {
    let timeout = clients.call_timeout;
    let (req_tx, mut responses) = match open(&clients, &target).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(error = %e, "could not open publish stream");
            if matches!(
                e,
                Error::Timeout { .. } | Error::Broker { code: UpstreamCode::Unavailable, .. }
            ) {
                clients.forget_broker(&target.leader);
            }
            fail_queued(&mut rx, &e);
            return;
        }
    };

    if let Err(e) = mark_empty_partition(&clients, &target, &req_tx, &mut responses).await {
        tracing::debug!(error = %e, "could not write partition markers");
        fail_queued(&mut rx, &e);
        return;
    }
    if progress.is_broken() && progress.acked() >= 0 {
        if let Err(e) = fill_lost_offsets(&clients, &progress, &req_tx, &mut responses).await {
            tracing::debug!(error = %e, "could not fill lost offsets");
            fail_queued(&mut rx, &e);
            return;
        }
        progress.set_broken(false);
    }

    let mut pending: VecDeque<Pending> = VecDeque::new();
    // Admitted messages not yet handed to the stream. Sending happens in its own branch so
    // acks keep being read however large a batch is: the broker answers each message before
    // reading the next, so an unread ack backlog would stall it and, in turn, us.
    let mut outbox: VecDeque<DataMessage> = VecDeque::new();
    let mut in_flight = 0usize;
    let mut last_activity = Instant::now();
    let mut accepting = true;

    let failure = loop {
        let ack_deadline = pending.front().map(|p| p.admitted_at + timeout);
        let idle_deadline = last_activity + IDLE_CLOSE;
        tokio::select! {
            batch = rx.recv(), if accepting && outbox.len() < MAX_IN_FLIGHT => match batch {
                None => {
                    accepting = false;
                    if pending.is_empty() {
                        break None;
                    }
                }
                Some(batch) => {
                    let admitted =
                        batch.state.compare_exchange(QUEUED, ADMITTED, SeqCst, SeqCst).is_ok();
                    if !admitted || batch.reply.is_closed() || batch.messages.is_empty() {
                        // The caller gave up before the batch was sent, or sent nothing.
                        let _ = batch.reply.send(Outcome::Acked(Vec::new()));
                        continue;
                    }
                    let want = batch.messages.len();
                    outbox.extend(batch.messages.into_iter().map(|m| DataMessage {
                        key: m.key,
                        value: m.value,
                        ts_ns: m.ts_ns,
                        ctrl: None,
                    }));
                    last_activity = Instant::now();
                    pending.push_back(Pending {
                        reply: batch.reply,
                        offsets: Vec::with_capacity(want),
                        want,
                        sent: 0,
                        admitted_at: last_activity,
                    });
                }
            },
            permit = req_tx.reserve(), if !outbox.is_empty() && in_flight < MAX_IN_FLIGHT => match permit {
                Ok(permit) => {
                    let data = outbox.pop_front().expect("outbox is not empty");
                    permit.send(PublishMessageRequest { message: Some(Req::Data(data)) });
                    in_flight += 1;
                    if let Some(p) = pending.iter_mut().find(|p| p.sent < p.want) {
                        p.sent += 1;
                    }
                }
                Err(_) => break Some(closed("publish stream closed while sending")),
            },
            resp = responses.message() => match resp {
                Ok(Some(resp)) => {
                    if let Err(e) = ack(&mut pending, &mut in_flight, &progress, resp) {
                        break Some(e);
                    }
                    last_activity = Instant::now();
                    acked.notify_waiters();
                    if !accepting && pending.is_empty() {
                        break None;
                    }
                }
                Ok(None) => break Some(closed("publish stream ended by the broker")),
                Err(status) => {
                    let failure = Failure::Status(status);
                    if failure.is_transport() {
                        clients.forget_broker(&target.leader);
                    }
                    break Some(failure.into_broker("publish"));
                }
            },
            _ = sleep_until(ack_deadline), if ack_deadline.is_some() => {
                clients.forget_broker(&target.leader);
                break Some(Error::Timeout { op: "publish", after: timeout });
            }
            _ = tokio::time::sleep_until(idle_deadline), if pending.is_empty() => break None,
            // Stopping: close once nothing is in flight or waiting to be taken. A batch that
            // arrives just after is answered NotSent below and retried on a fresh stream.
            _ = cancel.cancelled(), if pending.is_empty() && rx.is_empty() => break None,
        }
    };

    // Stop taking batches before answering the admitted ones, so none is left unanswered.
    rx.close();
    if failure.is_some() {
        progress.set_broken(true);
    }
    match &failure {
        Some(e) => {
            tracing::debug!(error = %e, in_flight, "publish stream failed");
            for p in pending.drain(..) {
                // A batch none of whose messages reached the stream can be retried safely.
                let outcome = if p.sent == 0 {
                    Outcome::NotSent(clone_error(e))
                } else {
                    Outcome::Failed(clone_error(e))
                };
                let _ = p.reply.send(outcome);
            }
            fail_queued(&mut rx, e);
        }
        None => fail_queued(&mut rx, &closed("publish stream closed")),
    }
    // Dropping `req_tx` half-closes the stream; the broker then removes this publisher and,
    // when it was the partition's last, flushes the partition and unloads it. After a clean
    // close, wait (bounded by the call timeout) for the broker to end its side, so a process
    // draining its tasks on shutdown waits for that flush.
    drop(req_tx);
    if failure.is_none() {
        let until_ended = async { while let Ok(Some(_)) = responses.message().await {} };
        if tokio::time::timeout(timeout, until_ended).await.is_err() {
            tracing::debug!("broker did not end the publish stream in time");
        }
    }
}

/// Open the stream: send the init request and wait for the broker's hello.
async fn open(
    clients: &Clients,
    target: &Target,
) -> Result<(mpsc::Sender<PublishMessageRequest>, tonic::Streaming<PublishMessageResponse>), Error>
{
    let timeout = clients.call_timeout;
    let mut client = clients.broker(&target.leader)?;
    let (req_tx, req_rx) = mpsc::channel(REQUEST_BUFFER);
    let init = InitMessage {
        topic: Some(Topic { namespace: target.namespace.clone(), name: target.mq_topic.clone() }),
        partition: Some(target.partition),
        ack_interval: 1,
        // No follower: with one set, the broker forwards every record to it and fails the
        // stream when the follower is unreachable.
        follower_broker: String::new(),
        publisher_name: PUBLISHER_NAME.to_string(),
    };
    req_tx
        .send(PublishMessageRequest { message: Some(Req::Init(init)) })
        .await
        .map_err(|_| closed("publish request channel closed"))?;
    // No grpc-timeout on the stream itself: it lives as long as it is used. The open and
    // every ack are bounded here instead.
    let open = client.publish_message(ReceiverStream::new(req_rx));
    let mut responses = match tokio::time::timeout(timeout, open).await {
        Ok(Ok(resp)) => resp.into_inner(),
        Ok(Err(status)) => return Err(Failure::Status(status).into_broker("publish")),
        Err(_) => {
            return Err(Error::Timeout { op: "publish", after: timeout });
        }
    };
    next_answer(&mut responses, timeout, "publish stream ended before the broker's hello").await?;
    Ok((req_tx, responses))
}

/// The broker's next answer on a publish stream, within `timeout`. An answer that carries an
/// error is returned as one; `ended` says what was awaited, for a stream that ends instead.
async fn next_answer(
    responses: &mut tonic::Streaming<PublishMessageResponse>,
    timeout: Duration,
    ended: &str,
) -> Result<PublishMessageResponse, Error> {
    let op = "publish";
    let resp = match tokio::time::timeout(timeout, responses.message()).await {
        Ok(Ok(Some(resp))) => resp,
        Ok(Ok(None)) => return Err(closed(ended)),
        Ok(Err(status)) => return Err(Failure::Status(status).into_broker(op)),
        Err(_) => return Err(Error::Timeout { op, after: timeout }),
    };
    if !resp.error.is_empty() {
        return Err(Error::BrokerReply {
            op,
            message: format!("{} (code {})", resp.error, resp.error_code),
        });
    }
    Ok(resp)
}

/// Write the two partition markers (see [`layout::PARTITION_MARKER`]) when the partition has
/// no records yet, before anything else goes on the stream.
async fn mark_empty_partition(
    clients: &Clients,
    target: &Target,
    req_tx: &mpsc::Sender<PublishMessageRequest>,
    responses: &mut tonic::Streaming<PublishMessageResponse>,
) -> Result<(), Error> {
    let op = "publish";
    let timeout = clients.call_timeout;
    let mut client = clients.broker(&target.leader)?;
    let req = GetPartitionRangeInfoRequest {
        topic: Some(Topic { namespace: target.namespace.clone(), name: target.mq_topic.clone() }),
        partition: Some(target.partition),
    };
    let range = call(timeout, client.get_partition_range_info(request(req, timeout)))
        .await
        .map_err(|f| f.into_broker(op))?;
    if !range.error.is_empty() {
        return Err(Error::BrokerReply { op, message: range.error });
    }
    if range.offset_range.unwrap_or_default().high_water_mark != 0 {
        return Ok(());
    }
    for ts_ns in layout::PARTITION_MARKER_TS_NS {
        let data = DataMessage {
            key: Bytes::new(),
            value: Bytes::from_static(layout::PARTITION_MARKER),
            ts_ns,
            ctrl: None,
        };
        req_tx
            .send(PublishMessageRequest { message: Some(Req::Data(data)) })
            .await
            .map_err(|_| closed("publish stream closed while marking the partition"))?;
    }
    for _ in layout::PARTITION_MARKER_TS_NS {
        next_answer(responses, timeout, "publish stream ended while marking the partition").await?;
    }
    tracing::debug!("wrote partition markers");
    Ok(())
}

/// Publish one hidden record; when the broker gave it an offset at or below one this process
/// was acknowledged, the broker lost records (it restarted and continued from an older
/// checkpoint): publish one more hidden record per offset up to that one, so the next
/// producer record gets a fresh offset. Lost records cannot be brought back; consumers see a
/// gap, or the old record where the broker still has it on disk.
async fn fill_lost_offsets(
    clients: &Clients,
    progress: &Progress,
    req_tx: &mpsc::Sender<PublishMessageRequest>,
    responses: &mut tonic::Streaming<PublishMessageResponse>,
) -> Result<(), Error> {
    let op = "publish";
    let acked = progress.acked();
    let probe = publish_hidden(clients, 1, req_tx, responses).await?;
    if probe > acked {
        return Ok(());
    }
    let durable = progress.durable();
    if probe <= durable {
        // acks=all was answered only at or below `durable`: the broker reassigned offsets it
        // had flushed and checkpointed. That is SeaweedFS losing data, not a restart kelp
        // covers.
        tracing::error!(probe, acked, durable, "broker reassigned durable offsets");
    } else {
        tracing::warn!(probe, acked, "broker reassigned acknowledged offsets; filling them");
    }
    progress.note_lost(probe, acked);
    let m = crate::metrics::global();
    m.offset_regressions.inc();
    m.filled_offsets.inc();
    let missing = acked - probe;
    if missing > MAX_FILL {
        tracing::error!(missing, max = MAX_FILL, "too many lost offsets to fill; not publishing");
        return Err(Error::BrokerReply {
            op,
            message: format!("the broker lost {missing} acknowledged offsets"),
        });
    }
    let mut last = probe;
    let mut left = missing;
    while left > 0 {
        let n = left.min(FILL_CHUNK);
        last = last.max(publish_hidden(clients, n, req_tx, responses).await?);
        left -= n;
        m.filled_offsets.inc_by(n as u64);
    }
    if last < acked {
        // The broker assigned offsets below what it was asked to cover: not filled after all.
        return Err(Error::BrokerReply {
            op,
            message: format!("filled lost offsets up to {last}, short of {acked}"),
        });
    }
    tracing::info!(from = probe, through = last, "filled lost offsets");
    Ok(())
}

/// Publish `n` hidden records (partition markers) and return the highest offset the broker
/// gave them.
async fn publish_hidden(
    clients: &Clients,
    n: i64,
    req_tx: &mpsc::Sender<PublishMessageRequest>,
    responses: &mut tonic::Streaming<PublishMessageResponse>,
) -> Result<i64, Error> {
    let timeout = clients.call_timeout;
    for _ in 0..n {
        let data = DataMessage {
            key: Bytes::new(),
            value: Bytes::from_static(layout::PARTITION_MARKER),
            ts_ns: 0,
            ctrl: None,
        };
        req_tx
            .send(PublishMessageRequest { message: Some(Req::Data(data)) })
            .await
            .map_err(|_| closed("publish stream closed while filling lost offsets"))?;
    }
    let mut last = -1;
    for _ in 0..n {
        let resp = next_answer(responses, timeout, "publish stream ended while filling").await?;
        last = last.max(resp.assigned_offset);
    }
    Ok(last)
}

/// Credit one broker response to the oldest waiting batch.
fn ack(
    pending: &mut VecDeque<Pending>,
    in_flight: &mut usize,
    progress: &Progress,
    resp: PublishMessageResponse,
) -> Result<(), Error> {
    if !resp.error.is_empty() || resp.should_close {
        return Err(Error::BrokerReply {
            op: "publish",
            message: format!(
                "{} (code {}, should_close {})",
                resp.error, resp.error_code, resp.should_close
            ),
        });
    }
    let Some(front) = pending.front_mut() else {
        return Err(Error::BrokerReply {
            op: "publish",
            message: "acknowledgement with nothing in flight".into(),
        });
    };
    front.offsets.push(resp.assigned_offset);
    progress.note_acked(resp.assigned_offset);
    *in_flight -= 1;
    if front.offsets.len() == front.want {
        let done = pending.pop_front().expect("front exists");
        let _ = done.reply.send(Outcome::Acked(done.offsets));
    }
    Ok(())
}

/// Answer every batch still queued (never sent) with a retriable error.
fn fail_queued(rx: &mut mpsc::Receiver<Batch>, e: &Error) {
    rx.close();
    while let Ok(batch) = rx.try_recv() {
        let _ = batch.reply.send(Outcome::NotSent(clone_error(e)));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `Error` is not `Clone` (it may grow sources); rebuild the variants a stream can fail with.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Broker { op, code, message } => {
            Error::Broker { op, code: *code, message: message.clone() }
        }
        Error::BrokerReply { op, message } => Error::BrokerReply { op, message: message.clone() },
        Error::Timeout { op, after } => Error::Timeout { op, after: *after },
        Error::NoBroker { op } => Error::NoBroker { op },
        other => Error::Broker {
            op: "publish",
            code: UpstreamCode::Unavailable,
            message: other.to_string(),
        },
    }
}
