//! Request routing: the only `match` on the API key, and the context every handler shares.
//!
//! When adding an API: add its row to `protocol::versions`, an arm here, and `api/<name>.rs`
//! with one `handle` returning the response type.

pub mod alter_client_quotas;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_topics;
pub mod describe_client_quotas;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod sync_group;

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use crate::ctx::Ctx;
use crate::protocol::{Body, Reply, Request};
use crate::session::Session;

/// Answer one request. `None` means no response is sent (Produce with acks=0).
pub async fn dispatch(ctx: &Ctx, request: Request) -> Option<Reply> {
    dispatch_from(ctx, request, Origin::Client, &mut Session::trusted()).await
}

/// A response and how the connection is held for the quotas it went over.
pub struct Answer {
    /// `None`: no response is sent (Produce with acks=0).
    pub reply: Option<Reply>,
    /// The client predates KIP-219: wait out the session's hold *before* writing the response
    /// (otherwise after it, before the next request is read).
    pub hold_before_reply: bool,
}

/// Answer one request of an application's connection: the session supplies the SASL state
/// and the client's quotas, and keeps what the request cost over quota (`Session::hold`).
/// `request_bytes` is the size of the request frame (what a produce quota meters).
pub async fn dispatch_client(
    ctx: &Ctx,
    session: &mut Session,
    mut request: Request,
    request_bytes: usize,
) -> Answer {
    let (key, version) = (request.api_key, request.version);
    let (conn, user) = session.quota_and_user();
    let governing = ctx.quotas.prepare(conn, user, &mut request);
    let reply = dispatch_from(ctx, request, Origin::Client, session).await;
    let (reply, hold_before_reply) =
        ctx.quotas.settle(&mut session.quota, &governing, key, version, request_bytes, reply);
    Answer { reply, hold_before_reply }
}

/// Answer a group request another kelp forwarded to this one's peer listener. It is served
/// here whoever owns the group (NOT_COORDINATOR unless this kelp does), never forwarded
/// again: a request travels at most one hop.
pub async fn dispatch_forwarded(ctx: &Ctx, request: Request) -> Option<Reply> {
    dispatch_from(ctx, request, Origin::Peer, &mut Session::trusted()).await
}

/// Who sent a request: an application, or another kelp forwarding one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Client,
    Peer,
}

async fn dispatch_from(
    ctx: &Ctx,
    request: Request,
    origin: Origin,
    session: &mut Session,
) -> Option<Reply> {
    let started = std::time::Instant::now();
    let api = api_name(request.api_key);
    let reply = route(ctx, request, origin, session).await;
    crate::metrics::global().observe_request(api, started.elapsed());
    reply
}

/// The API's name as a metrics label: one of the advertised APIs (a closed set).
fn api_name(key: ApiKey) -> &'static str {
    static NAMES: std::sync::LazyLock<Vec<(ApiKey, &'static str)>> =
        std::sync::LazyLock::new(|| {
            crate::protocol::versions::SUPPORTED
                .iter()
                .map(|s| (s.key, &*Box::leak(format!("{:?}", s.key).into_boxed_str())))
                .collect()
        });
    NAMES.iter().find(|(k, _)| *k == key).map_or("other", |(_, n)| *n)
}

async fn route(
    ctx: &Ctx,
    request: Request,
    origin: Origin,
    session: &mut Session,
) -> Option<Reply> {
    let version = request.version;
    let kind = match request.body {
        Body::ApiVersionsTooNew => {
            return Some(ResponseKind::ApiVersions(api_versions::too_new()).into());
        }
        Body::LegacyProduce(req) => {
            return produce::handle_legacy(ctx, version, req).await.map(Reply::LegacyProduce);
        }
        Body::Kind(kind) => kind,
    };
    // A group request whose group another kelp owns is answered by that kelp.
    let kind = match origin {
        Origin::Client => {
            match crate::peer::forward::route(ctx, &request.header, version, kind).await {
                Ok(response) => return Some(response.into()),
                Err(kind) => kind,
            }
        }
        Origin::Peer => kind,
    };
    let response = match kind {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle(version)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(ctx, version, r).await),
        RequestKind::Produce(r) => ResponseKind::Produce(produce::handle(ctx, version, r).await?),
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(ctx, version, r).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(ctx, version, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(ctx, version, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(ctx, version, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions::handle(ctx, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(ctx, version, r).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(ctx, r))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(ctx, r))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(ctx, version, r))
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(join_group::handle(ctx, &request.header, version, r).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(sync_group::handle(ctx, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(heartbeat::handle(ctx, r).await),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(leave_group::handle(ctx, version, r).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offset_commit::handle(ctx, version, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offset_fetch::handle(ctx, version, r).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups::handle(ctx, version, r).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(list_groups::handle(ctx, version, r).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(delete_groups::handle(ctx, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offset_delete::handle(ctx, r).await)
        }
        RequestKind::SaslHandshake(r) => {
            ResponseKind::SaslHandshake(sasl_handshake::handle(ctx, session, version, r))
        }
        RequestKind::SaslAuthenticate(r) => {
            ResponseKind::SaslAuthenticate(sasl_authenticate::handle(ctx, session, r))
        }
        RequestKind::DescribeClientQuotas(r) => {
            ResponseKind::DescribeClientQuotas(describe_client_quotas::handle(ctx, r))
        }
        RequestKind::AlterClientQuotas(r) => {
            ResponseKind::AlterClientQuotas(alter_client_quotas::handle(ctx, r).await)
        }
        _ => {
            // decode_request only lets through APIs listed in protocol::versions, and every
            // row there has an arm above (checked by a test); reaching this is a kelp bug.
            tracing::error!(api = ?request.api_key, "no handler for an advertised api");
            return None;
        }
    };
    Some(response.into())
}

/// The API keys that have an arm in `dispatch`. Kept beside it for the table test.
pub const HANDLED: &[ApiKey] = &[
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::DescribeConfigs,
    ApiKey::DescribeCluster,
    ApiKey::InitProducerId,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::DescribeGroups,
    ApiKey::ListGroups,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
    ApiKey::DescribeClientQuotas,
    ApiKey::AlterClientQuotas,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::versions::SUPPORTED;

    #[test]
    fn every_advertised_api_has_a_handler_and_vice_versa() {
        for s in SUPPORTED {
            assert!(HANDLED.contains(&s.key), "{:?} advertised without a handler", s.key);
        }
        for k in HANDLED {
            assert!(SUPPORTED.iter().any(|s| s.key == *k), "{k:?} handled but not advertised");
        }
    }
}
