//! Start kelp in-process in front of a test SeaweedFS, on a free loopback port.

use std::net::SocketAddr;
use std::time::Duration;

use kelp::config::Config;
use kelp::embedded::SeaweedFs;

pub struct Kelp {
    pub addr: SocketAddr,
    pub config: Config,
    running: Option<kelp::Running>,
}

impl Kelp {
    /// kelp on 127.0.0.1:0 with test defaults plus `extra` flags (e.g. `["--default-partitions", "3"]`).
    pub async fn start(seaweedfs: &SeaweedFs, extra: &[&str]) -> Kelp {
        let a = seaweedfs.addrs();
        let mut args = vec!["--listen", "127.0.0.1:0", "--master", &a.master, "--filer", &a.filer];
        if !extra.contains(&"--upstream-timeout-ms") {
            args.extend_from_slice(&["--upstream-timeout-ms", "5000"]);
        }
        args.extend_from_slice(extra);
        let config = Config::from_args(args).expect("test config parses");
        kelp::wait_for_seaweedfs(&config, Duration::from_secs(60)).await.expect("SeaweedFS answers kelp");
        let running = kelp::start(config.clone()).await.expect("kelp starts");
        Kelp { addr: running.kafka_addr, config, running: Some(running) }
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub async fn stop(mut self) -> bool {
        self.running.take().expect("running").shutdown().await
    }
}
