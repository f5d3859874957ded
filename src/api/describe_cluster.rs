//! DescribeCluster: kelp is the whole cluster as far as its client can tell.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;

/// Sentinel for "authorized operations not computed" (Kafka's INT32_MIN).
pub const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub fn handle(ctx: &Ctx, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let me = BrokerId(ctx.config.node_id);
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_string(ctx.cluster_id.clone()))
        .with_controller_id(me)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(me)
                .with_host(ctx.host())
                .with_port(ctx.advertised_port),
        ])
}
