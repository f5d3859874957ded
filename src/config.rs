//! Every setting kelp has: its flag, its `KELP_*` environment variable and its default.
//!
//! This is the one home of those names. Helm's values.yaml mirrors them and a test keeps the
//! two in step. When adding a setting: add the field here with `env = ENV_X`, add the const,
//! document it in docs/configuration.md, and add the values.yaml key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

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
pub const ENV_MAX_CONNECTIONS: &str = "KELP_MAX_CONNECTIONS";
pub const ENV_UPSTREAM_TIMEOUT_MS: &str = "KELP_UPSTREAM_TIMEOUT_MS";
pub const ENV_IDLE_TIMEOUT_MS: &str = "KELP_IDLE_TIMEOUT_MS";
pub const ENV_SHUTDOWN_GRACE_MS: &str = "KELP_SHUTDOWN_GRACE_MS";
pub const ENV_LOG: &str = "KELP_LOG";
// Client quotas and SASL (docs/quotas.md).
pub const ENV_QUOTAS_FILE: &str = "KELP_QUOTAS_FILE";
pub const ENV_SASL_USERS_FILE: &str = "KELP_SASL_USERS_FILE";
// Consumer groups whose members talk to different kelps (docs/consumer-groups.md).
pub const ENV_PEER_LISTEN: &str = "KELP_PEER_LISTEN";
pub const ENV_PEER_ADVERTISED: &str = "KELP_PEER_ADVERTISED";
pub const ENV_GROUP_LEASE_MS: &str = "KELP_GROUP_LEASE_MS";

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
    /// bound listen address.
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
    #[arg(long, env = ENV_DEFAULT_PARTITIONS, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=4096))]
    pub default_partitions: i32,

    /// Largest request frame accepted; a larger length prefix closes the connection.
    #[arg(long, env = ENV_MAX_FRAME_BYTES, default_value_t = 100 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_frame_bytes: u32,

    /// Largest record batch accepted per partition (Kafka's message.max.bytes);
    /// larger batches get MESSAGE_TOO_LARGE.
    #[arg(long, env = ENV_MAX_MESSAGE_BYTES, default_value_t = 1_048_588, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_message_bytes: u32,

    /// Largest size the compressed batches of one Produce request (all its partitions) may
    /// decompress to, together; a partition beyond it is refused with MESSAGE_TOO_LARGE.
    #[arg(long, env = ENV_MAX_UNCOMPRESSED_BYTES, default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_uncompressed_bytes: u32,

    /// Concurrent Kafka connections; further connections wait to be accepted.
    #[arg(long, env = ENV_MAX_CONNECTIONS, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

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

    /// Address of the peer listener, where other kelps forward the requests of consumer
    /// groups this kelp owns. Off unless set: then this kelp runs every group itself, as a
    /// kelp alone does (members of one group must then all talk to this kelp).
    #[arg(long, env = ENV_PEER_LISTEN)]
    pub peer_listen: Option<SocketAddr>,

    /// host:port other kelps use to reach the peer listener (recorded with each group lease).
    /// Default: the bound peer address; for a wildcard bind (0.0.0.0, ::), the local address
    /// this kelp uses to reach the SeaweedFS master (in Kubernetes, the pod IP).
    #[arg(long, env = ENV_PEER_ADVERTISED)]
    pub peer_advertised: Option<String>,

    /// Lifetime of a group-ownership lease in the filer, in milliseconds (the filer counts
    /// whole seconds, so it is rounded up to one). The owner renews it every third of that
    /// and stops acting as owner a fifth of it before it could expire; a crashed owner's
    /// groups move to another kelp at most this long after its last renewal.
    #[arg(long, env = ENV_GROUP_LEASE_MS, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2_000..=3_600_000))]
    pub group_lease_ms: u64,
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
        assert_eq!(c.namespace, "kafka");
        assert_eq!(c.filer_root, "/kelp");
        assert_eq!(c.max_message_bytes, 1_048_588);
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
        let err = Config::from_args(["--group-lease-ms", "500"]).unwrap_err().to_string();
        assert!(err.contains("--group-lease-ms"), "{err}");
        let err = Config::from_args(["--peer-listen", "nowhere"]).unwrap_err().to_string();
        assert!(err.contains("--peer-listen"), "{err}");
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
