//! Every setting kelp has: its flag, its `KELP_*` environment variable and its default.
//!
//! This is the one home of those names. Helm's values.yaml mirrors them and a test keeps the
//! two in step. When adding a setting: add the field here with `env = ENV_X`, add the const,
//! document it in docs/configuration.md, and add the values.yaml key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// A setting, or a combination of settings, kelp cannot run with. `kelp serve` exits 64 on it
/// (EX_USAGE), naming the setting, before it binds any port.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct ConfigError {
    /// The `KELP_*` variable to change.
    pub setting: &'static str,
    pub reason: String,
}

pub const ENV_LISTEN: &str = "KELP_LISTEN";
pub const ENV_ADMIN_LISTEN: &str = "KELP_ADMIN_LISTEN";
pub const ENV_ADVERTISED_LISTENER: &str = "KELP_ADVERTISED_LISTENER";
pub const ENV_MASTER: &str = "KELP_MASTER";
pub const ENV_FILER: &str = "KELP_FILER";
pub const ENV_NAMESPACE: &str = "KELP_NAMESPACE";
pub const ENV_FILER_ROOT: &str = "KELP_FILER_ROOT";
pub const ENV_NODE_ID: &str = "KELP_NODE_ID";
pub const ENV_AUTO_CREATE_TOPICS: &str = "KELP_AUTO_CREATE_TOPICS";
pub const ENV_DEFAULT_PARTITIONS: &str = "KELP_DEFAULT_PARTITIONS";
pub const ENV_MAX_FRAME_BYTES: &str = "KELP_MAX_FRAME_BYTES";
pub const ENV_MAX_MESSAGE_BYTES: &str = "KELP_MAX_MESSAGE_BYTES";
pub const ENV_MAX_UNCOMPRESSED_BYTES: &str = "KELP_MAX_UNCOMPRESSED_BYTES";
pub const ENV_MEMORY_BUDGET_BYTES: &str = "KELP_MEMORY_BUDGET_BYTES";
pub const ENV_MAX_CONNECTIONS: &str = "KELP_MAX_CONNECTIONS";
pub const ENV_MAX_IN_FLIGHT_REQUESTS: &str = "KELP_MAX_IN_FLIGHT_REQUESTS";
pub const ENV_MAX_IN_FLIGHT_BYTES: &str = "KELP_MAX_IN_FLIGHT_BYTES";
pub const ENV_UPSTREAM_TIMEOUT_MS: &str = "KELP_UPSTREAM_TIMEOUT_MS";
pub const ENV_IDLE_TIMEOUT_MS: &str = "KELP_IDLE_TIMEOUT_MS";
pub const ENV_SHUTDOWN_GRACE_MS: &str = "KELP_SHUTDOWN_GRACE_MS";
pub const ENV_LOG: &str = "KELP_LOG";
// Client quotas and SASL (docs/quotas.md).
pub const ENV_QUOTAS_FILE: &str = "KELP_QUOTAS_FILE";
pub const ENV_SASL_USERS_FILE: &str = "KELP_SASL_USERS_FILE";
// Who may change the cluster (docs/security.md).
pub const ENV_ADMIN_APIS: &str = "KELP_ADMIN_APIS";
// Consumer groups whose members talk to different kelps (docs/consumer-groups.md).
pub const ENV_PEER_LISTEN: &str = "KELP_PEER_LISTEN";
pub const ENV_PEER_ADVERTISED: &str = "KELP_PEER_ADVERTISED";
pub const ENV_PEER_SECRET_FILE: &str = "KELP_PEER_SECRET_FILE";
pub const ENV_PEER_ALLOW_UNAUTHENTICATED: &str = "KELP_PEER_ALLOW_UNAUTHENTICATED";
pub const ENV_PEER_MAX_FRAME_BYTES: &str = "KELP_PEER_MAX_FRAME_BYTES";
pub const ENV_GROUP_LEASE_MS: &str = "KELP_GROUP_LEASE_MS";
// Consumer groups (docs/consumer-groups.md).
pub const ENV_GROUP_MAX_SIZE: &str = "KELP_GROUP_MAX_SIZE";
pub const ENV_PARTITION_LEASE_MS: &str = "KELP_PARTITION_LEASE_MS";
// What an acknowledgement means (docs/writers.md).
pub const ENV_ACKS_ALL_FLUSHED: &str = "KELP_ACKS_ALL_FLUSHED";
pub const ENV_FLUSH_WAIT_MS: &str = "KELP_FLUSH_WAIT_MS";
// TLS on the Kafka listener, and from kelp to SeaweedFS (docs/security.md).
pub const ENV_TLS_CERT: &str = "KELP_TLS_CERT";
pub const ENV_TLS_KEY: &str = "KELP_TLS_KEY";
pub const ENV_TLS_CLIENT_CA: &str = "KELP_TLS_CLIENT_CA";
pub const ENV_TLS_HANDSHAKE_TIMEOUT_MS: &str = "KELP_TLS_HANDSHAKE_TIMEOUT_MS";
pub const ENV_SEAWEEDFS_TLS_CA: &str = "KELP_SEAWEEDFS_TLS_CA";
pub const ENV_SEAWEEDFS_TLS_CERT: &str = "KELP_SEAWEEDFS_TLS_CERT";
pub const ENV_SEAWEEDFS_TLS_KEY: &str = "KELP_SEAWEEDFS_TLS_KEY";
pub const ENV_SEAWEEDFS_TLS_SERVER_NAME: &str = "KELP_SEAWEEDFS_TLS_SERVER_NAME";

// Settings of `kelp webhook` (the admission webhook that injects kelp into pods); see
// `WebhookConfig`. In values.yaml they live under `webhook.config`.
pub const ENV_WEBHOOK_LISTEN: &str = "KELP_WEBHOOK_LISTEN";
pub const ENV_WEBHOOK_TLS_CERT: &str = "KELP_WEBHOOK_TLS_CERT";
pub const ENV_WEBHOOK_TLS_KEY: &str = "KELP_WEBHOOK_TLS_KEY";
pub const ENV_WEBHOOK_SIDECAR_FILE: &str = "KELP_WEBHOOK_SIDECAR_FILE";
pub const ENV_WEBHOOK_NATIVE_SIDECAR: &str = "KELP_WEBHOOK_NATIVE_SIDECAR";
pub const ENV_WEBHOOK_KUBE_VERSION: &str = "KELP_WEBHOOK_KUBE_VERSION";
pub const ENV_WEBHOOK_BOOTSTRAP_ENV: &str = "KELP_WEBHOOK_BOOTSTRAP_ENV";
pub const ENV_WEBHOOK_BOOTSTRAP_SERVERS: &str = "KELP_WEBHOOK_BOOTSTRAP_SERVERS";

/// kelp's settings for serving Kafka clients in front of a SeaweedFS.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address the Kafka listener binds. Loopback by default: the application shares the pod.
    #[arg(long, env = ENV_LISTEN, default_value = "127.0.0.1:9092")]
    pub listen: SocketAddr,

    /// Address of the admin HTTP server (/livez, /readyz, /metrics). Off unless set: it must
    /// be reachable by the kubelet, so it is an explicit choice (e.g. 0.0.0.0:9644).
    #[arg(long, env = ENV_ADMIN_LISTEN)]
    pub admin_listen: Option<SocketAddr>,

    /// host:port clients are told to connect to (Metadata, FindCoordinator). Defaults to the
    /// bound listen address; for a wildcard bind (0.0.0.0, ::), the local address that routes
    /// to the SeaweedFS master (the pod IP).
    #[arg(long, env = ENV_ADVERTISED_LISTENER)]
    pub advertised_listener: Option<String>,

    /// SeaweedFS master, "host:port" (gRPC on port+10000) or "host:port.grpcPort".
    #[arg(long, env = ENV_MASTER, default_value = "127.0.0.1:9333")]
    pub master: String,

    /// SeaweedFS filer, same address form. Found through the master when unset.
    #[arg(long, env = ENV_FILER)]
    pub filer: Option<String>,

    /// SeaweedFS MQ namespace that holds the Kafka topics.
    #[arg(long, env = ENV_NAMESPACE, default_value = "kafka")]
    pub namespace: String,

    /// Filer directory under which kelp keeps offsets, groups and quotas.
    #[arg(long, env = ENV_FILER_ROOT, default_value = crate::seaweed::layout::DEFAULT_FILER_ROOT)]
    pub filer_root: String,

    /// The broker id kelp reports to clients.
    #[arg(long, env = ENV_NODE_ID, default_value_t = 1)]
    pub node_id: i32,

    /// Create a topic when a client's Metadata request asks for it (allow_auto_topic_creation)
    /// or produces to it.
    #[arg(long, env = ENV_AUTO_CREATE_TOPICS, default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,

    /// Partitions of an auto-created topic (and of CreateTopics with num_partitions = -1).
    #[arg(long, env = ENV_DEFAULT_PARTITIONS, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=crate::seaweed::layout::MAX_PARTITIONS as i64))]
    pub default_partitions: i32,

    /// Largest request frame accepted; a larger length prefix closes the connection.
    #[arg(long, env = ENV_MAX_FRAME_BYTES, default_value_t = 100 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_frame_bytes: u32,

    /// Largest record batch accepted per partition (Kafka's message.max.bytes);
    /// larger batches get MESSAGE_TOO_LARGE.
    #[arg(long, env = ENV_MAX_MESSAGE_BYTES, default_value_t = 1_048_588, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_message_bytes: u32,

    /// Largest size the compressed batches of one Produce request may decompress to, all
    /// together; beyond it the partition that crosses it is refused (MESSAGE_TOO_LARGE).
    #[arg(long, env = ENV_MAX_UNCOMPRESSED_BYTES, default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_uncompressed_bytes: u32,

    /// Most bytes of decompressed produce data and fetched records all requests together may
    /// hold at once (`memory.rs`); a request waits for its share.
    #[arg(long, env = ENV_MEMORY_BUDGET_BYTES, default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024 * 1024..))]
    pub memory_budget_bytes: u32,

    /// Concurrent Kafka connections; further connections wait to be accepted.
    #[arg(long, env = ENV_MAX_CONNECTIONS, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Requests of one connection handled at once (clients pipeline: librdkafka keeps up to
    /// five Produce requests in flight). Answers still leave in request order. 1 handles a
    /// connection's requests one after another.
    #[arg(long, env = ENV_MAX_IN_FLIGHT_REQUESTS, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_in_flight_requests: u32,

    /// Most request bytes (frames) of one connection in flight at once; the next request is
    /// read once earlier ones are answered. A single larger request is still taken on its own.
    /// Requests in flight beside another also hold their size of the memory budget
    /// (`KELP_MEMORY_BUDGET_BYTES`).
    #[arg(long, env = ENV_MAX_IN_FLIGHT_BYTES, default_value_t = 16 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight_bytes: u32,

    /// Deadline of every call to SeaweedFS, in milliseconds.
    #[arg(long, env = ENV_UPSTREAM_TIMEOUT_MS, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub upstream_timeout_ms: u64,

    /// A connection with no request for this long is closed (Kafka's connections.max.idle.ms).
    #[arg(long, env = ENV_IDLE_TIMEOUT_MS, default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,

    /// On SIGTERM, how long in-flight requests may take before kelp exits anyway.
    #[arg(long, env = ENV_SHUTDOWN_GRACE_MS, default_value_t = 25_000)]
    pub shutdown_grace_ms: u64,

    /// YAML file of client-quota rules (docs/quotas.md). Re-read when it changes; an invalid
    /// new version is ignored with a warning. Rules set through AlterClientQuotas (kept in
    /// the filer) override it per entity and key.
    #[arg(long, env = ENV_QUOTAS_FILE)]
    pub quotas_file: Option<PathBuf>,

    /// YAML file of SASL users (passwords or SCRAM credentials). When set, the Kafka listener
    /// requires SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and the user name becomes the
    /// `user` of client quotas. Re-read when it changes.
    #[arg(long, env = ENV_SASL_USERS_FILE)]
    pub sasl_users_file: Option<PathBuf>,

    /// Serve the APIs that change the cluster as a whole (CreateTopics, DeleteTopics,
    /// CreatePartitions, DeleteGroups, OffsetDelete, AlterClientQuotas, and topic
    /// auto-creation through Metadata). `false` refuses them to every client of this kelp,
    /// super-users included, with Kafka's authorization errors. With SASL on, only
    /// super-users get them even when `true` (docs/security.md).
    #[arg(long, env = ENV_ADMIN_APIS, default_value_t = true, action = clap::ArgAction::Set)]
    pub admin_apis: bool,

    /// Address of the peer listener, where other kelps forward the requests of consumer
    /// groups this kelp owns. Off unless set: then this kelp runs every group itself, as a
    /// kelp alone does (members of one group must then all talk to this kelp). Needs
    /// `peer_secret_file`, or `peer_allow_unauthenticated` to say it may go without.
    #[arg(long, env = ENV_PEER_LISTEN)]
    pub peer_listen: Option<SocketAddr>,

    /// host:port other kelps use to reach the peer listener (recorded with each group lease).
    /// Default: the bound peer address; for a wildcard bind (0.0.0.0, ::), the local address
    /// this kelp uses to reach the SeaweedFS master (in Kubernetes, the pod IP).
    #[arg(long, env = ENV_PEER_ADVERTISED)]
    pub peer_advertised: Option<String>,

    /// File holding the peer link's shared secret (at least 16 bytes once surrounding
    /// whitespace is trimmed; in Kubernetes, a mounted Secret). Every kelp sharing groups must
    /// have the same one: a peer connection starts with a handshake in which both kelps prove
    /// they know it (`peer::handshake`), and one that cannot is closed. Read once at start.
    /// Required with a peer listener unless `peer_allow_unauthenticated` is set.
    #[arg(long, env = ENV_PEER_SECRET_FILE)]
    pub peer_secret_file: Option<PathBuf>,

    /// Run the peer link without authentication: anyone who reaches the peer port can then
    /// commit offsets, delete groups and remove members, bypassing SASL and quotas. Only for a
    /// network where every host that can reach the port is trusted (one host, tests). Must
    /// not be combined with `peer_secret_file`.
    #[arg(long, env = ENV_PEER_ALLOW_UNAUTHENTICATED, default_value_t = false, action = clap::ArgAction::Set)]
    pub peer_allow_unauthenticated: bool,

    /// Largest frame on the peer link, in either direction: a forwarded request or its
    /// answer. Forwarded Produce requests are as large as the client's, so the link accepts
    /// the larger of this and `KELP_MAX_FRAME_BYTES` ([`Config::peer_frame_limit`]); a larger
    /// length prefix closes the peer connection, and a forward that would need a larger frame
    /// is not sent (the client gets a retriable error). Keep it the same on every kelp.
    #[arg(long, env = ENV_PEER_MAX_FRAME_BYTES, default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..))]
    pub peer_max_frame_bytes: u32,

    /// Lifetime of a group-ownership lease in the filer, in milliseconds (the filer counts
    /// whole seconds, so it is rounded up to one). The owner renews it every third of that
    /// and stops acting as owner a fifth of it before it could expire; a crashed owner's
    /// groups move to another kelp at most this long after its last renewal.
    #[arg(long, env = ENV_GROUP_LEASE_MS, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2_000..=3_600_000))]
    pub group_lease_ms: u64,

    /// Most members one consumer group may have (Kafka's `group.max.size`, whose default,
    /// 2147483647, is kept); a JoinGroup that would add one more gets GROUP_MAX_SIZE_REACHED.
    #[arg(long, env = ENV_GROUP_MAX_SIZE, default_value_t = i32::MAX as u32, value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub group_max_size: u32,
    /// Lifetime of a partition-writer lease in the filer, in milliseconds (rounded up to whole
    /// seconds like the group lease). The writer renews it every third of that and stops
    /// publishing a fifth of it before it could expire; a crashed writer's partitions are
    /// written by another kelp at most this long after its last renewal (until then, produce
    /// requests for them get a retriable error).
    #[arg(long, env = ENV_PARTITION_LEASE_MS, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2_000..=3_600_000))]
    pub partition_lease_ms: u64,

    /// acks=all is answered only once the SeaweedFS broker has flushed the records to the
    /// filer, so they survive a restart of the broker process (docs/writers.md). false answers
    /// acks=all as soon as the broker holds the records, like acks=1: faster, but records of
    /// the broker's last flush interval are lost if the broker process dies.
    #[arg(long, env = ENV_ACKS_ALL_FLUSHED, default_value_t = true, action = clap::ArgAction::Set)]
    pub acks_all_flushed: bool,

    /// Longest wait of an acks=all produce request for the broker's flush, in milliseconds
    /// (the request's own timeout_ms applies when shorter); then REQUEST_TIMED_OUT, which
    /// clients retry. Keep it well above the broker's `-logFlushInterval`.
    #[arg(long, env = ENV_FLUSH_WAIT_MS, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub flush_wait_ms: u64,

    /// PEM certificate chain of the Kafka listener. When set (with `tls_key`) the listener
    /// speaks TLS only: clients use security.protocol=SSL, or SASL_SSL when SASL is on too.
    /// Re-read when it changes, like the key and the client CA.
    #[arg(long, env = ENV_TLS_CERT, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = ENV_TLS_KEY, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: when set, every Kafka client must present a certificate that chains
    /// to one of these CAs (mTLS); a client without one is refused during the handshake.
    #[arg(long, env = ENV_TLS_CLIENT_CA, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// How long a client may take to complete the TLS handshake, in milliseconds; a slower
    /// one is disconnected (it holds a connection slot meanwhile).
    #[arg(long, env = ENV_TLS_HANDSHAKE_TIMEOUT_MS, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_handshake_timeout_ms: u64,

    /// PEM CA bundle SeaweedFS's gRPC certificates chain to (security.toml's `grpc.ca`).
    /// When set, kelp speaks TLS to the master, the filer and every broker.
    #[arg(long, env = ENV_SEAWEEDFS_TLS_CA)]
    pub seaweedfs_tls_ca: Option<PathBuf>,

    /// PEM client certificate kelp presents to SeaweedFS (mTLS, as `grpc.client`'s cert).
    /// SeaweedFS requires one whenever its gRPC has TLS on.
    #[arg(long, env = ENV_SEAWEEDFS_TLS_CERT, requires_all = ["seaweedfs_tls_key", "seaweedfs_tls_ca"])]
    pub seaweedfs_tls_cert: Option<PathBuf>,

    /// PEM private key of `seaweedfs_tls_cert`.
    #[arg(long, env = ENV_SEAWEEDFS_TLS_KEY, requires = "seaweedfs_tls_cert")]
    pub seaweedfs_tls_key: Option<PathBuf>,

    /// Name every SeaweedFS server certificate must be valid for (also sent as SNI). Unset:
    /// the chain is verified but not the name, as SeaweedFS's own clients do ("the host name
    /// is not checked", security.toml), since servers are dialled at the addresses they
    /// register, usually pod IPs.
    #[arg(long, env = ENV_SEAWEEDFS_TLS_SERVER_NAME, requires = "seaweedfs_tls_ca")]
    pub seaweedfs_tls_server_name: Option<String>,
}

impl Config {
    /// The built-in default of `shutdown_grace_ms`, read from the argument definition so the
    /// number lives only in the attribute above (the webhook sizes pods' grace period by it).
    pub fn default_shutdown_grace_ms() -> u64 {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let command = Wrapper::command();
        command
            .get_arguments()
            .find(|a| a.get_id() == "shutdown_grace_ms")
            .and_then(|a| a.get_default_values().first())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse().ok())
            .expect("shutdown_grace_ms has a numeric default")
    }

    /// Rules between settings that clap cannot express. Pure (no file is read), so it runs
    /// before anything starts; `kelp::start` runs it too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.peer_listen.is_none() {
            return Ok(());
        }
        match (&self.peer_secret_file, self.peer_allow_unauthenticated) {
            (Some(_), false) | (None, true) => Ok(()),
            (None, false) => Err(ConfigError {
                setting: ENV_PEER_SECRET_FILE,
                reason: format!(
                    "the peer listener ({ENV_PEER_LISTEN}) needs a shared secret: set \
                     {ENV_PEER_SECRET_FILE} (--peer-secret-file) to a file holding it, or \
                     {ENV_PEER_ALLOW_UNAUTHENTICATED}=true if every host that can reach the \
                     peer port is trusted"
                ),
            }),
            (Some(_), true) => Err(ConfigError {
                setting: ENV_PEER_ALLOW_UNAUTHENTICATED,
                reason: format!(
                    "set together with {ENV_PEER_SECRET_FILE}; choose one: the secret \
                     (authenticated peers) or no authentication"
                ),
            }),
        }
    }

    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn group_lease(&self) -> Duration {
        Duration::from_millis(self.group_lease_ms)
    }

    pub fn partition_lease(&self) -> Duration {
        Duration::from_millis(self.partition_lease_ms)
    }

    /// How long a produce request with `acks` and `timeout_ms` waits for the broker's flush
    /// of its records: `None` (no wait) unless it is acks=all and `acks_all_flushed` is on.
    pub fn flush_wait(&self, acks: i16, timeout_ms: i32) -> Option<Duration> {
        let asked = u64::try_from(timeout_ms).unwrap_or(0);
        (acks == -1 && self.acks_all_flushed)
            .then(|| Duration::from_millis(asked.clamp(1, self.flush_wait_ms)))
    }

    /// Largest frame on the peer link: group requests and forwarded Produce requests.
    pub fn peer_frame_limit(&self) -> u32 {
        self.peer_max_frame_bytes.max(self.max_frame_bytes)
    }

    pub fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.tls_handshake_timeout_ms)
    }

    /// The Kafka listener's TLS files, `None` when TLS is off; an error names the setting
    /// missing from a pair.
    pub fn listener_tls(&self) -> anyhow::Result<Option<crate::tls::ListenerFiles<'_>>> {
        let Some(cert) = &self.tls_cert else { return Ok(None) };
        let Some(key) = &self.tls_key else {
            anyhow::bail!("{ENV_TLS_CERT} is set without {ENV_TLS_KEY}");
        };
        Ok(Some(crate::tls::ListenerFiles {
            cert,
            key,
            client_ca: self.tls_client_ca.as_deref(),
            handshake_timeout: self.tls_handshake_timeout(),
        }))
    }

    /// How to reach SeaweedFS over TLS; `None` for plaintext gRPC.
    pub fn seaweedfs_tls(&self) -> Option<crate::seaweed::SeaweedTls> {
        let ca = self.seaweedfs_tls_ca.clone()?;
        Some(crate::seaweed::SeaweedTls {
            ca,
            identity: self.seaweedfs_tls_cert.clone().zip(self.seaweedfs_tls_key.clone()),
            server_name: self.seaweedfs_tls_server_name.clone(),
        })
    }

    /// Parse settings from `args` (as if given on the command line; `KELP_*` variables still
    /// fill what the args leave out). For tests and embedding.
    pub fn from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        use clap::Parser;
        let args = std::iter::once(std::ffi::OsString::from("kelp"))
            .chain(args.into_iter().map(Into::into));
        Wrapper::try_parse_from(args).map(|w| w.config)
    }
}

/// Settings of `kelp webhook`, the mutating admission webhook that adds kelp to pods which
/// opt in. The container it adds is read from `sidecar_file` (the Helm chart renders it from
/// the same template people paste by hand), so none of kelp's own settings appear here.
#[derive(Debug, Clone, Args)]
pub struct WebhookConfig {
    /// Address the HTTPS server binds; the Kubernetes API server calls `POST /mutate` on it.
    #[arg(long, env = ENV_WEBHOOK_LISTEN, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// PEM certificate chain served to the API server. Re-read when the file changes
    /// (cert-manager renewals), so no restart is needed.
    #[arg(long, env = ENV_WEBHOOK_TLS_CERT, default_value = "/etc/kelp/webhook/tls/tls.crt")]
    pub tls_cert: PathBuf,

    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = ENV_WEBHOOK_TLS_KEY, default_value = "/etc/kelp/webhook/tls/tls.key")]
    pub tls_key: PathBuf,

    /// JSON file `{"container": {...}, "volumes": [...]}`: the kelp container (named `kelp`)
    /// and the volumes it mounts, added to every injected pod.
    #[arg(long, env = ENV_WEBHOOK_SIDECAR_FILE, default_value = "/etc/kelp/webhook/sidecar/sidecar.json")]
    pub sidecar_file: PathBuf,

    /// Inject kelp as a native sidecar (an init container with `restartPolicy: Always`) or as
    /// a plain container. `auto` decides from `kube_version`: native from Kubernetes 1.29 on.
    #[arg(long, env = ENV_WEBHOOK_NATIVE_SIDECAR, value_enum, default_value_t = NativeSidecar::Auto)]
    pub native_sidecar: NativeSidecar,

    /// Version of the cluster's API server (e.g. `v1.29.4-eks-036c24b`), used by
    /// `native_sidecar = auto`. The Helm chart passes `.Capabilities.KubeVersion`. Unset with
    /// `auto` means a plain container, which works on every version.
    #[arg(long, env = ENV_WEBHOOK_KUBE_VERSION)]
    pub kube_version: Option<String>,

    /// Environment variable set on the application's containers (those that don't set it
    /// already) to tell its Kafka client where kelp listens.
    #[arg(long, env = ENV_WEBHOOK_BOOTSTRAP_ENV, default_value = "KAFKA_BOOTSTRAP_SERVERS")]
    pub bootstrap_env: String,

    /// The value of that variable: kelp's listener as seen from inside the pod.
    #[arg(long, env = ENV_WEBHOOK_BOOTSTRAP_SERVERS, default_value = "127.0.0.1:9092")]
    pub bootstrap_servers: String,
}

/// How `kelp webhook` adds kelp to a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NativeSidecar {
    /// Native from Kubernetes 1.29 (where the SidecarContainers feature is on by default).
    Auto,
    /// Always an init container with `restartPolicy: Always`.
    #[value(name = "true")]
    Enabled,
    /// Always a plain container next to the application's.
    #[value(name = "false")]
    Disabled,
}

impl WebhookConfig {
    /// Parse webhook settings from flags (and `KELP_WEBHOOK_*` variables, as for `Config`).
    pub fn from_args<I, T>(args: I) -> Result<WebhookConfig, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: WebhookConfig,
        }
        use clap::Parser;
        let args = std::iter::once(std::ffi::OsString::from("kelp"))
            .chain(args.into_iter().map(Into::into));
        Wrapper::try_parse_from(args).map(|w| w.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bind_loopback_and_allow_auto_creation() {
        let c = Config::from_args(Vec::<String>::new()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9092".parse().unwrap());
        assert!(c.auto_create_topics);
        assert!(c.admin_apis, "cluster-wide APIs are served unless turned off");
        assert_eq!(c.namespace, "kafka");
        assert_eq!(c.filer_root, "/kelp");
        assert_eq!(c.max_message_bytes, 1_048_588);
        assert_eq!((c.max_in_flight_requests, c.max_in_flight_bytes), (16, 16 * 1024 * 1024));
        assert_eq!(
            (c.peer_listen, c.group_lease_ms),
            (None, 10_000),
            "one kelp owns every group unless peers are configured"
        );
    }

    #[test]
    fn a_bad_value_names_its_setting() {
        let err = Config::from_args(["--default-partitions", "0"]).unwrap_err().to_string();
        assert!(err.contains("--default-partitions"), "{err}");
        let err = Config::from_args(["--listen", "nowhere"]).unwrap_err().to_string();
        assert!(err.contains("--listen"), "{err}");
        let err = Config::from_args(["--auto-create-topics", "maybe"]).unwrap_err().to_string();
        assert!(err.contains("--auto-create-topics"), "{err}");
        let err = Config::from_args(["--admin-apis", "off"]).unwrap_err().to_string();
        assert!(err.contains("--admin-apis"), "{err}");
        let err = Config::from_args(["--group-lease-ms", "500"]).unwrap_err().to_string();
        assert!(err.contains("--group-lease-ms"), "{err}");
        let err = Config::from_args(["--peer-listen", "nowhere"]).unwrap_err().to_string();
        assert!(err.contains("--peer-listen"), "{err}");
        let err = Config::from_args(["--peer-max-frame-bytes", "10"]).unwrap_err().to_string();
        assert!(err.contains("--peer-max-frame-bytes"), "{err}");
        let err = Config::from_args(["--max-in-flight-requests", "0"]).unwrap_err().to_string();
        assert!(err.contains("--max-in-flight-requests"), "{err}");
    }

    #[test]
    fn acks_all_waits_for_the_flush_within_the_shorter_of_both_limits() {
        let c = Config::from_args(Vec::<String>::new()).unwrap();
        assert!(c.acks_all_flushed, "acks=all survives a broker restart unless turned off");
        assert_eq!(c.flush_wait(-1, 60_000), Some(Duration::from_secs(30)));
        assert_eq!(c.flush_wait(-1, 5_000), Some(Duration::from_secs(5)));
        assert_eq!(c.flush_wait(-1, -1), Some(Duration::from_millis(1)));
        assert_eq!(c.flush_wait(1, 5_000), None, "acks=1 never waits for the flush");
        assert_eq!(c.flush_wait(0, 5_000), None);
        let c = Config::from_args(["--flush-wait-ms", "2000"]).unwrap();
        assert_eq!(c.flush_wait(-1, i32::MAX), Some(Duration::from_secs(2)));
        let c = Config::from_args(["--acks-all-flushed", "false"]).unwrap();
        assert!(!c.acks_all_flushed);
        assert_eq!(c.flush_wait(-1, 5_000), None);
        let err = Config::from_args(["--flush-wait-ms", "0"]).unwrap_err().to_string();
        assert!(err.contains("--flush-wait-ms"), "{err}");
    }

    #[test]
    fn a_peer_listener_needs_a_secret_or_an_explicit_opt_out() {
        let defaults = Config::from_args(Vec::<String>::new()).unwrap();
        assert_eq!(defaults.peer_max_frame_bytes, 1024 * 1024);
        assert!(!defaults.peer_allow_unauthenticated);
        defaults.validate().expect("no peer listener, nothing to authenticate");

        let bare = Config::from_args(["--peer-listen", "127.0.0.1:0"]).unwrap();
        let err = bare.validate().unwrap_err();
        assert_eq!(err.setting, ENV_PEER_SECRET_FILE);
        let text = err.to_string();
        assert!(text.starts_with(ENV_PEER_SECRET_FILE), "{text}");
        assert!(text.contains(ENV_PEER_ALLOW_UNAUTHENTICATED), "names the opt-out: {text}");

        let secret = ["--peer-listen", "127.0.0.1:0", "--peer-secret-file", "/run/s"];
        Config::from_args(secret).unwrap().validate().unwrap();
        let open = ["--peer-listen", "127.0.0.1:0", "--peer-allow-unauthenticated", "true"];
        Config::from_args(open).unwrap().validate().unwrap();

        let both = Config::from_args([
            "--peer-listen",
            "127.0.0.1:0",
            "--peer-secret-file",
            "/run/s",
            "--peer-allow-unauthenticated",
            "true",
        ])
        .unwrap();
        assert_eq!(both.validate().unwrap_err().setting, ENV_PEER_ALLOW_UNAUTHENTICATED);
    }

    #[test]
    fn tls_files_come_in_pairs() {
        let c = Config::from_args(Vec::<String>::new()).unwrap();
        assert!(c.tls_cert.is_none() && c.seaweedfs_tls().is_none(), "plaintext by default");
        let err = Config::from_args(["--tls-cert", "c.pem"]).unwrap_err().to_string();
        assert!(err.contains("--tls-key"), "{err}");
        let err = Config::from_args(["--tls-client-ca", "ca.pem"]).unwrap_err().to_string();
        assert!(err.contains("--tls-cert"), "{err}");
        let err = Config::from_args(["--seaweedfs-tls-cert", "c.pem", "--seaweedfs-tls-key", "k"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--seaweedfs-tls-ca"), "{err}");
        let c = Config::from_args(["--seaweedfs-tls-ca", "ca.pem"]).unwrap();
        let tls = c.seaweedfs_tls().unwrap();
        assert!(tls.identity.is_none() && tls.server_name.is_none(), "{tls:?}");
        let c = Config::from_args([
            "--seaweedfs-tls-ca",
            "ca.pem",
            "--seaweedfs-tls-cert",
            "c.pem",
            "--seaweedfs-tls-key",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(c.seaweedfs_tls().unwrap().identity, Some(("c.pem".into(), "k.pem".into())));
    }
}

#[cfg(test)]
mod docs_tests {
    /// Every `KELP_*` name declared above, read from this file so a new setting cannot be
    /// forgotten here.
    fn declared() -> Vec<String> {
        include_str!("config.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub const ENV_"))
            .filter_map(|l| l.split('"').nth(1))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_setting_is_documented() {
        let doc = include_str!("../docs/configuration.md");
        let names = declared();
        assert!(names.len() >= 15, "found {names:?}");
        for n in names {
            assert!(doc.contains(&format!("`{n}`")), "{n} missing from docs/configuration.md");
        }
    }
}
