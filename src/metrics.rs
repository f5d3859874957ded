//! Every metric kelp exports: names, help texts and labels live here and nowhere else.
//!
//! Names follow Prometheus conventions (`kelp_` prefix, `_total` counters, `_seconds`
//! durations). Labels come only from closed sets — the Kafka API name, the SeaweedFS service
//! and method — never client ids, topics, groups or partitions, which are unbounded.
//!
//! One registry per process ([`global`]); several in-process kelps (tests) share it.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// The Kafka API name (`Produce`, `Fetch`, ...): at most the ~90 keys Kafka defines.
    pub api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// `broker`, `filer` or `master`.
    pub service: &'static str,
    /// The gRPC method, from the fixed set kelp calls.
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// `produce`, `fetch` or `request`.
    pub quota: &'static str,
    /// Which of Kafka's eight entity shapes the governing rule has (`user_client`,
    /// `default_client`, ...; see `quota::rules::Shape`). Never a user or client id.
    pub entity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// Where quota rules came from: `file` or `filer`.
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SaslLabels {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: &'static str,
    /// `ok` or `failed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerHandshakeLabels {
    /// `server` (the peer listener checked a kelp that connected) or `client` (this kelp
    /// connected to another kelp's peer listener).
    pub role: &'static str,
    /// `ok`, `rejected` (a proof did not match the peer secret), `malformed` (not a kelp
    /// handshake, or another version of it), `timeout` or `closed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, `failed` or `timed_out`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    /// What the lease is on: `group` or `partition` (`lease::Kind::what`).
    pub kind: &'static str,
}

fn throttle_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<ApiLabels, Counter>,
    pub request_duration: Family<ApiLabels, Histogram, fn() -> Histogram>,
    pub connections_active: Gauge,
    pub connections: Counter,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub records_produced: Counter,
    pub records_fetched: Counter,
    pub upstream_duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    pub quota_throttle: Family<QuotaLabels, Histogram, fn() -> Histogram>,
    pub quota_bytes: Family<QuotaLabels, Counter>,
    pub quota_rules: Family<SourceLabels, Gauge>,
    pub sasl_authentications: Family<SaslLabels, Counter>,
    pub authorization_refusals: Family<ApiLabels, Counter>,
    pub peer_handshakes: Family<PeerHandshakeLabels, Counter>,
    pub tls_handshakes: Family<OutcomeLabels, Counter>,
    pub leases_taken: Family<LeaseLabels, Counter>,
    pub flush_wait: Histogram,
    pub offset_regressions: Counter,
    pub filled_offsets: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kelp");
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            connections_active: Gauge::default(),
            connections: Counter::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            records_produced: Counter::default(),
            records_fetched: Counter::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            upstream_errors: Family::default(),
            quota_throttle: Family::new_with_constructor(throttle_histogram as fn() -> Histogram),
            quota_bytes: Family::default(),
            quota_rules: Family::default(),
            sasl_authentications: Family::default(),
            authorization_refusals: Family::default(),
            peer_handshakes: Family::default(),
            tls_handshakes: Family::default(),
            leases_taken: Family::default(),
            flush_wait: latency_histogram(),
            offset_regressions: Counter::default(),
            filled_offsets: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "Kafka requests answered, by API", m.requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time to answer a Kafka request, by API",
            m.request_duration.clone(),
        );
        registry.register(
            "connections_active",
            "Open Kafka connections",
            m.connections_active.clone(),
        );
        registry.register("connections", "Kafka connections accepted", m.connections.clone());
        registry.register(
            "received_bytes",
            "Bytes read from Kafka clients",
            m.bytes_received.clone(),
        );
        registry.register("sent_bytes", "Bytes written to Kafka clients", m.bytes_sent.clone());
        registry.register(
            "produced_records",
            "Records stored in SeaweedFS for producers",
            m.records_produced.clone(),
        );
        registry.register(
            "fetched_records",
            "Records returned to consumers",
            m.records_fetched.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time of SeaweedFS calls, by service and method",
            m.upstream_duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed SeaweedFS calls, by service and method",
            m.upstream_errors.clone(),
        );
        registry.register(
            "quota_throttle_seconds",
            "Throttle time given to clients over quota (count = throttled responses), by quota and entity shape",
            m.quota_throttle.clone(),
        );
        registry.register(
            "quota_bytes",
            "Bytes metered against a byte-rate quota, by quota and entity shape",
            m.quota_bytes.clone(),
        );
        registry.register(
            "quota_rules",
            "Client-quota entities in force, by source",
            m.quota_rules.clone(),
        );
        registry.register(
            "sasl_authentications",
            "SASL logins, by mechanism and outcome",
            m.sasl_authentications.clone(),
        );
        registry.register(
            "authorization_refusals",
            "Requests refused because the client may not change the cluster, by API",
            m.authorization_refusals.clone(),
        );
        registry.register(
            "peer_handshakes",
            "Peer-link handshakes, by role (server: a kelp connected here; client: this kelp connected to one) and outcome; a failed one closes the connection",
            m.peer_handshakes.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the Kafka listener, by outcome",
            m.tls_handshakes.clone(),
        );
        registry.register(
            "leases_taken",
            "Leases this kelp took in the filer (it became a group's owner or a partition's writer), by kind",
            m.leases_taken.clone(),
        );
        registry.register(
            "flush_wait_seconds",
            "Time acks=all produce requests waited for the SeaweedFS broker to flush their records to the filer",
            m.flush_wait.clone(),
        );
        registry.register(
            "offset_regressions",
            "Publish streams that found a partition's next offset at or below one kelp had acknowledged (the broker lost records)",
            m.offset_regressions.clone(),
        );
        registry.register(
            "filled_offsets",
            "Offsets of lost records filled with hidden records so that no acknowledged offset is handed out again",
            m.filled_offsets.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn observe_request(&self, api: &'static str, took: Duration) {
        let labels = ApiLabels { api };
        self.requests.get_or_create(&labels).inc();
        self.request_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub fn observe_upstream(
        &self,
        service: &'static str,
        method: &'static str,
        took: Duration,
        ok: bool,
    ) {
        let labels = UpstreamLabels { service, method };
        self.upstream_duration.get_or_create(&labels).observe(took.as_secs_f64());
        if !ok {
            self.upstream_errors.get_or_create(&labels).inc();
        }
    }
}

impl Metrics {
    pub fn observe_throttle(&self, quota: &'static str, entity: &'static str, throttle: Duration) {
        self.quota_throttle
            .get_or_create(&QuotaLabels { quota, entity })
            .observe(throttle.as_secs_f64());
    }

    pub fn observe_quota_bytes(&self, quota: &'static str, entity: &'static str, bytes: u64) {
        self.quota_bytes.get_or_create(&QuotaLabels { quota, entity }).inc_by(bytes);
    }

    pub fn observe_sasl(&self, mechanism: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.sasl_authentications.get_or_create(&SaslLabels { mechanism, outcome }).inc();
    }

    /// A request refused by `authz` (for Metadata: one that would have created topics).
    pub fn observe_refusal(&self, api: &'static str) {
        self.authorization_refusals.get_or_create(&ApiLabels { api }).inc();
    }

    /// A peer-link handshake and how it ended (`peer::handshake`).
    pub fn observe_peer_handshake(&self, role: &'static str, outcome: &'static str) {
        self.peer_handshakes.get_or_create(&PeerHandshakeLabels { role, outcome }).inc();
    }

    /// `outcome`: `ok`, `failed` or `timed_out`.
    pub fn observe_tls_handshake(&self, outcome: &'static str) {
        self.tls_handshakes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// `kind`: `group` or `partition`.
    pub fn observe_lease_taken(&self, kind: &'static str) {
        self.leases_taken.get_or_create(&LeaseLabels { kind }).inc();
    }
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_prometheus_names() {
        let m = Metrics::new();
        m.observe_request("Produce", Duration::from_millis(3));
        m.observe_upstream("broker", "PublishMessage", Duration::from_millis(1), false);
        m.bytes_sent.inc_by(10);
        m.observe_throttle("produce", "default_client", Duration::from_millis(250));
        m.observe_quota_bytes("fetch", "user", 4096);
        m.observe_sasl("PLAIN", true);
        m.observe_refusal("CreateTopics");
        m.observe_peer_handshake("server", "rejected");
        m.observe_tls_handshake("timed_out");
        m.observe_lease_taken("group");
        let text = m.render();
        for want in [
            "kelp_requests_total{api=\"Produce\"} 1",
            "kelp_request_duration_seconds_count{api=\"Produce\"} 1",
            "kelp_upstream_errors_total{service=\"broker\",method=\"PublishMessage\"} 1",
            "kelp_sent_bytes_total 10",
            "kelp_connections_active 0",
            "kelp_quota_throttle_seconds_count{quota=\"produce\",entity=\"default_client\"} 1",
            "kelp_quota_bytes_total{quota=\"fetch\",entity=\"user\"} 4096",
            "kelp_sasl_authentications_total{mechanism=\"PLAIN\",outcome=\"ok\"} 1",
            "kelp_authorization_refusals_total{api=\"CreateTopics\"} 1",
            "kelp_peer_handshakes_total{role=\"server\",outcome=\"rejected\"} 1",
            "kelp_tls_handshakes_total{outcome=\"timed_out\"} 1",
            "kelp_leases_taken_total{kind=\"group\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in:\n{text}");
        }
    }
}
