//! `--targets kelps`: the shape kelp is deployed in. `--kelps N` kelp processes (one per pod
//! in production) on one SeaweedFS, linked by their peer listeners, so each partition has one
//! writing kelp and the others forward its records there.
//!
//! - Throughput: N producers, each writing every partition, first all through one kelp, then
//!   producer i through kelp i (a record reaches its partition's writer directly or over the
//!   peer link). The ratio of the two aggregates is what spreading clients over kelps costs.
//! - Latency at low load, one record at a time from a producer to a consumer waiting in a
//!   fetch: both on the writing kelp, the consumer on another kelp, the producer on another
//!   kelp (its records forwarded).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::{
    Cores, Guard, Lat, Opts, Others, Proc, ProduceJob, Quiet, Rate, blocking, drop_in_background,
    f1, f3, free_port, kafka_create_topic, kafka_produce, ms, percentiles, ratio, spawn_kelp,
    wait_metadata,
};

/// Least pause between two records of the latency paths, long enough for the consumer to be
/// waiting in its next fetch; each pause adds 0–24 ms more, so sends fall anywhere within a
/// fetch's polling interval.
const PAUSE: Duration = Duration::from_millis(25);

/// One kelp process of the group.
struct Sidecar {
    _guard: Guard,
    proc: Proc,
    bootstrap: String,
}

/// One throughput case measured both ways.
pub(super) struct Row {
    size: usize,
    codec: String,
    one: Result<Measured, String>,
    many: Result<Measured, String>,
}

struct Measured {
    rate: Rate,
    /// CPU seconds of all kelps together per MB produced.
    kelp_cpu_per_mb: Option<f64>,
    cores: Cores,
}

pub(super) struct Latency {
    path: &'static str,
    lat: Option<Lat>,
    note: String,
}

pub(super) struct Run {
    kelps: usize,
    rows: Vec<Row>,
    latency: Vec<Latency>,
    note: Option<String>,
}

/// Starts the kelps, measures, stops them. Needs the release binary (each kelp is its own
/// process, as in production).
pub(super) async fn run(
    o: &Opts,
    bin: Option<&Path>,
    master: &str,
    filer: &str,
    others: Others,
) -> Run {
    let n = o.kelps.max(2);
    let mut out = Run { kelps: n, rows: Vec::new(), latency: Vec::new(), note: None };
    let Some(bin) = bin else {
        out.note = Some("not run: needs target/release/kelp (one process per kelp)".into());
        return out;
    };
    let dir = match tempfile::Builder::new().prefix("kelp-bench-kelps-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            out.note = Some(format!("not run: temporary directory: {e}"));
            return out;
        }
    };
    let kelps = match start(n, bin, master, filer, dir.path()).await {
        Ok(k) => k,
        Err(e) => {
            out.note = Some(format!("not run: {e}"));
            return out;
        }
    };
    for &size in &o.sizes {
        let payloads = Arc::new(super::payloads(size, 1024));
        let codec = o.codecs.first().cloned().unwrap_or_else(|| "none".into());
        eprintln!("bench: {n} kelps, {size} B records, {codec}");
        let one = throughput(o, &kelps[..1], n, size, &codec, &payloads, others).await;
        let many = throughput(o, &kelps, n, size, &codec, &payloads, others).await;
        out.rows.push(Row { size, codec, one, many });
    }
    if o.latency_records > 0 {
        eprintln!("bench: {n} kelps, latency");
        let size = o.sizes.first().copied().unwrap_or(100);
        out.latency = latency(o, &kelps, &Arc::new(super::payloads(size, 1))).await;
    }
    out
}

/// `n` kelp processes sharing one peer secret, each with its own Kafka, admin and peer port.
async fn start(
    n: usize,
    bin: &Path,
    master: &str,
    filer: &str,
    dir: &Path,
) -> Result<Vec<Sidecar>, String> {
    let secret = dir.join("peer-secret");
    let key = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    std::fs::write(&secret, key).map_err(|e| format!("peer secret: {e}"))?;
    let mut kelps = Vec::with_capacity(n);
    for i in 0..n {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let args = [
            "--listen".to_string(),
            addr.to_string(),
            "--admin-listen".into(),
            SocketAddr::from(([127, 0, 0, 1], free_port())).to_string(),
            "--peer-listen".into(),
            SocketAddr::from(([127, 0, 0, 1], free_port())).to_string(),
            "--peer-secret-file".into(),
            secret.display().to_string(),
            "--master".into(),
            master.to_string(),
            "--filer".into(),
            filer.to_string(),
            // As the `kelp` target: acknowledged once the broker holds the records.
            "--acks-all-flushed".into(),
            "false".into(),
        ];
        let guard = spawn_kelp(bin, &args, &dir.join(format!("kelp-{i}.log")), addr).await?;
        let pid = guard.0.as_ref().map_or(0, std::process::Child::id);
        kelps.push(Sidecar { _guard: guard, proc: Proc::new(pid), bootstrap: addr.to_string() });
    }
    Ok(kelps)
}

/// `producers` producers writing every partition, producer i through `kelps[i % len]`.
async fn throughput(
    o: &Opts,
    kelps: &[Sidecar],
    producers: usize,
    size: usize,
    codec: &str,
    payloads: &Arc<Vec<Bytes>>,
    others: Others,
) -> Result<Measured, String> {
    let timeout = Duration::from_secs(o.phase_timeout);
    let topic =
        format!("bench-kelps-{}of{producers}-{size}-{codec}-{}", kelps.len(), std::process::id());
    kafka_create_topic(&kelps[0].bootstrap, &topic, o.partitions, timeout).await?;
    for k in kelps {
        let (bs, t, parts) = (k.bootstrap.clone(), topic.clone(), o.partitions);
        blocking(timeout, move || wait_metadata(&bs, &t, parts, timeout)).await?;
    }
    let job = ProduceJob {
        bootstraps: kelps.iter().map(|k| k.bootstrap.clone()).collect(),
        topic,
        partitions: o.partitions,
        records: o.records,
        codec: codec.to_string(),
        window: o.window,
        linger_ms: o.linger_ms,
        timeout,
        warmup: true,
        proc: None,
        others: Some(others),
        producers,
        every_partition: true,
        admin: None,
    };
    let cpu = || kelps.iter().map(|k| k.proc.cpu_secs()).sum::<Option<f64>>();
    // Read around the whole call, so the kelps' CPU also holds the warm-up (one record per
    // partition); the producer's own snapshots (host cores) bracket only the timed part.
    let before = cpu();
    let pl = payloads.clone();
    let produced = blocking(timeout, move || kafka_produce(&job, &pl)).await?;
    let after = cpu();
    let mb = produced.rate.bytes as f64 / 1e6;
    Ok(Measured {
        kelp_cpu_per_mb: after.zip(before).map(|(a, b)| (a - b) / mb.max(1e-9)),
        cores: produced.cores,
        rate: produced.rate,
    })
}

/// End-to-end latency, one record at a time, along three paths between kelps 0 and 1. The
/// first record goes through kelp 0, which makes it the partition's writer.
async fn latency(o: &Opts, kelps: &[Sidecar], payloads: &Arc<Vec<Bytes>>) -> Vec<Latency> {
    let timeout = Duration::from_secs(o.phase_timeout);
    let topic = format!("bench-kelps-lat-{}", std::process::id());
    let paths: [(&'static str, usize, usize); 3] = [
        ("producer and consumer on the writing kelp", 0, 0),
        ("consumer on another kelp", 0, 1),
        ("producer on another kelp (forwarded)", 1, 0),
    ];
    let setup = async {
        kafka_create_topic(&kelps[0].bootstrap, &topic, 1, timeout).await?;
        for k in &kelps[..2] {
            let (bs, t) = (k.bootstrap.clone(), topic.clone());
            blocking(timeout, move || wait_metadata(&bs, &t, 1, timeout)).await?;
        }
        Ok::<(), String>(())
    };
    if let Err(e) = setup.await {
        return paths
            .iter()
            .map(|&(path, ..)| Latency { path, lat: None, note: e.clone() })
            .collect();
    }
    let mut out = Vec::new();
    for (path, from, to) in paths {
        let (p, c, t) = (kelps[from].bootstrap.clone(), kelps[to].bootstrap.clone(), topic.clone());
        let (n, pl) = (o.latency_records, payloads.clone());
        let r = blocking(timeout, move || one_at_a_time(&p, &c, &t, n, &pl[0], timeout)).await;
        out.push(match r {
            Ok(v) => Latency { path, lat: percentiles(v), note: String::new() },
            Err(e) => Latency { path, lat: None, note: e },
        });
    }
    out
}

/// Sends `n` records one at a time through `from`; each is timed from `send` until a
/// consumer on `to`, already waiting in a fetch at the end of the partition, has it.
/// Blocking.
fn one_at_a_time(
    from: &str,
    to: &str,
    topic: &str,
    n: usize,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<Duration>, String> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", from)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", timeout.as_millis().to_string())
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    let consumer: BaseConsumer<Quiet> = ClientConfig::new()
        .set("bootstrap.servers", to)
        .set("group.id", "kelp-bench-latency")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "500")
        .create_with_context(Quiet::default())
        .map_err(|e| format!("consumer: {e}"))?;
    let result = (|| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::End).map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
        // An untimed first record sets up `from`'s connection and (on the first path) the
        // writer's lease; meanwhile the consumer resolves the end offset and starts fetching,
        // which may be before or after that record.
        let send = |key: &str| {
            producer
                .send(BaseRecord::<str, [u8]>::to(topic).partition(0).key(key).payload(payload))
                .map_err(|(e, _)| format!("send: {e}"))
        };
        send("warm-up")?;
        producer.flush(timeout).map_err(|e| format!("flush: {e}"))?;
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(1) {
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                return Err(format!("consume: {e}"));
            }
        }
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            // The consumer has sent its next fetch and is waiting in it, not racing the send.
            std::thread::sleep(PAUSE + Duration::from_millis(i as u64 * 7 % 25));
            let key = i.to_string();
            let start = Instant::now();
            send(&key)?;
            loop {
                if start.elapsed() > timeout {
                    return Err(format!("record {i} not consumed within {} s", timeout.as_secs()));
                }
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) if m.key() == Some(key.as_bytes()) => break,
                    Some(Ok(_)) | None => {}
                    Some(Err(e)) => return Err(format!("consume: {e}")),
                }
            }
            lat.push(start.elapsed());
        }
        producer.flush(timeout).map_err(|e| format!("flush: {e}"))?;
        Ok(lat)
    })();
    drop_in_background(consumer);
    drop_in_background(producer);
    result
}

pub(super) fn report(s: &mut String, o: &Opts, run: &Run) {
    let n = run.kelps;
    let _ = writeln!(s, "\n### Many kelps ({n} kelp processes, peer-linked, one SeaweedFS)\n");
    if let Some(note) = &run.note {
        let _ = writeln!(s, "{note}");
        return;
    }
    let _ = writeln!(
        s,
        "{n} producers, each writing all {} partitions ({} records per case, acks=all): all through \
         one kelp, then producer i through kelp i. Each partition has one writing kelp; the others \
         forward its records over the peer link.\n",
        o.partitions, o.records
    );
    let _ = writeln!(
        s,
        "| record | codec | through 1 kelp MB/s | through {n} kelps MB/s | {n} kelps / 1 kelp | kelp CPU s/MB (1) | kelp CPU s/MB ({n}, all kelps) | host cores busy (1 / {n}) | notes |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in &run.rows {
        let mb = |m: &Result<Measured, String>| m.as_ref().ok().map(|m| m.rate.mb_s());
        let cpu = |m: &Result<Measured, String>| m.as_ref().ok().and_then(|m| m.kelp_cpu_per_mb);
        let host = |m: &Result<Measured, String>| m.as_ref().ok().and_then(|m| m.cores.host);
        let notes: Vec<&str> =
            [&r.one, &r.many].iter().filter_map(|m| m.as_ref().err().map(String::as_str)).collect();
        let _ = writeln!(
            s,
            "| {} B | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
            r.size,
            r.codec,
            f1(mb(&r.one)),
            f1(mb(&r.many)),
            ratio(mb(&r.many), mb(&r.one)),
            f3(cpu(&r.one)),
            f3(cpu(&r.many)),
            f1(host(&r.one)),
            f1(host(&r.many)),
            notes.join("; ").replace('|', "/")
        );
    }
    if !run.latency.is_empty() {
        let _ = writeln!(
            s,
            "\nEnd-to-end latency at low load (one record at a time, {} records, from send to a \
             consumer already waiting in a fetch):\n",
            o.latency_records
        );
        let _ = writeln!(s, "| path | p50 ms | p99 ms | notes |");
        let _ = writeln!(s, "|---|---|---|---|");
        for l in &run.latency {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                l.path,
                ms(l.lat.map(|l| l.p50)),
                ms(l.lat.map(|l| l.p99)),
                l.note.replace('|', "/")
            );
        }
    }
}
