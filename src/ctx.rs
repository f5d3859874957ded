//! The context every layer below the listener shares: configuration, the SeaweedFS client and
//! the process-wide services (topics, partition writers, groups, peers, quotas, SASL).
//!
//! Owns: the struct and its small accessors. Does not own: building it (`lib.rs::start`) or
//! what any service does.

use kafka_protocol::protocol::StrBytes;

use crate::config::Config;
use crate::seaweed::Seaweed;
use crate::topics::Topics;

/// What every handler may use. One per kelp process, shared by all connections.
pub struct Ctx {
    pub config: Config,
    pub seaweed: Seaweed,
    pub topics: Topics,
    /// Which partitions this kelp writes, and their idempotent producers.
    pub writers: crate::writers::Writers,
    /// Producer ids for InitProducerId, unique across kelps.
    pub producer_ids: crate::producer_ids::ProducerIds,
    /// Consumer groups and committed offsets.
    pub groups: crate::group::Coordinator,
    /// Forwarding to other kelps: group requests to a group's owner, records to a
    /// partition's writer.
    pub peers: crate::peer::Peers,
    /// The process-wide budget for decompressed and fetched record bytes.
    pub memory: crate::memory::Memory,
    /// Client quotas: rules and meters.
    pub quotas: crate::quota::Quotas,
    /// SASL credentials; `None` when SASL is off.
    pub sasl: Option<crate::sasl::Sasl>,
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
