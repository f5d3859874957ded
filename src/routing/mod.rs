//! Where a client's request is answered: here (`api::dispatch`), or by the kelp that owns its
//! consumer group, over the peer link (DESIGN.md, "Consumer groups across sidecars";
//! docs/consumer-groups.md). Decided once per request, for the [`FORWARDED`] APIs and
//! Produce only.
//!
//! Produce goes partition by partition to each partition's writer (`produce`, DESIGN.md
//! "Writing a partition from many sidecars"; docs/writers.md).
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
//! The peer protocol is the Kafka protocol itself: the client's group request re-encoded at
//! the client's version (same client id, a correlation id of this kelp's), answered by the
//! owner's `api::dispatch` and relayed unchanged. The owner never forwards again: a request
//! travels at most one hop, and a kelp that does not own the group answers NOT_COORDINATOR.
//!
//! Failures: an owner that cannot be reached, does not answer in time, or answers garbage
//! gives the client COORDINATOR_NOT_AVAILABLE (retriable; clients look for the coordinator
//! again and retry) and the owner is looked up afresh on the next request. An owner that
//! answers NOT_COORDINATOR (it lost the group) makes this kelp look the owner up at once and
//! try once more, possibly taking the group itself.
//!
//! Authorization: DeleteGroups and OffsetDelete are cluster-wide (`authz`). The kelp the
//! application talks to refuses them before forwarding; the owner trusts what a peer sends.
//!
//! Owns: the choice of where, splitting multi-group and multi-writer requests, forward
//! deadlines, what a peer may send ([`served_to_peers`]). Does not own: who owns a group
//! (`group`) or writes a partition (`writers`), the peer connections (`peer`), who may do
//! what (`authz`) or the error response of each API (each `api/<name>.rs` has its own
//! `error`).

mod produce;

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsResponse, DescribeGroupsResponse, GroupId, RequestHeader, RequestKind,
    ResponseKind,
};
use tracing::debug;

use crate::api;
use crate::authz::Authority;
use crate::ctx::Ctx;
use crate::group::Route;
use crate::peer::PeerError;
use crate::protocol::{Body, Reply, Request};
use crate::session::Session;

/// Whether a peer kelp may send requests of `key`: the forwarded group APIs, Produce
/// (answered only for the partitions the receiving kelp writes) and Fetch (a kelp waiting for
/// records of partitions the receiving kelp writes, `tail`; answered here, never sent on).
pub fn served_to_peers(key: ApiKey) -> bool {
    key == ApiKey::Produce || key == ApiKey::Fetch || FORWARDED.contains(&key)
}

/// The group APIs answered by a group's owner.
pub const FORWARDED: &[ApiKey] = &[
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::DescribeGroups,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
];

/// How long a forwarded SyncGroup may wait at the owner: the owner parks it until the leader
/// sends the assignment, at most the group's largest rebalance timeout, which the forwarder
/// does not know. Kafka's default rebalance timeout (`max.poll.interval.ms`, 5 minutes);
/// beyond it the client gets COORDINATOR_NOT_AVAILABLE and rejoins.
pub const SYNC_FORWARD_TIMEOUT: Duration = Duration::from_secs(300);

/// What a client is told when its group's owner could not be had (retriable: it looks for
/// the coordinator again and retries).
const UNAVAILABLE: ResponseError = ResponseError::CoordinatorNotAvailable;

/// What became of a request sent towards its group's owner.
enum Forwarded {
    /// The owner's answer, or an error response when it could not be had.
    Answered(ResponseKind),
    /// This kelp owns the group: the request comes back to be served here.
    ServeHere(RequestKind),
}

/// Answer a request of an application's connection, here or at its group's owner.
/// `authority` is what the client may do to the cluster (`authz`).
pub async fn answer(
    ctx: &Ctx,
    session: &mut Session,
    authority: Authority,
    request: Request,
) -> Option<Reply> {
    if request.api_key == ApiKey::Produce && ctx.writers.is_shared() {
        let Request { header, api_key, version, body } = request;
        return match body {
            Body::Kind(RequestKind::Produce(req)) => {
                let req = produce::Produce::Current(req);
                produce::answer(ctx, session, authority, header, version, req).await
            }
            Body::LegacyProduce(req) => {
                let req = produce::Produce::Legacy(req);
                produce::answer(ctx, session, authority, header, version, req).await
            }
            body => {
                api::dispatch(ctx, session, authority, Request { header, api_key, version, body })
                    .await
            }
        };
    }
    if !ctx.groups.is_shared() || !FORWARDED.contains(&request.api_key) {
        return api::dispatch(ctx, session, authority, request).await;
    }
    let Request { header, api_key, version, body } = request;
    let Body::Kind(kind) = body else {
        // Only ApiVersions and Produce have bodies of their own; neither is forwarded.
        let request = Request { header, api_key, version, body };
        return api::dispatch(ctx, session, authority, request).await;
    };
    // Decided here, before forwarding: the owner answers whatever a peer sends it.
    if let Some(refused) = api::refusal::refusal(authority, api_key, version, &kind) {
        return Some(refused.into());
    }
    let a = authority;
    let response = match kind {
        RequestKind::DescribeGroups(req) if req.groups.len() > 1 => {
            let one =
                |g: &GroupId| RequestKind::DescribeGroups(req.clone().with_groups(vec![g.clone()]));
            let part = |r| match r {
                ResponseKind::DescribeGroups(mut r) if r.groups.len() == 1 => r.groups.pop(),
                _ => None,
            };
            let failed = |g: &GroupId| api::describe_groups::failed(g, UNAVAILABLE);
            let (h, v) = (&header, version);
            let groups =
                each_group(ctx, session, a, h, api_key, v, &req.groups, one, part, failed).await;
            ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(groups))
        }
        RequestKind::DeleteGroups(req) if req.groups_names.len() > 1 => {
            let one = |g: &GroupId| {
                RequestKind::DeleteGroups(req.clone().with_groups_names(vec![g.clone()]))
            };
            let part = |r| match r {
                ResponseKind::DeleteGroups(mut r) if r.results.len() == 1 => r.results.pop(),
                _ => None,
            };
            let failed = |g: &GroupId| api::delete_groups::failed(g, UNAVAILABLE);
            let (h, v, names) = (&header, version, &req.groups_names);
            let results =
                each_group(ctx, session, a, h, api_key, v, names, one, part, failed).await;
            ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(results))
        }
        kind => match group_of(&kind) {
            None => kind_here(ctx, session, a, header, api_key, version, kind).await?,
            Some(group) => match one_group(ctx, &header, api_key, version, &group, kind).await {
                Forwarded::Answered(r) => r,
                Forwarded::ServeHere(kind) => {
                    kind_here(ctx, session, a, header, api_key, version, kind).await?
                }
            },
        },
    };
    Some(response.into())
}

async fn kind_here(
    ctx: &Ctx,
    session: &mut Session,
    authority: Authority,
    header: RequestHeader,
    api_key: ApiKey,
    version: i16,
    kind: RequestKind,
) -> Option<ResponseKind> {
    let request = Request { header, api_key, version, body: Body::Kind(kind) };
    match api::dispatch(ctx, session, authority, request).await? {
        Reply::Kind(r) => Some(r),
        Reply::LegacyProduce(_) => None,
    }
}

/// The group a forwarded request is about; `None` when it names none (answered here).
fn group_of(kind: &RequestKind) -> Option<String> {
    let id = match kind {
        RequestKind::JoinGroup(r) => &r.group_id,
        RequestKind::SyncGroup(r) => &r.group_id,
        RequestKind::Heartbeat(r) => &r.group_id,
        RequestKind::LeaveGroup(r) => &r.group_id,
        RequestKind::OffsetCommit(r) => &r.group_id,
        RequestKind::OffsetDelete(r) => &r.group_id,
        RequestKind::DescribeGroups(r) => r.groups.first()?,
        RequestKind::DeleteGroups(r) => r.groups_names.first()?,
        _ => return None,
    };
    Some(id.0.to_string())
}

async fn one_group(
    ctx: &Ctx,
    header: &RequestHeader,
    key: ApiKey,
    version: i16,
    group: &str,
    kind: RequestKind,
) -> Forwarded {
    if let Some(answer) = unknown_group(ctx, version, group, &kind).await {
        return answer;
    }
    // A second round only after the owner said it is not the owner any more.
    for round in 0..2 {
        let owner = match ctx.groups.route(group).await {
            Ok(Route::Local) => return Forwarded::ServeHere(kind),
            Ok(Route::Remote(owner)) => owner,
            Err(code) => return failed(kind, version, code),
        };
        match call(ctx, &owner, header, key, version, &kind).await {
            Ok(resp) if is_not_coordinator(&resp) => {
                debug!(group, %owner, "the kelp named as owner does not own the group");
                ctx.groups.forget_owner(group);
                if round == 1 {
                    return Forwarded::Answered(resp);
                }
            }
            Ok(resp) => return Forwarded::Answered(resp),
            Err(e) => {
                debug!(group, %owner, error = %e, "forwarding to the group's owner failed");
                ctx.groups.forget_owner(group);
                return failed(kind, version, UNAVAILABLE);
            }
        }
    }
    // The owner lost the group twice in a row: a rebalance of ownership is under way.
    failed(kind, version, UNAVAILABLE)
}

/// A lookup of a group (DescribeGroups, DeleteGroups, OffsetDelete) that nobody owns and
/// nothing is stored of is answered here, as Kafka answers a group it does not know, without
/// taking the group's lease: one request naming thousands of made-up ids leaves no leases
/// behind. `None`: route the request as usual.
async fn unknown_group(
    ctx: &Ctx,
    version: i16,
    group: &str,
    kind: &RequestKind,
) -> Option<Forwarded> {
    let lookup = matches!(
        kind,
        RequestKind::DescribeGroups(_)
            | RequestKind::DeleteGroups(_)
            | RequestKind::OffsetDelete(_)
    );
    if !lookup {
        return None;
    }
    let response = match ctx.groups.is_unknown(group).await {
        Ok(false) => return None,
        Err(code) => error_response(kind, version, code)?,
        Ok(true) => match kind {
            RequestKind::DescribeGroups(r) => {
                let groups = r.groups.iter().map(|g| api::describe_groups::unknown(g, version));
                ResponseKind::DescribeGroups(
                    DescribeGroupsResponse::default().with_groups(groups.collect()),
                )
            }
            _ => error_response(kind, version, ResponseError::GroupIdNotFound)?,
        },
    };
    Some(Forwarded::Answered(response))
}

/// The request failed with `code` before its owner answered.
fn failed(kind: RequestKind, version: i16, code: ResponseError) -> Forwarded {
    match error_response(&kind, version, code) {
        Some(response) => Forwarded::Answered(response),
        // Not a forwarded kind (`one_group` only sees those): let this kelp answer it.
        None => Forwarded::ServeHere(kind),
    }
}

/// One forward, bounded by the time the owner may take to answer.
async fn call(
    ctx: &Ctx,
    owner: &str,
    header: &RequestHeader,
    key: ApiKey,
    version: i16,
    kind: &RequestKind,
) -> Result<ResponseKind, PeerError> {
    let settings = ctx.groups.settings();
    let answer_within = ctx.peers.request_timeout();
    let parked = |wait: Duration| wait + settings.tick + settings.wait_slack + answer_within;
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
        _ => answer_within,
    };
    // A legacy version travels as the library's oldest, which means the same (`legacy`); the
    // answer is written in the client's layout by the connection.
    let version = crate::protocol::legacy::library_version(key, version);
    ctx.peers.call(owner, header, key, version, kind, timeout).await
}

/// Answer a request naming several groups one group at a time, each where its group lives,
/// and put the parts back in the request's order. `one` makes the single-group request,
/// `part` takes the one entry out of its answer, `failed` stands in for a part that did not
/// come back.
#[expect(clippy::too_many_arguments, reason = "the request's parts and three small closures")]
async fn each_group<T>(
    ctx: &Ctx,
    session: &mut Session,
    authority: Authority,
    header: &RequestHeader,
    key: ApiKey,
    version: i16,
    groups: &[GroupId],
    one: impl Fn(&GroupId) -> RequestKind,
    part: impl Fn(ResponseKind) -> Option<T>,
    failed: impl Fn(&GroupId) -> T,
) -> Vec<T> {
    let mut parts = Vec::with_capacity(groups.len());
    for group in groups {
        let response = match one_group(ctx, header, key, version, &group.0, one(group)).await {
            Forwarded::Answered(r) => Some(r),
            Forwarded::ServeHere(kind) => {
                kind_here(ctx, session, authority, header.clone(), key, version, kind).await
            }
        };
        parts.push(response.and_then(&part).unwrap_or_else(|| failed(group)));
    }
    parts
}

/// The whole request failed with `code`, in the shape its version expects (each API's own
/// `error`); `None` for a kind that is never forwarded.
fn error_response(kind: &RequestKind, version: i16, code: ResponseError) -> Option<ResponseKind> {
    Some(match kind {
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(api::join_group::error(r, version, code))
        }
        RequestKind::SyncGroup(_) => ResponseKind::SyncGroup(api::sync_group::error(code)),
        RequestKind::Heartbeat(_) => ResponseKind::Heartbeat(api::heartbeat::error(code)),
        RequestKind::LeaveGroup(_) => ResponseKind::LeaveGroup(api::leave_group::error(code)),
        RequestKind::OffsetDelete(_) => ResponseKind::OffsetDelete(api::offset_delete::error(code)),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(api::offset_commit::error(r, code))
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(api::describe_groups::error(r, code))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(api::delete_groups::error(r, code))
        }
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
        DeleteGroupsRequest, DescribeGroupsRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
        OffsetCommitRequest, OffsetFetchRequest, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    fn gid(s: &'static str) -> GroupId {
        GroupId(StrBytes::from_static_str(s))
    }

    #[test]
    fn group_requests_are_routed_by_their_group_and_the_rest_stay_here() {
        let join = RequestKind::JoinGroup(JoinGroupRequest::default().with_group_id(gid("g")));
        assert_eq!(group_of(&join).as_deref(), Some("g"));
        let describe = RequestKind::DescribeGroups(
            DescribeGroupsRequest::default().with_groups(vec![gid("d")]),
        );
        assert_eq!(group_of(&describe).as_deref(), Some("d"));
        assert_eq!(group_of(&RequestKind::DescribeGroups(DescribeGroupsRequest::default())), None);
        let fetch = RequestKind::OffsetFetch(OffsetFetchRequest::default().with_group_id(gid("g")));
        assert_eq!(group_of(&fetch), None, "read from the filer here");
        assert!(!FORWARDED.contains(&ApiKey::OffsetFetch));
        // Every forwarded API names its group and has an error response of its own.
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
        assert_eq!(forwarded.len(), FORWARDED.len());
        for kind in &forwarded {
            assert!(group_of(kind).is_some(), "{kind:?}");
            assert!(error_response(kind, 0, UNAVAILABLE).is_some());
        }
    }

    #[test]
    fn a_failed_forward_answers_every_part_of_the_request() {
        let partition = |i| OffsetCommitRequestPartition::default().with_partition_index(i);
        let commit = RequestKind::OffsetCommit(OffsetCommitRequest::default().with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![partition(0), partition(3)]),
        ]));
        let unavailable = ResponseError::CoordinatorNotAvailable;
        let Some(ResponseKind::OffsetCommit(r)) = error_response(&commit, 8, unavailable) else {
            panic!()
        };
        let codes: Vec<(i32, i16)> =
            r.topics[0].partitions.iter().map(|p| (p.partition_index, p.error_code)).collect();
        assert_eq!(codes, vec![(0, 15), (3, 15)]);
        let join = RequestKind::JoinGroup(
            JoinGroupRequest::default().with_member_id(StrBytes::from_static_str("m")),
        );
        let Some(ResponseKind::JoinGroup(r)) = error_response(&join, 5, unavailable) else {
            panic!()
        };
        let got = (r.error_code, r.generation_id, r.member_id.as_str(), r.protocol_name);
        assert_eq!(got, (15, -1, "m", Some(StrBytes::default())));
        let not_coordinator = error_response(&commit, 8, ResponseError::NotCoordinator).unwrap();
        assert!(is_not_coordinator(&not_coordinator));
        let hb = RequestKind::Heartbeat(HeartbeatRequest::default());
        let rebalancing = error_response(&hb, 4, ResponseError::RebalanceInProgress).unwrap();
        assert!(!is_not_coordinator(&rebalancing));
        let fetch = RequestKind::OffsetFetch(OffsetFetchRequest::default());
        assert!(error_response(&fetch, 8, ResponseError::NotCoordinator).is_none());
    }
}
