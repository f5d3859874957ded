//! Request routing: the only `match` on the API key, and the context every handler shares.
//!
//! When adding an API: add its row to `protocol::versions`, an arm here, and `api/<name>.rs`
//! with one `handle` returning the response type.

pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod fetch;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::config::Config;
use crate::producers::Producers;
use crate::protocol::{Body, Reply, Request};
use crate::seaweed::Seaweed;
use crate::topics::Topics;

/// What every handler may use. One per kelp process, shared by all connections.
pub struct Ctx {
    pub config: Config,
    pub seaweed: Seaweed,
    pub topics: Topics,
    pub producers: Producers,
    /// host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Reported in Metadata and DescribeCluster: derived from the namespace so every kelp in
    /// front of the same SeaweedFS namespace reports the same cluster.
    pub cluster_id: String,
}

impl Ctx {
    pub fn host(&self) -> StrBytes {
        StrBytes::from_string(self.advertised_host.clone())
    }
}

/// Answer one request. `None` means no response is sent (Produce with acks=0).
pub async fn dispatch(ctx: &Ctx, request: Request) -> Option<Reply> {
    let version = request.version;
    let kind = match request.body {
        Body::ApiVersionsTooNew => return Some(ResponseKind::ApiVersions(api_versions::too_new()).into()),
        Body::LegacyProduce(req) => return produce::handle_legacy(ctx, version, req).await.map(Reply::LegacyProduce),
        Body::Kind(kind) => kind,
    };
    let response = match kind {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle(version)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(ctx, version, r).await),
        RequestKind::Produce(r) => ResponseKind::Produce(produce::handle(ctx, version, r).await?),
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(ctx, version, r).await),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets::handle(ctx, version, r).await),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(create_topics::handle(ctx, version, r).await),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(delete_topics::handle(ctx, version, r).await),
        RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(create_partitions::handle(ctx, r).await),
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(describe_configs::handle(ctx, version, r).await),
        RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(describe_cluster::handle(ctx, r)),
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(init_producer_id::handle(ctx, r)),
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
