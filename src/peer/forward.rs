//! Which client requests another kelp answers, and relaying them there.
//!
//! Forwarded, because their answer depends on the group's live state, which only the owner
//! has: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit (generation and member are
//! validated by the owner, which stores the offset before answering), DescribeGroups,
//! DeleteGroups and OffsetDelete. A DescribeGroups or DeleteGroups naming several groups is
//! split into one request per group, each answered where its group lives, and the answers
//! are put back together in the request's order.
//!
//! Answered here: OffsetFetch (committed offsets are files in the filer that the owner wrote
//! before acknowledging the commit, so any kelp reads the same values; a filer it cannot read
//! is a retriable error, never "no offset"), ListGroups (groups owned elsewhere are listed
//! from their stored generation), FindCoordinator (always this kelp: the application only
//! talks to its own sidecar) and everything that is not a group API.
//!
//! Failures: an owner that cannot be reached, does not answer in time, or answers garbage
//! gives the client COORDINATOR_NOT_AVAILABLE (retriable; clients look for the coordinator
//! again and retry) and the owner is looked up afresh on the next request. An owner that
//! answers NOT_COORDINATOR (it lost the group) makes this kelp look the owner up at once and
//! try once more, possibly taking the group itself.

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse,
    OffsetDeleteResponse, RequestHeader, RequestKind, ResponseKind, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use tracing::debug;

use super::PeerError;
use crate::api::describe_cluster::AUTHORIZED_OPERATIONS_OMITTED;
use crate::api::{delete_groups, describe_groups};
use crate::ctx::Ctx;
use crate::group::Route;

/// How long a forwarded SyncGroup may wait at the owner: the owner parks it until the leader
/// sends the assignment, at most the group's largest rebalance timeout, which the forwarder
/// does not know. Kafka's default rebalance timeout (`max.poll.interval.ms`, 5 minutes);
/// beyond it the client gets COORDINATOR_NOT_AVAILABLE and rejoins.
pub const SYNC_FORWARD_TIMEOUT: Duration = Duration::from_secs(300);

/// Answer `kind` at its group's owner when that is another kelp: `Ok` is the answer (the
/// owner's, or an error when it could not be had), `Err` gives the request back to be
/// served here.
pub async fn route(
    ctx: &Ctx,
    header: &RequestHeader,
    version: i16,
    kind: RequestKind,
) -> Result<ResponseKind, RequestKind> {
    if !ctx.groups.is_shared() {
        return Err(kind);
    }
    match kind {
        RequestKind::DescribeGroups(req) if req.groups.len() > 1 => {
            Ok(ResponseKind::DescribeGroups(describe_each(ctx, header, version, req).await))
        }
        RequestKind::DeleteGroups(req) if req.groups_names.len() > 1 => {
            Ok(ResponseKind::DeleteGroups(delete_each(ctx, header, version, req).await))
        }
        kind => match group_of(&kind) {
            Some((group, key)) => one_group(ctx, header, key, version, &group, kind).await,
            None => Err(kind),
        },
    }
}

/// The group a forwardable request is about, and its API; `None` for requests served here.
fn group_of(kind: &RequestKind) -> Option<(String, ApiKey)> {
    let (id, key) = match kind {
        RequestKind::JoinGroup(r) => (&r.group_id, ApiKey::JoinGroup),
        RequestKind::SyncGroup(r) => (&r.group_id, ApiKey::SyncGroup),
        RequestKind::Heartbeat(r) => (&r.group_id, ApiKey::Heartbeat),
        RequestKind::LeaveGroup(r) => (&r.group_id, ApiKey::LeaveGroup),
        RequestKind::OffsetCommit(r) => (&r.group_id, ApiKey::OffsetCommit),
        RequestKind::OffsetDelete(r) => (&r.group_id, ApiKey::OffsetDelete),
        RequestKind::DescribeGroups(r) => (r.groups.first()?, ApiKey::DescribeGroups),
        RequestKind::DeleteGroups(r) => (r.groups_names.first()?, ApiKey::DeleteGroups),
        _ => return None,
    };
    Some((id.0.to_string(), key))
}

async fn one_group(
    ctx: &Ctx,
    header: &RequestHeader,
    key: ApiKey,
    version: i16,
    group: &str,
    kind: RequestKind,
) -> Result<ResponseKind, RequestKind> {
    // A second round only after the owner said it is not the owner any more.
    for round in 0..2 {
        let owner = match ctx.groups.route(group).await {
            Ok(Route::Local) => return Err(kind),
            Ok(Route::Remote(owner)) => owner,
            Err(code) => return error_response(&kind, version, code).ok_or(kind),
        };
        match call(ctx, &owner, header, key, version, &kind).await {
            Ok(resp) if is_not_coordinator(&resp) => {
                debug!(group, %owner, "the kelp named as owner does not own the group");
                ctx.groups.forget_owner(group);
                if round == 1 {
                    return Ok(resp);
                }
            }
            Ok(resp) => return Ok(resp),
            Err(e) => {
                debug!(group, %owner, error = %e, "forwarding to the group's owner failed");
                ctx.groups.forget_owner(group);
                return error_response(&kind, version, ResponseError::CoordinatorNotAvailable)
                    .ok_or(kind);
            }
        }
    }
    // The owner lost the group twice in a row: a rebalance of ownership is under way.
    error_response(&kind, version, ResponseError::CoordinatorNotAvailable).ok_or(kind)
}

/// One forward, bounded by the time the owner may take to answer and by shutdown.
async fn call(
    ctx: &Ctx,
    owner: &str,
    header: &RequestHeader,
    key: ApiKey,
    version: i16,
    kind: &RequestKind,
) -> Result<ResponseKind, PeerError> {
    let peers = &ctx.peers;
    let settings = ctx.groups.settings();
    let parked =
        |wait: Duration| wait + settings.tick + settings.wait_slack + peers.request_timeout;
    let timeout = match kind {
        // The owner parks a JoinGroup up to the rebalance timeout (v0: the session timeout).
        RequestKind::JoinGroup(r) => {
            let ms = if version == 0 || r.rebalance_timeout_ms < 0 {
                r.session_timeout_ms
            } else {
                r.rebalance_timeout_ms
            };
            parked(Duration::from_millis(ms.max(0) as u64))
        }
        RequestKind::SyncGroup(_) => parked(SYNC_FORWARD_TIMEOUT),
        _ => peers.request_timeout,
    };
    tokio::select! {
        _ = peers.cancel.cancelled() => Err(PeerError::ShuttingDown),
        r = tokio::time::timeout(timeout, peers.pool.call(owner, header, key, version, kind)) => r.unwrap_or(Err(PeerError::Timeout(timeout))),
    }
}

async fn describe_each(
    ctx: &Ctx,
    header: &RequestHeader,
    version: i16,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for group_id in &req.groups {
        let one = req.clone().with_groups(vec![group_id.clone()]);
        let answered = match one_group(
            ctx,
            header,
            ApiKey::DescribeGroups,
            version,
            &group_id.0,
            RequestKind::DescribeGroups(one),
        )
        .await
        {
            Ok(ResponseKind::DescribeGroups(r)) => r,
            Ok(other) => unexpected(other, DescribeGroupsResponse::default()),
            Err(RequestKind::DescribeGroups(one)) => {
                describe_groups::handle(ctx, version, one).await
            }
            Err(_) => DescribeGroupsResponse::default(),
        };
        let described = answered.groups.into_iter().next().unwrap_or_else(|| {
            DescribedGroup::default()
                .with_group_id(group_id.clone())
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        });
        groups.push(described);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

async fn delete_each(
    ctx: &Ctx,
    header: &RequestHeader,
    version: i16,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for group_id in &req.groups_names {
        let one = req.clone().with_groups_names(vec![group_id.clone()]);
        let answered = match one_group(
            ctx,
            header,
            ApiKey::DeleteGroups,
            version,
            &group_id.0,
            RequestKind::DeleteGroups(one),
        )
        .await
        {
            Ok(ResponseKind::DeleteGroups(r)) => r,
            Ok(other) => unexpected(other, DeleteGroupsResponse::default()),
            Err(RequestKind::DeleteGroups(one)) => delete_groups::handle(ctx, one).await,
            Err(_) => DeleteGroupsResponse::default(),
        };
        let result = answered.results.into_iter().next().unwrap_or_else(|| {
            DeletableGroupResult::default()
                .with_group_id(group_id.clone())
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
        });
        results.push(result);
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// A peer answered with another API's response; the pool decodes by the request's key, so
/// this cannot happen short of a kelp bug.
fn unexpected<T>(got: ResponseKind, fallback: T) -> T {
    tracing::error!(response = ?std::mem::discriminant(&got), "peer answered with a different api");
    fallback
}

/// The whole request failed with `code`, in the response shape its version expects; `None`
/// for a kind that is never forwarded.
fn error_response(kind: &RequestKind, version: i16, code: ResponseError) -> Option<ResponseKind> {
    let c = code.code();
    Some(match kind {
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(
            JoinGroupResponse::default()
                .with_error_code(c)
                .with_generation_id(-1)
                .with_member_id(r.member_id.clone())
                // Before v7 the protocol name is not nullable.
                .with_protocol_name(if version < 7 { Some(StrBytes::default()) } else { None }),
        ),
        RequestKind::SyncGroup(_) => {
            ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(c))
        }
        RequestKind::Heartbeat(_) => {
            ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(c))
        }
        RequestKind::LeaveGroup(_) => {
            ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(c))
        }
        RequestKind::OffsetDelete(_) => {
            ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_error_code(c))
        }
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(
            kafka_protocol::messages::OffsetCommitResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        OffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(c)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(
            DescribeGroupsResponse::default().with_groups(
                r.groups
                    .iter()
                    .map(|g| {
                        DescribedGroup::default()
                            .with_group_id(g.clone())
                            .with_error_code(c)
                            .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
                    })
                    .collect(),
            ),
        ),
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(
            DeleteGroupsResponse::default().with_results(
                r.groups_names
                    .iter()
                    .map(|g| {
                        DeletableGroupResult::default().with_group_id(g.clone()).with_error_code(c)
                    })
                    .collect(),
            ),
        ),
        _ => return None,
    })
}

/// Whether the owner answered NOT_COORDINATOR (for any part of the request).
fn is_not_coordinator(resp: &ResponseKind) -> bool {
    let nc = ResponseError::NotCoordinator.code();
    match resp {
        ResponseKind::JoinGroup(r) => r.error_code == nc,
        ResponseKind::SyncGroup(r) => r.error_code == nc,
        ResponseKind::Heartbeat(r) => r.error_code == nc,
        ResponseKind::LeaveGroup(r) => r.error_code == nc,
        ResponseKind::OffsetDelete(r) => r.error_code == nc,
        ResponseKind::OffsetCommit(r) => {
            r.topics.iter().flat_map(|t| &t.partitions).any(|p| p.error_code == nc)
        }
        ResponseKind::DescribeGroups(r) => r.groups.iter().any(|g| g.error_code == nc),
        ResponseKind::DeleteGroups(r) => r.results.iter().any(|g| g.error_code == nc),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        GroupId, HeartbeatRequest, JoinGroupRequest, OffsetCommitRequest, OffsetFetchRequest,
        TopicName,
    };

    fn gid(s: &'static str) -> GroupId {
        GroupId(StrBytes::from_static_str(s))
    }

    #[test]
    fn group_requests_are_routed_by_their_group_and_the_rest_stay_here() {
        let join = RequestKind::JoinGroup(JoinGroupRequest::default().with_group_id(gid("g")));
        assert_eq!(group_of(&join), Some(("g".into(), ApiKey::JoinGroup)));
        let describe = RequestKind::DescribeGroups(
            DescribeGroupsRequest::default().with_groups(vec![gid("d")]),
        );
        assert_eq!(group_of(&describe), Some(("d".into(), ApiKey::DescribeGroups)));
        assert_eq!(group_of(&RequestKind::DescribeGroups(DescribeGroupsRequest::default())), None);
        assert_eq!(
            group_of(&RequestKind::OffsetFetch(
                OffsetFetchRequest::default().with_group_id(gid("g"))
            )),
            None,
            "read from the filer here"
        );
        // What is forwarded is exactly what the peer listener accepts.
        let forwarded = [
            RequestKind::JoinGroup(Default::default()),
            RequestKind::SyncGroup(Default::default()),
            RequestKind::Heartbeat(Default::default()),
            RequestKind::LeaveGroup(Default::default()),
            RequestKind::OffsetCommit(Default::default()),
            describe,
            RequestKind::DeleteGroups(
                DeleteGroupsRequest::default().with_groups_names(vec![gid("x")]),
            ),
            RequestKind::OffsetDelete(Default::default()),
        ];
        let keys: Vec<ApiKey> =
            forwarded.iter().map(|k| group_of(k).expect("forwarded").1).collect();
        assert_eq!(keys, super::super::PEER_APIS);
    }

    #[test]
    fn a_failed_forward_answers_every_part_of_the_request() {
        let commit = RequestKind::OffsetCommit(OffsetCommitRequest::default().with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default().with_partition_index(0),
                        OffsetCommitRequestPartition::default().with_partition_index(3),
                    ]),
            ]));
        let Some(ResponseKind::OffsetCommit(r)) =
            error_response(&commit, 8, ResponseError::CoordinatorNotAvailable)
        else {
            panic!()
        };
        let codes: Vec<(i32, i16)> =
            r.topics[0].partitions.iter().map(|p| (p.partition_index, p.error_code)).collect();
        assert_eq!(codes, vec![(0, 15), (3, 15)]);
        let join = RequestKind::JoinGroup(
            JoinGroupRequest::default().with_member_id(StrBytes::from_static_str("m")),
        );
        let Some(ResponseKind::JoinGroup(r)) =
            error_response(&join, 5, ResponseError::CoordinatorNotAvailable)
        else {
            panic!()
        };
        assert_eq!(
            (r.error_code, r.generation_id, r.member_id.as_str(), r.protocol_name),
            (15, -1, "m", Some(StrBytes::default()))
        );
        assert!(is_not_coordinator(
            &error_response(&commit, 8, ResponseError::NotCoordinator).unwrap()
        ));
        let hb = RequestKind::Heartbeat(HeartbeatRequest::default());
        assert!(!is_not_coordinator(
            &error_response(&hb, 4, ResponseError::RebalanceInProgress).unwrap()
        ));
        assert!(
            error_response(
                &RequestKind::OffsetFetch(OffsetFetchRequest::default()),
                8,
                ResponseError::NotCoordinator
            )
            .is_none()
        );
    }
}
