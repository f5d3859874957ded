//! Produce across kelps: each partition's records go to the kelp that writes the partition
//! (`writers`), here or over the peer link.
//!
//! A request is split by writer: the partitions written here are answered by
//! `api::produce` as one request; those written elsewhere go to their writer as one Produce
//! request per writer, at the client's version, holding only that writer's partitions, and
//! the writer answers them with the same handler (never forwarding again). The answers are
//! put back in the request's order. A writer that answers NOT_LEADER_OR_FOLLOWER for a
//! partition (it lost the lease) makes this kelp look the writer up once more and send the
//! partition again; a writer that cannot be reached gets the partition answered
//! NOT_LEADER_OR_FOLLOWER (retriable: the client sends it again, and by then the lease has
//! moved or the writer is back).
//!
//! acks=0 requests are forwarded with acks=1 (a peer answers every request it is sent); the
//! client still gets no answer.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, RequestHeader, RequestKind, ResponseKind,
};
use tracing::debug;

use crate::api;
use crate::authz::Authority;
use crate::ctx::Ctx;
use crate::lease::Route;
use crate::protocol::legacy_produce as legacy;
use crate::protocol::{Body, Reply, Request};
use crate::session::Session;

/// A Produce request as decoded: v3+ by the wire library, v0-v2 by kelp.
pub(super) enum Produce {
    Current(ProduceRequest),
    Legacy(legacy::ProduceRequest),
}

/// Where one partition of a request is answered.
enum Dest {
    Here,
    Writer(String),
    Failed(ResponseError),
}

/// One partition's records, as the request version framed them.
#[derive(Clone)]
enum Data {
    Current(PartitionProduceData),
    Legacy(Option<Bytes>),
}

impl Data {
    /// Bytes of records the partition carries.
    fn size(&self) -> usize {
        match self {
            Data::Current(p) => p.records.as_ref().map_or(0, |r| r.len()),
            Data::Legacy(r) => r.as_ref().map_or(0, |r| r.len()),
        }
    }
}

/// One partition of the request.
struct Part {
    /// Position of its topic in the request.
    topic: usize,
    /// The topic's name; `None` when named by an id this kelp does not know (answered here).
    name: Option<String>,
    index: i32,
    data: Data,
}

/// The request's fields other than its partitions, to build the part sent to each writer.
enum Frame {
    Current {
        transactional_id: Option<kafka_protocol::messages::TransactionalId>,
        acks: i16,
        timeout_ms: i32,
        topics: Vec<TopicProduceData>,
    },
    Legacy {
        acks: i16,
        timeout_ms: i32,
        topics: Vec<String>,
    },
}

impl Frame {
    /// The request holding only the partitions `idx` (in request order). acks=0 becomes 1:
    /// a writer answers every request it is sent.
    fn sub(&self, parts: &[Part], idx: &[usize]) -> Produce {
        let mut by_topic: BTreeMap<usize, Vec<&Data>> = BTreeMap::new();
        for &i in idx {
            by_topic.entry(parts[i].topic).or_default().push(&parts[i].data);
        }
        let acks = |a: i16| if a == 0 { 1 } else { a };
        match self {
            Frame::Current { transactional_id, acks: a, timeout_ms, topics } => {
                let topic_data = by_topic
                    .into_iter()
                    .map(|(ti, ds)| {
                        let ps = ds
                            .into_iter()
                            .filter_map(|d| match d {
                                Data::Current(p) => Some(p.clone()),
                                Data::Legacy(_) => None,
                            })
                            .collect();
                        topics[ti].clone().with_partition_data(ps)
                    })
                    .collect();
                Produce::Current(
                    ProduceRequest::default()
                        .with_transactional_id(transactional_id.clone())
                        .with_acks(acks(*a))
                        .with_timeout_ms(*timeout_ms)
                        .with_topic_data(topic_data),
                )
            }
            Frame::Legacy { acks: a, timeout_ms, topics } => {
                let mut out = Vec::new();
                for &i in idx {
                    let Data::Legacy(records) = &parts[i].data else { continue };
                    let name = &topics[parts[i].topic];
                    match out.last_mut() {
                        Some(legacy::TopicData { name: last, partitions }) if last == name => {
                            partitions.push((parts[i].index, records.clone()))
                        }
                        _ => out.push(legacy::TopicData {
                            name: name.clone(),
                            partitions: vec![(parts[i].index, records.clone())],
                        }),
                    }
                }
                Produce::Legacy(legacy::ProduceRequest {
                    acks: acks(*a),
                    timeout_ms: *timeout_ms,
                    topics: out,
                })
            }
        }
    }
}

/// Answer a Produce request of an application, each partition at its writer.
pub(super) async fn answer(
    ctx: &Ctx,
    session: &mut Session,
    authority: Authority,
    header: RequestHeader,
    version: i16,
    req: Produce,
) -> Option<Reply> {
    let mut parts = Vec::new();
    let (frame, acks) = match req {
        Produce::Current(req) => {
            let ProduceRequest { transactional_id, acks, timeout_ms, topic_data, .. } = req;
            let mut topics = Vec::with_capacity(topic_data.len());
            for (ti, t) in topic_data.into_iter().enumerate() {
                // v13+ names topics by id.
                let name = if t.name.0.is_empty() && !t.topic_id.is_nil() {
                    ctx.topics.name_of(t.topic_id).await.ok().flatten()
                } else {
                    Some(t.name.0.to_string())
                };
                for data in t.partition_data {
                    let index = data.index;
                    parts.push(Part {
                        topic: ti,
                        name: name.clone(),
                        index,
                        data: Data::Current(data),
                    });
                }
                topics
                    .push(TopicProduceData::default().with_name(t.name).with_topic_id(t.topic_id));
            }
            (Frame::Current { transactional_id, acks, timeout_ms, topics }, acks)
        }
        Produce::Legacy(req) => {
            let mut topics = Vec::with_capacity(req.topics.len());
            for (ti, t) in req.topics.into_iter().enumerate() {
                for (index, records) in t.partitions {
                    let name = Some(t.name.clone());
                    parts.push(Part { topic: ti, name, index, data: Data::Legacy(records) });
                }
                topics.push(t.name);
            }
            (Frame::Legacy { acks: req.acks, timeout_ms: req.timeout_ms, topics }, req.acks)
        }
    };
    let mut answers: Vec<Option<PartitionProduceResponse>> = vec![None; parts.len()];
    let mut pending: Vec<usize> = (0..parts.len()).collect();
    // The request's turn among its connection's Produce requests (`produce_order`). When
    // every partition is written here, `api::produce` takes it and passes it as soon as the
    // records are queued. Forwarded partitions travel on pooled peer connections that keep
    // no order between them, so a request with any holds its turn until every writer
    // answered: the connection's next Produce request waits for it.
    let mut held = None;
    // A second round only for partitions whose writer said it no longer writes them.
    for round in 0..2 {
        let dests = futures::future::join_all(pending.iter().map(|&i| {
            destination(ctx, parts[i].name.as_deref(), parts[i].index, parts[i].data.size())
        }))
        .await;
        let mut here = Vec::new();
        let mut elsewhere: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (&i, dest) in pending.iter().zip(dests) {
            match dest {
                Dest::Here => here.push(i),
                Dest::Writer(peer) => elsewhere.entry(peer).or_default().push(i),
                Dest::Failed(code) => answers[i] = Some(failed(parts[i].index, code)),
            }
        }
        if !elsewhere.is_empty()
            && let Some(turn) = session.take_turn()
        {
            let within = crate::produce_order::wait_limit(ctx);
            if tokio::time::timeout(within, turn.wait()).await.is_err() {
                debug!("an earlier produce request of the connection did not queue in time");
                for &i in here.iter().chain(elsewhere.values().flatten()) {
                    answers[i] = Some(failed(parts[i].index, ResponseError::RequestTimedOut));
                }
                break;
            }
            held = Some(turn);
        }
        let local = async {
            if here.is_empty() {
                return Vec::new();
            }
            let sub = frame.sub(&parts, &here);
            let got = flatten(
                serve_here(ctx, session, authority, &header, version, sub).await,
                here.len(),
            );
            got.unwrap_or_else(|| {
                // The handler answers every partition it is given; this is a kelp bug.
                tracing::error!("the produce handler did not answer every partition");
                here.iter()
                    .map(|&i| failed(parts[i].index, ResponseError::UnknownServerError))
                    .collect()
            })
            .into_iter()
            .zip(here.iter().copied())
            .collect::<Vec<_>>()
        };
        let remote = futures::future::join_all(elsewhere.iter().map(|(peer, idx)| {
            let sub = frame.sub(&parts, idx);
            let header = &header;
            async move {
                let got = flatten(forward(ctx, peer, header, version, sub).await, idx.len());
                (peer, idx, got)
            }
        }));
        let (local, remote) = futures::future::join(local, remote).await;
        for (answer, i) in local {
            answers[i] = Some(answer);
        }
        let mut again = Vec::new();
        for (peer, idx, got) in remote {
            match got {
                Some(got) => {
                    for (answer, &i) in got.into_iter().zip(idx) {
                        let lost = answer.error_code == ResponseError::NotLeaderOrFollower.code();
                        if lost && let Some(topic) = parts[i].name.as_deref() {
                            debug!(writer = %peer, topic, partition = parts[i].index, "the named writer does not write the partition");
                            ctx.writers.forget_writer(topic, parts[i].index);
                            if round == 0 {
                                again.push(i);
                                continue;
                            }
                        }
                        answers[i] = Some(answer);
                    }
                }
                None => {
                    for &i in idx {
                        if let Some(topic) = parts[i].name.as_deref() {
                            ctx.writers.forget_writer(topic, parts[i].index);
                        }
                        answers[i] =
                            Some(failed(parts[i].index, ResponseError::NotLeaderOrFollower));
                    }
                }
            }
        }
        again.sort_unstable();
        pending = again;
        if pending.is_empty() {
            break;
        }
    }
    drop(held);
    if acks == 0 {
        return None;
    }
    let answers = parts.iter().zip(answers).map(|(part, answer)| {
        (
            part.topic,
            answer.unwrap_or_else(|| failed(part.index, ResponseError::NotLeaderOrFollower)),
        )
    });
    Some(match frame {
        Frame::Current { topics, .. } => {
            let mut responses: Vec<TopicProduceResponse> = topics
                .iter()
                .map(|t| {
                    TopicProduceResponse::default()
                        .with_name(t.name.clone())
                        .with_topic_id(t.topic_id)
                })
                .collect();
            for (ti, answer) in answers {
                responses[ti].partition_responses.push(answer);
            }
            Reply::Kind(ResponseKind::Produce(ProduceResponse::default().with_responses(responses)))
        }
        Frame::Legacy { topics, .. } => {
            let mut responses: Vec<legacy::TopicResponse> = topics
                .into_iter()
                .map(|name| legacy::TopicResponse { name, partitions: Vec::new() })
                .collect();
            for (ti, a) in answers {
                responses[ti].partitions.push(legacy::PartitionResponse {
                    index: a.index,
                    error_code: a.error_code,
                    base_offset: a.base_offset,
                });
            }
            Reply::LegacyProduce(legacy::ProduceResponse { topics: responses, throttle_time_ms: 0 })
        }
    })
}

/// The partitions written here, answered by `api::produce` (which never forwards).
async fn serve_here(
    ctx: &Ctx,
    session: &mut Session,
    authority: Authority,
    header: &RequestHeader,
    version: i16,
    sub: Produce,
) -> Option<Reply> {
    let body = match sub {
        Produce::Current(r) => Body::Kind(RequestKind::Produce(r)),
        Produce::Legacy(r) => Body::LegacyProduce(r),
    };
    let request = Request { header: header.clone(), api_key: ApiKey::Produce, version, body };
    api::dispatch(ctx, session, authority, request).await
}

/// The partitions written by `writer`, sent there; `None` when it did not answer.
async fn forward(
    ctx: &Ctx,
    writer: &str,
    header: &RequestHeader,
    version: i16,
    sub: Produce,
) -> Option<Reply> {
    // The writer may wait for a memory share, then publish: each bounded by upstream calls;
    // an acks=all request then waits for the broker's flush, bounded by the same rule the
    // writer applies.
    let (acks, timeout_ms) = match &sub {
        Produce::Current(r) => (r.acks, r.timeout_ms),
        Produce::Legacy(r) => (r.acks, r.timeout_ms),
    };
    let flush = ctx.config.flush_wait(acks, timeout_ms).unwrap_or_default();
    let timeout = ctx.peers.request_timeout() + ctx.config.upstream_timeout() * 2 + flush;
    let r = match &sub {
        Produce::Current(r) => {
            let kind = RequestKind::Produce(r.clone());
            ctx.peers
                .call(writer, header, ApiKey::Produce, version, &kind, timeout)
                .await
                .map(Reply::Kind)
        }
        Produce::Legacy(r) => ctx
            .peers
            .call_legacy_produce(writer, header, version, r, timeout)
            .await
            .map(Reply::LegacyProduce),
    };
    r.inspect_err(
        |e| debug!(writer, error = %e, "forwarding produce to the partition's writer failed"),
    )
    .ok()
}

/// Where a partition is written. A partition that is not known to exist is answered here
/// (the handler says what is wrong with it), so no lease is ever taken on a made-up name.
/// Records larger than the topic's `max.message.bytes` are refused here, by the kelp the
/// client sent them to, before anything is forwarded.
async fn destination(ctx: &Ctx, topic: Option<&str>, index: i32, size: usize) -> Dest {
    let Some(topic) = topic else { return Dest::Here };
    match ctx.topics.partitions(topic).await {
        Ok(Some(n)) if index >= 0 && (index as u32) < n => {}
        _ => return Dest::Here,
    }
    match api::produce::max_message_bytes(ctx, topic).await {
        Ok(max) if size > max => return Dest::Failed(ResponseError::MessageTooLarge),
        Ok(_) => {}
        Err(code) => return Dest::Failed(code),
    }
    match ctx.writers.route(topic, index).await {
        Ok(Route::Local) => Dest::Here,
        Ok(Route::Remote(peer)) => Dest::Writer(peer),
        Err(code) => Dest::Failed(code),
    }
}

/// The partition answers of a response, in order; `None` unless there are exactly `n`.
fn flatten(r: Option<Reply>, n: usize) -> Option<Vec<PartitionProduceResponse>> {
    let all: Vec<_> = match r? {
        Reply::Kind(ResponseKind::Produce(r)) => {
            r.responses.into_iter().flat_map(|t| t.partition_responses).collect()
        }
        Reply::LegacyProduce(r) => r
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .map(|p| {
                let answer = PartitionProduceResponse::default()
                    .with_index(p.index)
                    .with_error_code(p.error_code)
                    .with_base_offset(p.base_offset);
                answer.with_log_append_time_ms(-1).with_log_start_offset(-1)
            })
            .collect(),
        Reply::Kind(_) => return None,
    };
    (all.len() == n).then_some(all)
}

fn failed(index: i32, code: ResponseError) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    fn current(topics: &[(&'static str, &[i32])]) -> (Frame, Vec<Part>) {
        let mut parts = Vec::new();
        let mut frame_topics = Vec::new();
        for (ti, (name, indexes)) in topics.iter().enumerate() {
            for &index in *indexes {
                let data = PartitionProduceData::default().with_index(index);
                let name = Some(name.to_string());
                parts.push(Part { topic: ti, name, index, data: Data::Current(data) });
            }
            let name = TopicName(StrBytes::from_static_str(name));
            frame_topics.push(TopicProduceData::default().with_name(name));
        }
        let frame =
            Frame::Current { transactional_id: None, acks: 0, timeout_ms: 5, topics: frame_topics };
        (frame, parts)
    }

    #[test]
    fn a_writer_is_sent_only_its_partitions_in_request_order() {
        let (frame, parts) = current(&[("a", &[0, 1, 2]), ("b", &[0, 1])]);
        // Partitions 1 of a and 0 of b, as positions 1 and 3 of the request.
        let Produce::Current(sub) = frame.sub(&parts, &[1, 3]) else { panic!() };
        let got: Vec<(String, Vec<i32>)> = sub
            .topic_data
            .iter()
            .map(|t| (t.name.0.to_string(), t.partition_data.iter().map(|p| p.index).collect()))
            .collect();
        assert_eq!(got, vec![("a".to_string(), vec![1]), ("b".to_string(), vec![0])]);
        assert_eq!((sub.acks, sub.timeout_ms), (1, 5), "acks=0 is forwarded as acks=1");
    }

    #[test]
    fn legacy_requests_are_split_the_same_way() {
        let parts = vec![
            Part { topic: 0, name: Some("a".into()), index: 0, data: Data::Legacy(None) },
            Part { topic: 0, name: Some("a".into()), index: 1, data: Data::Legacy(None) },
            Part { topic: 1, name: Some("b".into()), index: 0, data: Data::Legacy(None) },
        ];
        let frame = Frame::Legacy { acks: -1, timeout_ms: 9, topics: vec!["a".into(), "b".into()] };
        let Produce::Legacy(sub) = frame.sub(&parts, &[1, 2]) else { panic!() };
        let got: Vec<(&str, Vec<i32>)> = sub
            .topics
            .iter()
            .map(|t| (t.name.as_str(), t.partitions.iter().map(|p| p.0).collect()))
            .collect();
        assert_eq!(got, vec![("a", vec![1]), ("b", vec![0])]);
        assert_eq!(sub.acks, -1);
    }

    #[test]
    fn an_answer_counts_only_when_every_partition_is_in_it() {
        let answer = |n: usize| {
            let ps = (0..n as i32).map(|i| PartitionProduceResponse::default().with_index(i));
            let t = TopicProduceResponse::default().with_partition_responses(ps.collect());
            Some(Reply::Kind(ResponseKind::Produce(
                ProduceResponse::default().with_responses(vec![t]),
            )))
        };
        assert_eq!(flatten(answer(2), 2).map(|v| v.len()), Some(2));
        assert!(flatten(answer(1), 2).is_none());
        assert!(flatten(None, 2).is_none());
        let legacy = legacy::ProduceResponse {
            topics: vec![legacy::TopicResponse {
                name: "a".into(),
                partitions: vec![legacy::PartitionResponse {
                    index: 3,
                    error_code: 6,
                    base_offset: -1,
                }],
            }],
            throttle_time_ms: 0,
        };
        let got = flatten(Some(Reply::LegacyProduce(legacy)), 1).unwrap();
        assert_eq!((got[0].index, got[0].error_code), (3, 6));
    }
}
