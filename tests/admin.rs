//! The admin HTTP server: /livez at once, /readyz only after SeaweedFS answered, /metrics in
//! Prometheus text format with kelp's request, connection and byte counters.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::raw::Raw;

/// GET `path`; (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("admin connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: kelp\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut buf))
        .await
        .expect("admin answers")
        .unwrap();
    let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The value of a sample line `name{labels} value` in a Prometheus exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_seaweedfs_and_metrics_count_requests() {
    let mut seaweedfs = common::seaweedfs().await;
    seaweedfs.stop_broker().await.expect("broker stops");

    let a = seaweedfs.addrs().clone();
    let config = kelp::config::Config::from_args([
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--master",
        &a.master,
        "--filer",
        &a.filer,
        "--upstream-timeout-ms",
        "2000",
    ])
    .unwrap();
    let running = kelp::start(config).await.expect("kelp starts without SeaweedFS's broker");
    let admin = running.admin_addr.expect("admin bound");

    assert_eq!(get(admin, "/livez").await.0, 200, "live without dependencies");
    assert_eq!(get(admin, "/readyz").await.0, 503, "not ready while the broker is down");
    assert_eq!(get(admin, "/nope").await.0, 404);

    seaweedfs.start_broker(Duration::from_secs(60)).await.expect("broker restarts");
    common::eventually(|| async {
        match get(admin, "/readyz").await.0 {
            200 => Ok(()),
            s => Err(s),
        }
    })
    .await;

    let (_, before) = get(admin, "/metrics").await;
    let series = "kelp_requests_total{api=\"ApiVersions\"}";
    let n0 = sample(&before, series).unwrap_or(0.0);
    let mut c = Raw::connect(running.kafka_addr).await;
    for _ in 0..3 {
        c.call(ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default()))
            .await;
    }
    let (status, after) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&after, series), Some(n0 + 3.0), "three ApiVersions counted");
    assert!(sample(&after, "kelp_connections_active").unwrap() >= 1.0);
    assert!(sample(&after, "kelp_received_bytes_total").unwrap() > 0.0);
    assert!(sample(&after, "kelp_sent_bytes_total").unwrap() > 0.0);
    assert!(
        after.contains("api=\"ApiVersions\"} ")
            && after.contains("kelp_request_duration_seconds_bucket{le=")
    );
    // SeaweedFS calls are timed, and the ones made while the broker was down counted as errors.
    assert!(
        after.contains(
            "kelp_upstream_duration_seconds_count{service=\"broker\",method=\"FindBrokerLeader\"}"
        ),
        "{after}"
    );
    assert!(after.contains("kelp_upstream_errors_total{service=\"broker\""), "{after}");
    // Every sample line parses as `series value`.
    for line in after.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let value = line.rsplit_once(' ').map(|(_, v)| v).unwrap();
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "bad sample line {line}");
    }
    drop(c);
    assert!(running.shutdown().await);
}
