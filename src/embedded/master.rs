//! The one call kelp makes to the SeaweedFS master outside `seaweed/`: `ListClusterNodes`,
//! which answers "does the master list this filer / this broker".
//!
//! Owns the hand-declared request and response messages and the gRPC call. Does not own what
//! counts as ready or how often to ask (`ready`); everything else kelp says to SeaweedFS goes
//! through `seaweed/`.

use anyhow::Context;

use super::ports::HOST;
use super::ready::PROBE_TIMEOUT;
use crate::seaweed::TlsConnector;

/// The two messages of `master_pb.Seaweed/ListClusterNodes`, declared by hand: the generated
/// `master_pb` types stay inside `seaweed/`, and this readiness check for a throw-away
/// instance has no business there. Field numbers are those of `proto/master.proto` (a unit
/// test below checks them); fields not declared here are skipped when decoding.
#[derive(Clone, PartialEq, prost::Message)]
struct ListClusterNodesRequest {
    #[prost(string, tag = "1")]
    client_type: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListClusterNodesResponse {
    #[prost(message, repeated, tag = "1")]
    cluster_nodes: Vec<ClusterNode>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ClusterNode {
    #[prost(string, tag = "1")]
    address: String,
}

/// Addresses of the cluster nodes of one type (`"filer"`, `"broker"`) the master knows;
/// over TLS when `tls` is given.
pub(super) async fn list_cluster_nodes(
    master_grpc: u16,
    client_type: &str,
    tls: Option<&TlsConnector>,
) -> anyhow::Result<Vec<String>> {
    const METHOD: &str = "/master_pb.Seaweed/ListClusterNodes";
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("{scheme}://{HOST}:{master_grpc}"))
            .context("master endpoint")?
            .connect_timeout(PROBE_TIMEOUT)
            .timeout(PROBE_TIMEOUT);
    let channel = match tls {
        None => endpoint.connect().await,
        Some(connector) => endpoint.connect_with_connector(connector.clone()).await,
    }
    .with_context(|| format!("connecting to the master's gRPC port {master_grpc}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.context("master gRPC channel not ready")?;
    let codec =
        tonic_prost::ProstCodec::<ListClusterNodesRequest, ListClusterNodesResponse>::default();
    let request = tonic::Request::new(ListClusterNodesRequest { client_type: client_type.into() });
    let response = grpc
        .unary(request, tonic::codegen::http::uri::PathAndQuery::from_static(METHOD), codec)
        .await
        .with_context(|| format!("master ListClusterNodes({client_type})"))?;
    Ok(response.into_inner().cluster_nodes.into_iter().map(|n| n.address).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hand_declared_messages_match_the_vendored_master_proto() {
        let proto = include_str!("../../proto/master.proto");
        let squashed = proto.split_whitespace().collect::<Vec<_>>().join(" ");
        for field in [
            "rpc ListClusterNodes (ListClusterNodesRequest) returns (ListClusterNodesResponse)",
            "string client_type = 1;",
            "string address = 1;",
            "repeated ClusterNode cluster_nodes = 1;",
        ] {
            assert!(squashed.contains(field), "proto/master.proto no longer has `{field}`");
        }
        assert!(proto.contains("package master_pb;") && proto.contains("service Seaweed"));
    }
}
