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
pub mod refusal;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod sync_group;

use kafka_protocol::messages::{RequestKind, ResponseKind};

use crate::authz::Authority;
use crate::ctx::Ctx;
use crate::protocol::{Body, Reply, Request};
use crate::session::Session;

/// Answer one request here, at this kelp. `None` means no response is sent (Produce with
/// acks=0). `session` is the connection's (SASL state); requests from a peer kelp come with
/// a trusted one. `authority` is what the client may do to the cluster: a cluster-wide
/// request it may not make is refused here, before any handler runs (`authz`). Whether a
/// request is answered here or by another kelp was decided before (`routing`); nothing below
/// forwards (a waiting Fetch asks a partition's writer to wake it, `tail`, and reads here).
pub async fn dispatch(
    ctx: &Ctx,
    session: &mut Session,
    authority: Authority,
    request: Request,
) -> Option<Reply> {
    let version = request.version;
    let kind = match request.body {
        Body::ApiVersionsTooNew => {
            return Some(ResponseKind::ApiVersions(api_versions::too_new()).into());
        }
        Body::LegacyProduce(req) => {
            return produce::handle_legacy(ctx, session, version, req)
                .await
                .map(Reply::LegacyProduce);
        }
        Body::Kind(kind) => kind,
    };
    if let Some(refused) = refusal::refusal(authority, request.api_key, version, &kind) {
        return Some(refused.into());
    }
    let response = match kind {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle(version)),
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(ctx, session, version, authority, r).await?)
        }
        RequestKind::Produce(r) => {
            ResponseKind::Produce(produce::handle(ctx, session, version, r).await?)
        }
        RequestKind::Fetch(r) => {
            let from_peer = matches!(authority, Authority::Forwarded);
            ResponseKind::Fetch(fetch::handle(ctx, version, r, from_peer).await)
        }
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
            ResponseKind::InitProducerId(init_producer_id::handle(ctx, r).await)
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
            ResponseKind::SaslAuthenticate(sasl_authenticate::handle(ctx, session, r).await)
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

#[cfg(test)]
mod tests {
    use crate::protocol::versions::SUPPORTED;
    use kafka_protocol::messages::ApiKey;

    /// The API keys that have an arm in `dispatch`. Kept beside it for the table test.
    const HANDLED: &[ApiKey] = &[
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
