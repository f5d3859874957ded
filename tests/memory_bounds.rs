//! Hostile load against the `kelp` binary run as its own process: many connections at once
//! sending requests that expand (zstd batches of zeros), fetches that ask for much more than
//! their budget, and frames announced large and never finished. Each attack is answered or
//! refused, kelp keeps serving, and its peak memory (VmHWM in /proc) grows by less than a
//! bound that the same attacks without kelp's limits exceed many times over.

mod common;

use bytes::{BufMut, Bytes};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

use common::kelp::KelpProcess;
use common::raw::Raw;

const MIB: usize = 1024 * 1024;
/// kelp's process-wide budget for decompressed and fetched records in this test.
const BUDGET: usize = 4 * MIB;
/// Partitions of the topic; every Produce and Fetch names all of them.
const PARTITIONS: i32 = 8;
/// Value size of the one record of each zstd batch (zeros: a few hundred bytes compressed).
const RECORD: usize = 512 * 1024;
/// Connections attacking at once.
const CONNECTIONS: usize = 16;
/// Most the peak RSS may grow during one attack. Without the budget, the Produce attack
/// alone holds CONNECTIONS × PARTITIONS × RECORD = 64 MiB of decompressed records at once
/// (before any copy), and the Fetch attack asks for 16 × 8 × 4 MiB.
const GROWTH_BOUND_KIB: u64 = 40 * 1024;

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("kelp's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Resets the peak to the current RSS (Linux: 5 to clear_refs) and returns that RSS.
fn reset_peak(pid: u32) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
    status_kib(pid, "VmRSS")
}

fn assert_growth(pid: u32, base_kib: u64, attack: &str) {
    let peak = status_kib(pid, "VmHWM");
    let grown = peak.saturating_sub(base_kib);
    eprintln!("{attack}: RSS {base_kib} KiB before, peak {peak} KiB (+{grown} KiB)");
    assert!(grown < GROWTH_BOUND_KIB, "{attack}: peak RSS grew by {grown} KiB");
}

async fn still_serving(addr: std::net::SocketAddr) {
    let mut c = Raw::connect(addr).await;
    let req = RequestKind::ApiVersions(ApiVersionsRequest::default());
    match c.call(ApiKey::ApiVersions, 3, req).await {
        ResponseKind::ApiVersions(r) => assert_eq!(r.error_code, 0),
        other => panic!("unexpected {other:?}"),
    }
}

fn fetch_all(topic: &str) -> FetchRequest {
    let partitions = (0..PARTITIONS)
        .map(|p| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(0)
                .with_partition_max_bytes(4 * MIB as i32)
        })
        .collect();
    FetchRequest::default().with_max_wait_ms(0).with_max_bytes(64 * MIB as i32).with_topics(vec![
        FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(partitions),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_load_stays_within_the_memory_budget() {
    let seaweedfs = common::seaweedfs().await;
    let budget = BUDGET.to_string();
    let mut kelp = KelpProcess::start(
        env!("CARGO_BIN_EXE_kelp"),
        &seaweedfs,
        false,
        &["--memory-budget-bytes", &budget, "--max-uncompressed-bytes", &(8 * MIB).to_string()],
    )
    .await;
    let (addr, pid) = (kelp.addr, kelp.pid());
    let topic = common::unique_name("memory");
    common::create_topic_raw(addr, &topic, PARTITIONS).await;
    // Publish streams and layouts exist before the first measurement.
    let warm = (0..PARTITIONS).map(|p| (p, common::raw::batch_of(vec![(None, "w".into(), 1)])));
    let codes: Vec<i16> = common::raw::produce(addr, &topic, warm.collect())
        .await
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, vec![0; PARTITIONS as usize]);

    // 1. Expanding Produce requests, all connections at once.
    let bomb = common::raw::compressed_batch_of(
        vec![(None, Bytes::from(vec![0u8; RECORD]), 1)],
        Compression::Zstd,
    );
    assert!(bomb.len() < 4096, "the batch compresses to {} bytes", bomb.len());
    let base = reset_peak(pid);
    let attacks = (0..CONNECTIONS).map(|_| {
        let (topic, bomb) = (topic.clone(), bomb.clone());
        tokio::spawn(async move {
            let parts = (0..PARTITIONS).map(|p| (p, bomb.clone())).collect();
            common::raw::produce(addr, &topic, parts).await
        })
    });
    let mut stored = 0;
    for a in attacks.collect::<Vec<_>>() {
        for p in a.await.expect("produce task") {
            // Stored, or refused with a retriable error when its share of the budget did not
            // come in time.
            match ResponseError::try_from_code(p.error_code) {
                None => stored += 1,
                Some(e) => assert!(e.is_retriable(), "partition {}: {e:?}", p.index),
            }
        }
    }
    assert!(stored > 0, "no expanding batch was stored at all");
    assert_growth(pid, base, "expanding Produce requests");
    still_serving(addr).await;

    // 2. Fetches asking for every partition at 4 MiB each, all connections at once.
    let base = reset_peak(pid);
    let fetches = (0..CONNECTIONS).map(|_| {
        let req = fetch_all(&topic);
        tokio::spawn(async move {
            let mut c = Raw::connect(addr).await;
            match c.call(ApiKey::Fetch, 12, RequestKind::Fetch(req)).await {
                ResponseKind::Fetch(r) => r
                    .responses
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .map(|p| {
                        // Records, or a retriable error when the share of the budget did
                        // not come in time.
                        if let Some(e) = ResponseError::try_from_code(p.error_code) {
                            assert!(e.is_retriable(), "partition {}: {e:?}", p.partition_index);
                        }
                        p.records.as_ref().map_or(0, Bytes::len)
                    })
                    .sum::<usize>(),
                other => panic!("unexpected {other:?}"),
            }
        })
    });
    let mut fetched = 0;
    for f in fetches.collect::<Vec<_>>() {
        fetched += f.await.expect("fetch task");
    }
    assert!(fetched > 0, "the fetches returned no records at all");
    assert_growth(pid, base, "oversized Fetch requests");
    still_serving(addr).await;

    // 3. Frames announced at 90 MiB that never arrive: 200 connections, 16 KiB each.
    let base = reset_peak(pid);
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut c = Raw::connect(addr).await;
        let mut start = Vec::with_capacity(4 + 16 * 1024);
        start.put_u32(90 * MIB as u32);
        start.resize(4 + 16 * 1024, 7);
        c.send_bytes(&start).await;
        stalled.push(c);
    }
    still_serving(addr).await;
    assert_growth(pid, base, "unfinished large frames");
    drop(stalled);

    still_serving(addr).await;
    kelp.kill();
}
