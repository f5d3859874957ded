//! The command lines of the two `weed` processes: `weed server` (master + volume + filer) and
//! `weed mq.broker`, with every port explicit and every setting that differs from `weed`'s
//! defaults explained next to it.
//!
//! Owns the flags and the values they carry. Does not own picking the ports (`ports`) nor
//! running the commands (`process`).

use std::path::Path;

use super::ports::{HOST, Ports};

/// Seconds between the embedded broker's flushes of its in-memory log to the filer.
///
/// SeaweedFS 4.48 acknowledges a publish once the record is in broker memory and loses what
/// was not flushed when the broker stops (see `seaweed` module docs); one second instead of
/// the default five narrows that window.
pub const BROKER_FLUSH_SECONDS: u64 = 1;

/// Volume size limit handed to the master. The default (30 GiB) combined with
/// `-volume.max=0` (slots = free disk / volume size) would leave a handful of slots; small
/// volumes give many slots, and unwritten volumes are sparse files, so disk use stays tiny.
const VOLUME_SIZE_LIMIT_MB: u32 = 64;

/// Arguments for `weed server`: master + volume + filer, every port explicit, nothing else
/// (no S3, WebDAV, IAM or SFTP; they are off unless asked for).
pub(super) fn server_args(dir: &Path, p: &Ports) -> Vec<String> {
    let data = dir.join("data");
    vec![
        "server".into(),
        format!("-dir={}", data.display()),
        format!("-ip={HOST}"),
        format!("-ip.bind={HOST}"),
        "-filer".into(),
        format!("-master.port={}", p.master_http),
        format!("-master.port.grpc={}", p.master_grpc),
        format!("-volume.port={}", p.volume_http),
        format!("-volume.port.grpc={}", p.volume_grpc),
        format!("-filer.port={}", p.filer_http),
        format!("-filer.port.grpc={}", p.filer_grpc),
        // Default: a socket in /tmp named after the port; keep it in our dir instead.
        format!("-filer.localSocket={}", dir.join("filer.sock").display()),
        // No network here, and a test instance has nothing to report.
        "-master.telemetry=false".into(),
        format!("-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}"),
        // 0 = as many volume slots as free disk / volume size (see VOLUME_SIZE_LIMIT_MB).
        "-volume.max=0".into(),
        // Default 10 s of "stop heartbeats, then wait" on SIGTERM, useless for one node.
        "-volume.preStopSeconds=0".into(),
    ]
}

/// Arguments for `weed mq.broker`. The master is given as `ip:http.grpc` because its gRPC
/// port is not HTTP + 10000. The flush interval is [`BROKER_FLUSH_SECONDS`].
pub(super) fn broker_args(p: &Ports) -> Vec<String> {
    vec![
        "mq.broker".into(),
        format!("-ip={HOST}"),
        format!("-master={HOST}:{}.{}", p.master_http, p.master_grpc),
        format!("-port={}", p.broker_grpc),
        format!("-logFlushInterval={BROKER_FLUSH_SECONDS}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_port_is_explicit_on_the_command_lines() {
        let server = server_args(Path::new("/d"), &Ports::example());
        for flag in [
            "-master.port=1001",
            "-master.port.grpc=1002",
            "-volume.port=1003",
            "-volume.port.grpc=1004",
            "-filer.port=1005",
            "-filer.port.grpc=1006",
            "-ip.bind=127.0.0.1",
            "-dir=/d/data",
        ] {
            assert!(server.iter().any(|a| a == flag), "missing {flag} in {server:?}");
        }
        let broker = broker_args(&Ports::example());
        assert_eq!(
            broker,
            [
                "mq.broker",
                "-ip=127.0.0.1",
                "-master=127.0.0.1:1001.1002",
                "-port=1007",
                "-logFlushInterval=1"
            ]
        );
    }
}
