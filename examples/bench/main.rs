//! kelp's benchmark: one run starts a throw-away SeaweedFS and measures, on the same broker,
//!
//! 1. `direct`: kelp's own `seaweed` client publishing and fetching over gRPC, with no Kafka
//!    in between — the limit for any Kafka-to-SeaweedFS translator (plus `direct-serial`:
//!    the same, one publish at a time, partition after partition, as one Kafka connection
//!    is served by kelp);
//! 2. `kelp`: the release binary (`target/release/kelp serve`) under a librdkafka producer
//!    (acks=all) and consumer, with its CPU and memory read from /proc;
//! 3. `gateway`: SeaweedFS's own Go Kafka gateway (`weed mq.kafka.gateway`) under the same
//!    client load, with its failures reported rather than fatal.
//!
//! Then an idle-connection memory check (many Kafka connections, one ApiVersions each).
//!
//! Run `scripts/bench.sh [options]` (installs what is missing, builds kelp and this example
//! in release mode) or, with `target/release/kelp` built, `cargo run --release --example
//! bench -- [options]`. `--help` lists the options; docs/performance.md explains the output
//! and has a recorded run. Without `target/release/kelp` kelp runs inside this process and
//! its CPU and memory columns are left empty.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

mod kelps;

use kelp::embedded::SeaweedFs;
use kelp::seaweed::{Message, Seaweed, SeaweedOptions};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "bench",
    about = "kelp vs direct gRPC vs SeaweedFS's Go Kafka gateway, on one local SeaweedFS"
)]
struct Opts {
    /// Records per case (one case = one record size and one codec).
    #[arg(long, default_value_t = 50_000)]
    records: usize,
    /// Partitions of every topic; records go round-robin over them.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Record value sizes in bytes (keys are empty).
    #[arg(long, value_delimiter = ',', default_value = "1024,100")]
    sizes: Vec<usize>,
    /// Producer compression codecs (none, gzip, snappy, lz4, zstd).
    #[arg(long, value_delimiter = ',', default_value = "none,lz4")]
    codecs: Vec<String>,
    /// What to measure: direct, direct-serial, kelp, gateway, kelps (several kelps on one
    /// SeaweedFS, see `--kelps`).
    #[arg(long, value_delimiter = ',', default_value = "direct,direct-serial,kelp,gateway,kelps")]
    targets: Vec<String>,
    /// Kelp processes of the `kelps` target (at least 2), peer-linked as pods are; as many
    /// producers as kelps.
    #[arg(long, default_value_t = 3)]
    kelps: usize,
    /// Upper bound of each phase (one produce or one consume), in seconds.
    #[arg(long, default_value_t = 30)]
    phase_timeout: u64,
    /// Most produced records not yet acknowledged (the producer's window).
    #[arg(long, default_value_t = 10_000)]
    window: usize,
    /// librdkafka linger.ms of the throughput runs.
    #[arg(long, default_value_t = 5)]
    linger_ms: u32,
    /// Records sent one at a time (next after the previous was acknowledged) for the
    /// low-load latency table; 0 skips it.
    #[arg(long, default_value_t = 300)]
    latency_records: usize,
    /// Direct runs: records per publish call.
    #[arg(long, default_value_t = 1000)]
    direct_batch: usize,
    /// Direct runs: publish calls in flight per partition.
    #[arg(long, default_value_t = 2)]
    direct_in_flight: usize,
    /// Producer clients (each its own connection) sharing a throughput run; partition p is
    /// written by producer p % producers.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Idle Kafka connections opened for the memory check; 0 skips it.
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// The kelp binary; default: `kelp` next to this example's directory
    /// (target/release/kelp). When missing, kelp runs in-process (no CPU/RSS figures).
    #[arg(long)]
    kelp_bin: Option<PathBuf>,
    /// Port of the Go gateway. Its Metadata always advertises 127.0.0.1:9093 (4.48), so
    /// clients only reach it when it listens there.
    #[arg(long, default_value_t = 9093)]
    gateway_port: u16,
    /// Record kelp with `perf record -e cpu-clock` during each timed phase, into
    /// `<PERF>-<size>-<codec>-produce.data` and `...-consume.data`.
    #[arg(long)]
    perf: Option<PathBuf>,
    /// perf's sampling frequency (Hz).
    #[arg(long, default_value_t = 499)]
    perf_freq: u32,
    /// perf's --call-graph mode (release builds have no frame pointers, hence dwarf).
    #[arg(long, default_value = "dwarf,16384")]
    perf_call_graph: String,
    /// Also write the report (markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

// === payloads ===

/// `count` distinct values of `size` bytes, text-like (JSON-ish words drawn at random), so
/// compression has something to do but no two nearby records are identical.
fn payloads(size: usize, count: usize) -> Vec<Bytes> {
    const WORDS: &[&str] = &[
        "user", "order", "click", "view", "cart", "checkout", "session", "device", "mobile",
        "desktop", "berlin", "paris", "tokyo", "lima", "amount", "currency", "EUR", "USD", "true",
        "false", "null", "status", "ok", "pending", "failed", "retry", "region", "eu-west",
        "us-east", "ap-south", "latency", "bytes",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ size as u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|i| {
            let mut s = format!("{{\"id\":{i},\"seq\":{},", next() % 1_000_000);
            while s.len() < size {
                let r = next();
                let _ = write!(
                    s,
                    "\"{}\":\"{}-{}\",",
                    WORDS[(r % 32) as usize],
                    WORDS[((r >> 8) % 32) as usize],
                    (r >> 16) % 10_000
                );
            }
            s.truncate(size);
            Bytes::from(s)
        })
        .collect()
}

// === numbers ===

#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    records: usize,
    bytes: usize,
    secs: f64,
}

impl Rate {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs.max(1e-9)
    }
    fn rec_s(&self) -> f64 {
        self.records as f64 / self.secs.max(1e-9)
    }
}

#[derive(Clone, Copy, Debug)]
struct Lat {
    p50: Duration,
    p99: Duration,
}

fn percentiles(mut v: Vec<Duration>) -> Option<Lat> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Some(Lat { p50: at(0.50), p99: at(0.99) })
}

/// CPU time and memory of one process, from /proc.
#[derive(Clone, Copy, Debug)]
struct Proc {
    pid: u32,
    ticks_per_sec: f64,
}

impl Proc {
    fn new(pid: u32) -> Proc {
        let ticks = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(100.0);
        Proc { pid, ticks_per_sec: ticks }
    }

    /// utime + stime in seconds.
    fn cpu_secs(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after "(comm)": state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        Some((utime + stime) / self.ticks_per_sec)
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS")
    }

    fn hwm_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM")
    }

    /// Reset VmHWM to the current RSS (Linux: write 5 to clear_refs), so the next read is
    /// this phase's peak.
    fn reset_hwm(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5");
    }
}

/// The process whose command line contains every one of `needles`.
fn find_pid(needles: &[&str]) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if needles.iter().all(|n| cmd.contains(n)) {
            return Some(pid);
        }
    }
    None
}

/// CPU seconds one process spent during a phase, per MB moved.
fn cpu_per_mb(p: Option<Proc>, before: Option<f64>, bytes: usize) -> Option<f64> {
    let after = p?.cpu_secs()?;
    Some((after - before?) / (bytes as f64 / 1e6).max(1e-9))
}

/// The other processes whose CPU is worth watching, and this one (the clients).
#[derive(Clone, Copy, Debug)]
struct Others {
    broker: Option<Proc>,
    /// `weed server`: master, volume server and filer.
    server: Option<Proc>,
    client: Proc,
}

/// CPU counters at one moment.
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    at: Instant,
    target: Option<f64>,
    broker: Option<f64>,
    server: Option<f64>,
    client: Option<f64>,
    /// (busy, total) jiffies of the whole host, from /proc/stat.
    host: Option<(f64, f64)>,
}

fn host_jiffies() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<f64> =
        stat.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0.0);
    Some((total - idle, total))
}

fn snapshot(target: Option<Proc>, others: Option<Others>) -> Snapshot {
    Snapshot {
        at: Instant::now(),
        target: target.and_then(|p| p.cpu_secs()),
        broker: others.and_then(|o| o.broker).and_then(|p| p.cpu_secs()),
        server: others.and_then(|o| o.server).and_then(|p| p.cpu_secs()),
        client: others.and_then(|o| o.client.cpu_secs()),
        host: host_jiffies(),
    }
}

/// Cores kept busy between two snapshots, per process and for the whole host.
#[derive(Clone, Copy, Debug, Default)]
struct Cores {
    target: Option<f64>,
    broker: Option<f64>,
    server: Option<f64>,
    client: Option<f64>,
    host: Option<f64>,
}

fn cores(a: &Snapshot, b: &Snapshot) -> Cores {
    let wall = (b.at - a.at).as_secs_f64().max(1e-9);
    let d = |x: Option<f64>, y: Option<f64>| Some((y? - x?) / wall);
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let host = match (a.host, b.host) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some((b1 - b0) / (t1 - t0) * ncpu),
        _ => None,
    };
    Cores {
        target: d(a.target, b.target),
        broker: d(a.broker, b.broker),
        server: d(a.server, b.server),
        client: d(a.client, b.client),
        host,
    }
}

// === result rows ===

#[derive(Debug, Default, Clone)]
struct Row {
    target: String,
    size: usize,
    codec: String,
    produce: Option<Rate>,
    consume: Option<Rate>,
    lat: Option<Lat>,
    cpu_produce: Option<f64>,
    cpu_consume: Option<f64>,
    peak_rss_kib: Option<u64>,
    broker_cpu_produce: Option<f64>,
    cores_produce: Option<Cores>,
    served_produce: Option<Served>,
    served_fetch: Option<Served>,
    notes: Vec<String>,
}

#[derive(Debug, Default, Clone)]
struct LowLoad {
    target: String,
    size: usize,
    lat: Option<Lat>,
    note: String,
}

#[derive(Debug, Default, Clone)]
struct Memory {
    target: String,
    idle_rss_kib: Option<u64>,
    before_kib: Option<u64>,
    after_kib: Option<u64>,
    opened: usize,
    note: String,
}

// === direct gRPC ===

/// Records of `partition` when `records` go round-robin over `partitions`.
fn share(records: usize, partitions: u32, partition: u32) -> usize {
    let p = partitions as usize;
    records / p + usize::from((partition as usize) < records % p)
}

fn messages(
    payloads: &[Bytes],
    partition: u32,
    partitions: u32,
    from: usize,
    to: usize,
) -> Vec<Message> {
    // The n-th record of a partition is record n * partitions + partition overall.
    (from..to)
        .map(|n| Message {
            key: Bytes::new(),
            value: payloads[(n * partitions as usize + partition as usize) % payloads.len()]
                .clone(),
            ts_ns: 0,
        })
        .collect()
}

async fn direct_produce(
    sw: &Seaweed,
    topic: &str,
    o: &Opts,
    payloads: Arc<Vec<Bytes>>,
    serial: bool,
) -> Result<(Rate, Vec<Duration>), String> {
    let batch = o.direct_batch.max(1);
    let parts = o.partitions;
    let records = o.records;
    let lat = Arc::new(Mutex::new(Vec::new()));
    let bytes: usize = (0..records).map(|i| payloads[i % payloads.len()].len()).sum();
    let start = Instant::now();
    let work = async {
        if serial {
            // One publish at a time, partition after partition: how kelp serves one
            // connection whose Produce requests each carry every partition.
            let rounds =
                (0..parts).map(|p| share(records, parts, p).div_ceil(batch)).max().unwrap_or(0);
            for r in 0..rounds {
                for p in 0..parts {
                    let n = share(records, parts, p);
                    let from = r * batch;
                    if from >= n {
                        continue;
                    }
                    let msgs = messages(&payloads, p, parts, from, (from + batch).min(n));
                    let t = Instant::now();
                    sw.publish(topic, p, msgs).await.map_err(|e| format!("publish: {e}"))?;
                    lat.lock().push(t.elapsed());
                }
            }
            return Ok::<(), String>(());
        }
        let mut tasks = tokio::task::JoinSet::new();
        for p in 0..parts {
            let n = share(records, parts, p);
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..o.direct_in_flight.max(1) {
                let (sw, topic, payloads, next, lat) =
                    (sw.clone(), topic.to_string(), payloads.clone(), next.clone(), lat.clone());
                tasks.spawn(async move {
                    loop {
                        let from = next.fetch_add(batch, Ordering::Relaxed);
                        if from >= n {
                            return Ok::<(), String>(());
                        }
                        let msgs = messages(&payloads, p, parts, from, (from + batch).min(n));
                        let t = Instant::now();
                        sw.publish(&topic, p, msgs).await.map_err(|e| format!("publish: {e}"))?;
                        lat.lock().push(t.elapsed());
                    }
                });
            }
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
        Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(o.phase_timeout), work).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(format!("produce timed out after {} s", o.phase_timeout)),
    }
    let secs = start.elapsed().as_secs_f64();
    let lat = std::mem::take(&mut *lat.lock());
    Ok((Rate { records, bytes, secs }, lat))
}

async fn direct_consume(sw: &Seaweed, topic: &str, o: &Opts) -> Result<Rate, String> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..o.partitions {
        // Plus the warm-up record.
        let n = share(o.records, o.partitions, p) + 1;
        let (sw, topic) = (sw.clone(), topic.to_string());
        tasks.spawn(async move {
            let (mut offset, mut got, mut bytes) = (0i64, 0usize, 0usize);
            while got < n {
                let f = sw
                    .fetch(&topic, p, offset, 1 << 20, Duration::from_millis(100), 1)
                    .await
                    .map_err(|e| format!("fetch: {e}"))?;
                for (o, m) in f.messages {
                    bytes += m.value.len();
                    offset = o + 1;
                    got += 1;
                }
            }
            Ok::<(usize, usize), String>((got, bytes))
        });
    }
    let work = async {
        let (mut records, mut bytes) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            let (n, b) = r.map_err(|e| e.to_string())??;
            records += n;
            bytes += b;
        }
        Ok::<_, String>((records, bytes))
    };
    match tokio::time::timeout(Duration::from_secs(o.phase_timeout), work).await {
        Ok(Ok((records, bytes))) => {
            Ok(Rate { records, bytes, secs: start.elapsed().as_secs_f64() })
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("consume timed out after {} s", o.phase_timeout)),
    }
}

async fn direct_low_load(
    sw: &Seaweed,
    topic: &str,
    payloads: &[Bytes],
    n: usize,
) -> Result<Vec<Duration>, String> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let m =
            Message { key: Bytes::new(), value: payloads[i % payloads.len()].clone(), ts_ns: 0 };
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), sw.publish(topic, 0, vec![m]))
            .await
            .map_err(|_| "publish timed out".to_string())?
            .map_err(|e| format!("publish: {e}"))?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

async fn run_direct(
    sw: &Seaweed,
    o: &Opts,
    serial: bool,
    rows: &mut Vec<Row>,
    low: &mut Vec<LowLoad>,
    others: Others,
) {
    let target = if serial { "direct-serial" } else { "direct" };
    for &size in &o.sizes {
        let mut row = Row { target: target.into(), size, codec: "-".into(), ..Row::default() };
        let payloads = Arc::new(payloads(size, 1024));
        let topic = format!("bench-{target}-{size}-{}", std::process::id());
        eprintln!("bench: {target}, {size} B records");
        if let Err(e) = sw.create_topic(&topic, o.partitions).await {
            row.notes.push(format!("create topic: {e}"));
            rows.push(row);
            continue;
        }
        // Warm-up, untimed: one record per partition opens the publish streams.
        for p in 0..o.partitions {
            if let Err(e) = sw.publish(&topic, p, messages(&payloads, p, o.partitions, 0, 1)).await
            {
                row.notes.push(format!("warm-up: {e}"));
            }
        }
        let before = snapshot(None, Some(others));
        match direct_produce(sw, &topic, o, payloads.clone(), serial).await {
            Ok((rate, lat)) => {
                let c = cores(&before, &snapshot(None, Some(others)));
                row.broker_cpu_produce =
                    c.broker.map(|b| b * rate.secs / (rate.bytes as f64 / 1e6));
                row.cores_produce = Some(c);
                row.produce = Some(rate);
                row.lat = percentiles(lat);
            }
            Err(e) => row.notes.push(e),
        }
        if !serial && row.produce.is_some() {
            match direct_consume(sw, &topic, o).await {
                Ok(rate) => row.consume = Some(rate),
                Err(e) => row.notes.push(e),
            }
        }
        rows.push(row);
        if !serial && o.latency_records > 0 {
            let topic = format!("bench-direct-lat-{size}-{}", std::process::id());
            let r = match sw.create_topic(&topic, 1).await {
                Ok(()) => direct_low_load(sw, &topic, &payloads, o.latency_records).await,
                Err(e) => Err(format!("create topic: {e}")),
            };
            low.push(match r {
                Ok(v) => LowLoad {
                    target: target.into(),
                    size,
                    lat: percentiles(v),
                    note: String::new(),
                },
                Err(e) => LowLoad { target: target.into(), size, lat: None, note: e },
            });
        }
    }
}

// === Kafka clients ===

#[derive(Default)]
struct Deliveries {
    ok: AtomicUsize,
    failed: AtomicUsize,
    lat: Mutex<Vec<Duration>>,
    first_error: Mutex<Option<String>>,
}

/// Producer context that times every record from enqueue to its delivery report.
#[derive(Clone, Default)]
struct Timed(Arc<Deliveries>);

impl ClientContext for Timed {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.first_error.lock().get_or_insert_with(|| format!("client error: {error}: {reason}"));
    }
}

impl ProducerContext for Timed {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, r: &DeliveryResult<'_>, sent: Box<Instant>) {
        match r {
            Ok(_) => {
                self.0.lat.lock().push(sent.elapsed());
                self.0.ok.fetch_add(1, Ordering::Release);
            }
            Err((e, _)) => {
                self.0.first_error.lock().get_or_insert_with(|| format!("delivery failed: {e}"));
                self.0.failed.fetch_add(1, Ordering::Release);
            }
        }
    }
}

/// Quiet client context for consumers and admin clients that remembers the first error.
#[derive(Clone, Default)]
struct Quiet(Arc<Mutex<Option<String>>>);

impl ClientContext for Quiet {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().get_or_insert_with(|| format!("client error: {error}: {reason}"));
    }
}
impl rdkafka::consumer::ConsumerContext for Quiet {}

struct Produced {
    rate: Rate,
    lat: Vec<Duration>,
    /// Cores busy during the timed part.
    cores: Cores,
    served: Option<Served>,
}

struct ProduceJob {
    /// One address for every producer, or one per producer (producer i uses entry i).
    bootstraps: Vec<String>,
    topic: String,
    partitions: u32,
    records: usize,
    codec: String,
    window: usize,
    linger_ms: u32,
    timeout: Duration,
    /// First send one record to every partition and wait for it (connections, metadata and
    /// kelp's publish streams get set up), untimed. The consumer then finds `partitions`
    /// more records.
    warmup: bool,
    proc: Option<Proc>,
    others: Option<Others>,
    producers: usize,
    /// Every producer writes every partition (record i goes to partition i % partitions,
    /// through producer (i / partitions) % producers) instead of partition p only through
    /// producer p % producers.
    every_partition: bool,
    /// kelp's admin address, to read its Produce request metrics.
    admin: Option<SocketAddr>,
}

/// Produce `records` round-robin over the partitions with acks=all, keeping at most
/// `window` unacknowledged; latency is enqueue to delivery report, per record. Blocking.
fn kafka_produce(job: &ProduceJob, payloads: &[Bytes]) -> Result<Produced, String> {
    let ctx = Timed::default();
    let d = ctx.0.clone();
    let producers = (0..job.producers.max(1))
        .map(|i| {
            ClientConfig::new()
                .set("bootstrap.servers", &job.bootstraps[i % job.bootstraps.len()])
                .set("acks", "all")
                .set("compression.codec", &job.codec)
                .set("linger.ms", job.linger_ms.to_string())
                .set("message.timeout.ms", job.timeout.as_millis().to_string())
                .set("queue.buffering.max.messages", (job.window.max(1) + 1000).to_string())
                .create_with_context::<_, ThreadedProducer<Timed>>(ctx.clone())
                .map_err(|e| format!("producer: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let deadline = Instant::now() + job.timeout;
    let done = || d.ok.load(Ordering::Acquire) + d.failed.load(Ordering::Acquire);
    let warm = if job.warmup { job.partitions as usize } else { 0 };
    let timed_out = |what: &str| {
        let err = d.first_error.lock().clone().map(|e| format!("; {e}")).unwrap_or_default();
        let ok = d.ok.load(Ordering::Acquire);
        format!(
            "{what} timed out after {} s: {} of {} records acknowledged{err}",
            job.timeout.as_secs(),
            ok.saturating_sub(warm),
            job.records
        )
    };
    // Warm-up records (`warming`) go to partition p through producer p % producers in every
    // mode, so with one kelp per producer each kelp is first to write a share of the
    // partitions (and takes their leases).
    let send = |i: usize, payload: &[u8], warming: bool| -> Result<(), String> {
        let partition = i % job.partitions as usize;
        let producer = if job.every_partition && !warming {
            &producers[(i / job.partitions as usize) % producers.len()]
        } else {
            &producers[partition % producers.len()]
        };
        let mut rec = BaseRecord::<(), [u8], Box<Instant>>::with_opaque_to(
            &job.topic,
            Box::new(Instant::now()),
        )
        .partition(partition as i32)
        .payload(payload);
        loop {
            match producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    if Instant::now() > deadline {
                        return Err(timed_out("produce"));
                    }
                    rec = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => return Err(format!("send: {e}")),
            }
        }
    };
    let wait_all = |n: usize, what: &str| -> Result<(), String> {
        while done() < n {
            if Instant::now() > deadline {
                return Err(timed_out(what));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    };
    let result = (|| {
        for i in 0..warm {
            send(i, &payloads[0], true)?;
        }
        wait_all(warm, "warm-up")?;
        if d.failed.load(Ordering::Acquire) > 0 {
            return Err(format!(
                "warm-up failed: {}",
                d.first_error.lock().clone().unwrap_or_default()
            ));
        }
        d.lat.lock().clear();
        let before = snapshot(job.proc, job.others);
        let metrics_before = job.admin.and_then(|a| scrape_requests(a, "Produce"));
        let start = Instant::now();
        let mut bytes = 0;
        for i in 0..job.records {
            while warm + i - done() >= job.window.max(1) {
                if Instant::now() > deadline {
                    return Err(timed_out("produce"));
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            let payload = &payloads[i % payloads.len()];
            bytes += payload.len();
            send(i, payload, false)?;
        }
        wait_all(warm + job.records, "produce")?;
        let secs = start.elapsed().as_secs_f64();
        let after = snapshot(job.proc, job.others);
        let metrics_after = job.admin.and_then(|a| scrape_requests(a, "Produce"));
        let failed = d.failed.load(Ordering::Acquire);
        if failed > 0 {
            let err = d.first_error.lock().clone().unwrap_or_default();
            return Err(format!("{failed} of {} records failed: {err}", job.records));
        }
        Ok(Produced {
            rate: Rate { records: job.records, bytes, secs },
            lat: std::mem::take(&mut *d.lat.lock()),
            cores: cores(&before, &after),
            served: served(metrics_before, metrics_after, secs),
        })
    })();
    drop_in_background(producers);
    result
}

/// Drop a client without waiting more than a few seconds for it (librdkafka's destroy can
/// block on an unresponsive broker).
fn drop_in_background<T: Send + 'static>(client: T) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(client);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(5));
}

/// Read every partition from the beginning until `expected` records arrived. Blocking.
fn kafka_consume(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    expected: usize,
    timeout: Duration,
    admin: Option<SocketAddr>,
) -> Result<(Rate, Option<Served>), String> {
    let ctx = Quiet::default();
    let errors = ctx.0.clone();
    let consumer: BaseConsumer<Quiet> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kelp-bench")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100")
        .create_with_context(ctx)
        .map_err(|e| format!("consumer: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning).map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
    // Timed from the first record on, so client start-up (connections, metadata, offsets)
    // is left out, as the producer's warm-up is.
    let start = Instant::now();
    let mut first: Option<Instant> = None;
    let mut metrics_before = None;
    let (mut records, mut bytes, mut poll_errors) = (0usize, 0usize, 0usize);
    let mut first_poll_error = None;
    let result = loop {
        if records >= expected {
            let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
            let after = admin.and_then(|a| scrape_requests(a, "Fetch"));
            break Ok((Rate { records, bytes, secs }, served(metrics_before, after, secs)));
        }
        if start.elapsed() > timeout {
            let why = first_poll_error
                .clone()
                .or_else(|| errors.lock().clone())
                .map(|e| format!("; {e}"))
                .unwrap_or_default();
            break Err(format!(
                "consume timed out after {} s: {records} of {expected} records{why}",
                timeout.as_secs()
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                if first.is_none() {
                    metrics_before = admin.and_then(|a| scrape_requests(a, "Fetch"));
                    first = Some(Instant::now());
                }
                records += 1;
                bytes += m.payload().map_or(0, <[u8]>::len);
            }
            Some(Err(e)) => {
                poll_errors += 1;
                first_poll_error.get_or_insert_with(|| format!("{e} ({poll_errors} poll errors)"));
            }
        }
    };
    drop_in_background(consumer);
    result
}

async fn kafka_create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    timeout: Duration,
) -> Result<(), String> {
    let admin: AdminClient<Quiet> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create_with_context(Quiet::default())
        .map_err(|e| format!("admin client: {e}"))?;
    let new = [NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(1))];
    let opts = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
    let call = admin.create_topics(&new, &opts);
    let r = match tokio::time::timeout(timeout + Duration::from_secs(5), call).await {
        Err(_) => Err(format!("CreateTopics timed out after {} s", timeout.as_secs())),
        Ok(Err(e)) => Err(format!("CreateTopics: {e}")),
        Ok(Ok(results)) => results.into_iter().try_for_each(|r| {
            r.map(|_| ()).map_err(|(t, code)| format!("CreateTopics {t}: {code}"))
        }),
    };
    drop_in_background(admin);
    r
}

/// Wait until `topic` is visible in Metadata with all its partitions (led by someone).
fn wait_metadata(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    timeout: Duration,
) -> Result<(), String> {
    let consumer: BaseConsumer<Quiet> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("allow.auto.create.topics", "false")
        .create_with_context(Quiet::default())
        .map_err(|e| format!("metadata client: {e}"))?;
    let start = Instant::now();
    let mut last;
    let r = loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => {
                let t = md.topics().iter().find(|t| t.name() == topic);
                match t {
                    Some(t) if t.error().is_none() && t.partitions().len() as u32 >= partitions => {
                        break Ok(());
                    }
                    Some(t) => {
                        last = format!(
                            "metadata: {} partitions, error {:?}",
                            t.partitions().len(),
                            t.error()
                        )
                    }
                    None => last = "metadata: topic missing".into(),
                }
            }
            Err(e) => last = format!("metadata: {e}"),
        }
        if start.elapsed() > timeout {
            break Err(last);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    drop_in_background(consumer);
    r
}

/// Everything about one Kafka endpoint (kelp or the gateway) under test.
struct Endpoint {
    name: &'static str,
    bootstrap: String,
    proc: Option<Proc>,
    /// Prefix of topic names (the Go gateway only creates names starting with '_').
    topic_prefix: &'static str,
    /// kelp's admin HTTP address (request metrics).
    admin: Option<SocketAddr>,
    /// Profile it with `--perf`.
    perf: bool,
}

async fn blocking<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    match tokio::time::timeout(limit + Duration::from_secs(15), tokio::task::spawn_blocking(f))
        .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("panicked: {e}")),
        Err(_) => Err("did not return in time".into()),
    }
}

async fn run_kafka(
    ep: &Endpoint,
    o: &Opts,
    rows: &mut Vec<Row>,
    low: &mut Vec<LowLoad>,
    others: Others,
) {
    let timeout = Duration::from_secs(o.phase_timeout);
    // After a case in which nothing could be produced, the rest are skipped: each would
    // only wait out its timeouts again.
    let mut broken = false;
    for &size in &o.sizes {
        let payloads = Arc::new(payloads(size, 1024));
        for codec in &o.codecs {
            let mut row =
                Row { target: ep.name.into(), size, codec: codec.clone(), ..Row::default() };
            if broken {
                row.notes.push("skipped after the failure above".into());
                rows.push(row);
                continue;
            }
            eprintln!("bench: {}, {size} B records, {codec}", ep.name);
            let topic = format!(
                "{}bench-{}-{size}-{codec}-{}",
                ep.topic_prefix,
                ep.name,
                std::process::id()
            );
            if let Err(e) = kafka_create_topic(&ep.bootstrap, &topic, o.partitions, timeout).await {
                row.notes.push(e);
            }
            let (bs, t, parts) = (ep.bootstrap.clone(), topic.clone(), o.partitions);
            if let Err(e) = blocking(timeout, move || wait_metadata(&bs, &t, parts, timeout)).await
            {
                row.notes.push(format!("topic not usable: {e}"));
                rows.push(row);
                broken = true;
                continue;
            }
            if let Some(p) = ep.proc {
                p.reset_hwm();
            }
            let job = ProduceJob {
                bootstraps: vec![ep.bootstrap.clone()],
                topic: topic.clone(),
                partitions: o.partitions,
                records: o.records,
                codec: codec.clone(),
                window: o.window,
                linger_ms: o.linger_ms,
                timeout,
                warmup: true,
                proc: ep.proc,
                others: Some(others),
                producers: o.producers,
                every_partition: false,
                admin: ep.admin,
            };
            let pl = payloads.clone();
            let perf = match (ep.perf, ep.proc) {
                (true, Some(p)) => start_perf(o, p.pid, &format!("{size}-{codec}-produce")).await,
                _ => Guard(None),
            };
            let produced = blocking(timeout, move || kafka_produce(&job, &pl)).await;
            drop(perf);
            match produced {
                Ok(p) => {
                    let per_mb = p.rate.secs / (p.rate.bytes as f64 / 1e6);
                    row.cpu_produce = p.cores.target.map(|c| c * per_mb);
                    row.broker_cpu_produce = p.cores.broker.map(|c| c * per_mb);
                    row.cores_produce = Some(p.cores);
                    row.produce = Some(p.rate);
                    row.lat = percentiles(p.lat);
                    row.served_produce = p.served;
                }
                Err(e) => row.notes.push(e),
            }
            if row.produce.is_some() {
                let cpu_before = ep.proc.and_then(|p| p.cpu_secs());
                // The warm-up put one more record in every partition.
                let (bs, t, parts, n) = (
                    ep.bootstrap.clone(),
                    topic.clone(),
                    o.partitions,
                    o.records + o.partitions as usize,
                );
                let admin = ep.admin;
                let perf = match (ep.perf, ep.proc) {
                    (true, Some(p)) => {
                        start_perf(o, p.pid, &format!("{size}-{codec}-consume")).await
                    }
                    _ => Guard(None),
                };
                let consumed =
                    blocking(timeout, move || kafka_consume(&bs, &t, parts, n, timeout, admin))
                        .await;
                drop(perf);
                match consumed {
                    Ok((rate, served)) => {
                        row.served_fetch = served;
                        row.cpu_consume = cpu_per_mb(ep.proc, cpu_before, rate.bytes);
                        row.consume = Some(rate);
                    }
                    Err(e) => row.notes.push(e),
                }
            } else {
                row.notes.push("consume skipped".into());
            }
            row.peak_rss_kib = ep.proc.and_then(|p| p.hwm_kib());
            broken |= row.produce.is_none() && row.lat.is_none();
            rows.push(row);
        }
        if o.latency_records > 0 && !broken {
            let topic =
                format!("{}bench-{}-lat-{size}-{}", ep.topic_prefix, ep.name, std::process::id());
            let r = async {
                kafka_create_topic(&ep.bootstrap, &topic, 1, timeout).await.ok();
                let (bs, t) = (ep.bootstrap.clone(), topic.clone());
                blocking(timeout, move || wait_metadata(&bs, &t, 1, timeout)).await?;
                let job = ProduceJob {
                    bootstraps: vec![ep.bootstrap.clone()],
                    topic: topic.clone(),
                    partitions: 1,
                    records: o.latency_records,
                    codec: "none".into(),
                    window: 1,
                    linger_ms: 0,
                    timeout,
                    warmup: true,
                    proc: None,
                    others: None,
                    producers: 1,
                    every_partition: false,
                    admin: None,
                };
                let pl = payloads.clone();
                blocking(timeout, move || kafka_produce(&job, &pl)).await
            }
            .await;
            low.push(match r {
                Ok(p) => LowLoad {
                    target: ep.name.into(),
                    size,
                    lat: percentiles(p.lat),
                    note: String::new(),
                },
                Err(e) => LowLoad { target: ep.name.into(), size, lat: None, note: e },
            });
        }
    }
}

/// Which topic names the Go gateway accepts: an ordinary name and one starting with '_',
/// each created with CreateTopics and then produced to (one record, acks=all).
async fn gateway_topic_checks(bootstrap: &str, partitions: u32) -> Vec<(String, String)> {
    let limit = Duration::from_secs(10);
    let mut out = Vec::new();
    for name in [
        format!("bench-plain-{}", std::process::id()),
        format!("_bench-underscore-{}", std::process::id()),
    ] {
        let created = kafka_create_topic(bootstrap, &name, partitions, limit).await;
        out.push((
            format!("CreateTopics `{name}`"),
            created.map_or_else(|e| format!("fails: {e}"), |()| "ok".into()),
        ));
        let job = ProduceJob {
            bootstraps: vec![bootstrap.to_string()],
            topic: name.clone(),
            partitions: 1,
            records: 1,
            codec: "none".into(),
            window: 1,
            linger_ms: 0,
            timeout: limit,
            warmup: false,
            proc: None,
            others: None,
            producers: 1,
            every_partition: false,
            admin: None,
        };
        let produced =
            blocking(limit, move || kafka_produce(&job, &[Bytes::from_static(b"probe")])).await;
        out.push((
            format!("produce 1 record to `{name}`"),
            produced.map_or_else(|e| format!("fails: {e}"), |_| "ok".into()),
        ));
    }
    out
}

/// `perf record` attached to `pid` until the returned guard is dropped (SIGTERM makes perf
/// write its file).
async fn start_perf(o: &Opts, pid: u32, phase: &str) -> Guard {
    let Some(prefix) = &o.perf else { return Guard(None) };
    let out = format!("{}-{phase}.data", prefix.display());
    let child = Command::new("perf")
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            &o.perf_freq.to_string(),
            "--call-graph",
            &o.perf_call_graph,
            "-p",
            &pid.to_string(),
            "-o",
            &out,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(c) => {
            // Let it attach before the load starts.
            tokio::time::sleep(Duration::from_millis(300)).await;
            Guard(Some(c))
        }
        Err(e) => {
            eprintln!("bench: perf not started: {e}");
            Guard(None)
        }
    }
}

// === kelp's own metrics ===

/// `(count, sum of seconds)` of `kelp_request_duration_seconds` for `api`, read from
/// kelp's admin endpoint.
fn scrape_requests(admin: SocketAddr, api: &str) -> Option<(f64, f64)> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: kelp\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let value = |name: &str| {
        let key = format!("kelp_request_duration_seconds_{name}{{api=\"{api}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some((value("count"), value("sum")))
}

/// What kelp's request metrics say about one timed phase.
#[derive(Clone, Copy, Debug)]
struct Served {
    requests: f64,
    /// Seconds spent answering those requests, summed.
    busy: f64,
    /// Wall-clock seconds of the phase.
    wall: f64,
}

fn served(before: Option<(f64, f64)>, after: Option<(f64, f64)>, wall: f64) -> Option<Served> {
    let (b, a) = (before?, after?);
    Some(Served { requests: a.0 - b.0, busy: a.1 - b.1, wall })
}

// === idle connections ===

/// An ApiVersions v0 request frame.
fn api_versions_v0(correlation_id: i32) -> Vec<u8> {
    let client = b"kelp-bench";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// Open `n` connections, one ApiVersions round trip each, and keep them open. Blocking.
fn open_idle(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, Option<String>) {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let r = (|| -> std::io::Result<TcpStream> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(&api_versions_v0(i as i32))?;
            let mut len = [0u8; 4];
            s.read_exact(&mut len)?;
            let mut body = vec![0u8; i32::from_be_bytes(len).clamp(0, 1 << 20) as usize];
            s.read_exact(&mut body)?;
            Ok(s)
        })();
        match r {
            Ok(s) => conns.push(s),
            Err(e) => return (conns, Some(format!("connection {i}: {e}"))),
        }
    }
    (conns, None)
}

async fn memory_check(
    name: &str,
    addr: SocketAddr,
    proc: Option<Proc>,
    idle_rss_kib: Option<u64>,
    n: usize,
) -> Memory {
    let mut m = Memory { target: name.into(), idle_rss_kib, ..Memory::default() };
    if n == 0 {
        return m;
    }
    eprintln!("bench: {name}, {n} idle connections");
    m.before_kib = proc.and_then(|p| p.rss_kib());
    let (conns, err) = match tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || open_idle(addr, n)),
    )
    .await
    {
        Ok(Ok(r)) => r,
        _ => (Vec::new(), Some("did not finish in 120 s".into())),
    };
    m.opened = conns.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    m.after_kib = proc.and_then(|p| p.rss_kib());
    m.note = err.unwrap_or_default();
    drop(conns);
    m
}

// === processes ===

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

async fn wait_accepting(
    addr: SocketAddr,
    child: &mut Child,
    deadline: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited during startup ({status})"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(format!("not accepting on {addr} after {} s", deadline.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kelp serve` with `args` as a child process logging to `log`, once it accepts Kafka
/// connections on `addr`.
async fn spawn_kelp(
    bin: &Path,
    args: &[String],
    log: &Path,
    addr: SocketAddr,
) -> Result<Guard, String> {
    let file = || std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()));
    let child = Command::new(bin)
        .arg("serve")
        .args(args)
        .env("KELP_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(file()?)
        .stderr(file()?)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let mut guard = Guard(Some(child));
    let child = guard.0.as_mut().expect("kelp child");
    match wait_accepting(addr, child, Duration::from_secs(30)).await {
        Ok(()) => Ok(guard),
        Err(e) => Err(format!("kelp {e}\n{}", log_tail(log, 20))),
    }
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn default_kelp_bin() -> Option<PathBuf> {
    // target/release/examples/bench → target/release/kelp
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("kelp"))
}

// === report ===

fn f1(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.1}"))
}

fn f0(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.0}"))
}

fn f3(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.3}"))
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("—".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
}

fn mib(k: Option<u64>) -> String {
    k.map_or("—".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "—".into(),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            })
        })
        .map_or("unknown".into(), |k| format!("{:.1} GiB", k / 1024.0 / 1024.0));
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{nproc} CPUs ({cpu}), {mem} RAM")
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn report(
    o: &Opts,
    rows: &[Row],
    low: &[LowLoad],
    mem: &[Memory],
    checks: &[(String, String)],
    started: &str,
    weed: &str,
    kelp_mode: &str,
) -> String {
    let mut s = String::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _ = writeln!(s, "## kelp benchmark\n");
    let _ = writeln!(s, "- date: {started}");
    let _ = writeln!(s, "- machine: {}", machine());
    let _ = writeln!(s, "- SeaweedFS: {weed}; kelp: {kelp_mode}");
    let _ = writeln!(s, "- command: `cargo run --release --example bench -- {}`", args.join(" "));
    let _ = writeln!(
        s,
        "- load: {} records per case, {} partitions, {} producer connection(s), acks=all, linger.ms={}, at most {} records unacknowledged; \
         direct: {} records per publish, {} publishes in flight per partition\n",
        o.records,
        o.partitions,
        o.producers,
        o.linger_ms,
        o.window,
        o.direct_batch,
        o.direct_in_flight
    );
    let _ = writeln!(s, "### Throughput (MB = 10^6 bytes of record values)\n");
    let _ = writeln!(
        s,
        "| target | record | codec | produce MB/s | produce rec/s | p50 ms | p99 ms | consume MB/s | consume rec/s | CPU s/MB produce | CPU s/MB consume | peak RSS MiB | broker CPU s/MB produce | notes |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} B | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.target,
            r.size,
            r.codec,
            f1(r.produce.map(|x| x.mb_s())),
            f0(r.produce.map(|x| x.rec_s())),
            ms(r.lat.map(|l| l.p50)),
            ms(r.lat.map(|l| l.p99)),
            f1(r.consume.map(|x| x.mb_s())),
            f0(r.consume.map(|x| x.rec_s())),
            f3(r.cpu_produce),
            f3(r.cpu_consume),
            mib(r.peak_rss_kib),
            f3(r.broker_cpu_produce),
            r.notes.join("; ").replace('|', "/"),
        );
    }
    let find = |t: &str, size: usize, codec: Option<&str>| {
        rows.iter().find(|r| r.target == t && r.size == size && codec.is_none_or(|c| r.codec == c))
    };
    let _ = writeln!(
        s,
        "\n### Ratios (kelp ÷ other; throughput: higher is better, latency and CPU: lower is better)\n"
    );
    let _ = writeln!(
        s,
        "| record | codec | produce kelp/direct | consume kelp/direct | produce kelp/gateway | consume kelp/gateway | p50 kelp/gateway | CPU/MB produce kelp/gateway | CPU/MB consume kelp/gateway |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for &size in &o.sizes {
        for codec in &o.codecs {
            let Some(k) = find("kelp", size, Some(codec)) else { continue };
            let d = find("direct", size, None);
            let g = find("gateway", size, Some(codec));
            let pm = |r: Option<&Row>| r.and_then(|r| r.produce).map(|x| x.mb_s());
            let cm = |r: Option<&Row>| r.and_then(|r| r.consume).map(|x| x.mb_s());
            let p50 = |r: Option<&Row>| r.and_then(|r| r.lat).map(|l| l.p50.as_secs_f64());
            let _ = writeln!(
                s,
                "| {size} B | {codec} | {} | {} | {} | {} | {} | {} | {} |",
                ratio(pm(Some(k)), pm(d)),
                ratio(cm(Some(k)), cm(d)),
                ratio(pm(Some(k)), pm(g)),
                ratio(cm(Some(k)), cm(g)),
                ratio(p50(Some(k)), p50(g)),
                ratio(k.cpu_produce, g.and_then(|g| g.cpu_produce)),
                ratio(k.cpu_consume, g.and_then(|g| g.cpu_consume)),
            );
        }
    }
    let serial: Vec<String> = o
        .sizes
        .iter()
        .filter_map(|&size| {
            let p = find("direct", size, None)?.produce?.mb_s();
            let sp = find("direct-serial", size, None)?.produce?.mb_s();
            Some(format!("{size} B: {:.2}", sp / p))
        })
        .collect();
    if !serial.is_empty() {
        let _ = writeln!(
            s,
            "\nOne publish at a time, partition after partition (direct-serial ÷ direct produce MB/s): {}",
            serial.join(", ")
        );
    }
    let with_cores: Vec<&Row> = rows.iter().filter(|r| r.cores_produce.is_some()).collect();
    if !with_cores.is_empty() {
        let ncpu = std::thread::available_parallelism().map_or(0, |n| n.get());
        let _ = writeln!(s, "\n### Where the CPU went while producing (cores busy, of {ncpu})\n");
        let _ = writeln!(
            s,
            "| target | record | codec | kelp or gateway | mq.broker | weed server (master, volume, filer) | clients (this process) | whole host |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for r in with_cores {
            let c = r.cores_produce.unwrap_or_default();
            let f2 = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.2}"));
            let _ = writeln!(
                s,
                "| {} | {} B | {} | {} | {} | {} | {} | {} |",
                r.target,
                r.size,
                r.codec,
                f2(c.target),
                f2(c.broker),
                f2(c.server),
                f2(c.client),
                f2(c.host)
            );
        }
        let _ = writeln!(
            s,
            "\nThe clients column is this benchmark process: librdkafka for the Kafka targets, kelp's own \
             SeaweedFS client for the direct ones."
        );
    }
    let internals: Vec<&Row> =
        rows.iter().filter(|r| r.served_produce.is_some() || r.served_fetch.is_some()).collect();
    if !internals.is_empty() {
        let _ = writeln!(s, "\n### Inside kelp (its request metrics over each timed phase)\n");
        let _ = writeln!(
            s,
            "| record | codec | Produce requests | records per Produce | mean Produce ms | Produce busy % | Fetch requests | mean Fetch ms | Fetch busy % |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for r in internals {
            let mean = |v: Option<Served>| {
                v.filter(|v| v.requests > 0.0).map(|v| v.busy / v.requests * 1e3)
            };
            let busy = |v: Option<Served>| v.map(|v| v.busy / v.wall.max(1e-9) * 100.0);
            let per = r
                .served_produce
                .filter(|v| v.requests > 0.0)
                .and_then(|v| Some(r.produce?.records as f64 / v.requests));
            let _ = writeln!(
                s,
                "| {} B | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.size,
                r.codec,
                f0(r.served_produce.map(|v| v.requests)),
                f0(per),
                f1(mean(r.served_produce)),
                f0(busy(r.served_produce)),
                f0(r.served_fetch.map(|v| v.requests)),
                f1(mean(r.served_fetch)),
                f0(busy(r.served_fetch)),
            );
        }
        let _ = writeln!(
            s,
            "\nbusy % = time spent answering requests of that API, summed, ÷ the phase's wall time, with {} producer connection(s). \
             A connection handles up to KELP_MAX_IN_FLIGHT_REQUESTS requests at once, so above 100 % per \
             connection means pipelined requests were in flight together.",
            o.producers
        );
    }
    if !low.is_empty() {
        let _ = writeln!(
            s,
            "\n### Produce latency at low load (one record at a time, linger.ms=0, 1 partition)\n"
        );
        let _ = writeln!(s, "| target | record | p50 ms | p99 ms | notes |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for l in low {
            let _ = writeln!(
                s,
                "| {} | {} B | {} | {} | {} |",
                l.target,
                l.size,
                ms(l.lat.map(|l| l.p50)),
                ms(l.lat.map(|l| l.p99)),
                l.note.replace('|', "/")
            );
        }
    }
    if !mem.is_empty() {
        let _ = writeln!(s, "\n### Memory (RSS)\n");
        let _ = writeln!(
            s,
            "| target | idle RSS MiB | before idle connections MiB | connections open | after MiB | KiB per connection | notes |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for m in mem {
            let per = match (m.before_kib, m.after_kib) {
                (Some(b), Some(a)) if m.opened > 0 => {
                    format!("{:.1}", (a as f64 - b as f64) / m.opened as f64)
                }
                _ => "—".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                m.target,
                mib(m.idle_rss_kib),
                mib(m.before_kib),
                m.opened,
                mib(m.after_kib),
                per,
                m.note.replace('|', "/")
            );
        }
    }
    if !checks.is_empty() {
        let _ = writeln!(s, "\n### Go gateway: topic names\n");
        let _ = writeln!(s, "| what | outcome |");
        let _ = writeln!(s, "|---|---|");
        for (what, outcome) in checks {
            let _ = writeln!(s, "| {what} | {} |", outcome.replace('|', "/"));
        }
    }
    s
}

// === main ===

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let o = Opts::parse();
    anyhow::ensure!(
        o.partitions >= 1 && o.records >= o.partitions as usize,
        "need at least one record per partition"
    );
    let started = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let t0 = Instant::now();
    let wants = |t: &str| o.targets.iter().any(|x| x == t);

    eprintln!("bench: starting SeaweedFS");
    let seaweedfs = SeaweedFs::start(Duration::from_secs(90)).await?;
    let addrs = seaweedfs.addrs().clone();
    let weed = SeaweedFs::find_weed()?;
    let weed_version = command_output(&weed.to_string_lossy(), &["version"])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let broker_port = addrs.broker.rsplit(':').next().unwrap_or_default().to_string();
    let master_port = addrs
        .master
        .rsplit(':')
        .next()
        .and_then(|p| p.split('.').next())
        .unwrap_or_default()
        .to_string();
    let others = Others {
        broker: find_pid(&["mq.broker", &format!("-port={broker_port}")]).map(Proc::new),
        server: find_pid(&["server", &format!("-master.port={master_port}")]).map(Proc::new),
        client: Proc::new(std::process::id()),
    };

    let sw = Seaweed::connect(SeaweedOptions {
        master: addrs.master.clone(),
        filer: Some(addrs.filer.clone()),
        namespace: "kelpbench".into(),
        call_timeout: Duration::from_secs(30),
    })
    .await?;
    let ready = Instant::now();
    while let Err(e) = sw.ping().await {
        anyhow::ensure!(ready.elapsed() < Duration::from_secs(60), "SeaweedFS did not answer: {e}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let (mut rows, mut low, mut mem, mut checks) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if wants("direct") {
        run_direct(&sw, &o, false, &mut rows, &mut low, others).await;
    }
    if wants("direct-serial") {
        run_direct(&sw, &o, true, &mut rows, &mut low, others).await;
    }

    let mut kelp_mode = "not run".to_string();
    if wants("kelp") {
        let dir = tempfile::Builder::new().prefix("kelp-bench-").tempdir()?;
        let bin = o.kelp_bin.clone().or_else(default_kelp_bin).filter(|b| b.is_file());
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let admin_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let args = [
            "--listen".to_string(),
            addr.to_string(),
            "--admin-listen".into(),
            admin_addr.to_string(),
            "--master".into(),
            addrs.master.clone(),
            "--filer".into(),
            addrs.filer.clone(),
            // Same acknowledgement as the gateway's and the direct client's: once the broker
            // holds the records. Waiting for the broker's flush (kelp's default for acks=all)
            // adds up to a flush interval per request, measured in docs/writers.md.
            "--acks-all-flushed".into(),
            "false".into(),
        ];
        let mut guard = Guard(None);
        let mut in_process = None;
        // Both ways of running kelp serve the admin endpoint (request metrics).
        let admin = Some(admin_addr);
        let proc = match &bin {
            Some(bin) => {
                let child = spawn_kelp(bin, &args, &dir.path().join("kelp.log"), addr)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                let pid = child.0.as_ref().map_or(0, Child::id);
                guard = child;
                kelp_mode =
                    format!("release binary {} (pid {pid}, measured from /proc)", bin.display());
                Some(Proc::new(pid))
            }
            None => {
                let config = kelp::config::Config::from_args(&args)?;
                kelp::wait_for_seaweedfs(&config, Duration::from_secs(60)).await?;
                in_process = Some(kelp::start(config).await?);
                kelp_mode = "in-process (target/release/kelp not found: no CPU/RSS figures)".into();
                None
            }
        };
        let ep = Endpoint {
            name: "kelp",
            bootstrap: addr.to_string(),
            proc,
            topic_prefix: "",
            admin,
            perf: o.perf.is_some(),
        };
        // Idle RSS: after one client looked at the cluster.
        let bs = ep.bootstrap.clone();
        let _ = blocking(Duration::from_secs(10), move || {
            wait_metadata(&bs, "none-such", 0, Duration::from_secs(5)).or(Ok(()))
        })
        .await;
        let idle = proc.and_then(|p| p.rss_kib());
        // Memory first, on a fresh process: after the load, freed heap would hide it.
        mem.push(memory_check("kelp", addr, proc, idle, o.idle_connections).await);
        run_kafka(&ep, &o, &mut rows, &mut low, others).await;
        if let Some(r) = in_process {
            r.shutdown().await;
        }
        drop(guard);
    }

    if wants("gateway") {
        let dir = tempfile::Builder::new().prefix("kelp-bench-gw-").tempdir()?;
        let port = o.gateway_port;
        if !port_free(port) {
            rows.push(Row {
                target: "gateway".into(),
                notes: vec![format!("not run: port {port} is taken (the gateway advertises 127.0.0.1:9093 whatever it listens on)")],
                ..Row::default()
            });
        } else {
            if port != 9093 {
                eprintln!(
                    "bench: the gateway advertises 127.0.0.1:9093 whatever it listens on; expect failures on port {port}"
                );
            }
            let log = dir.path().join("gateway.log");
            let child = Command::new(&weed)
                .args([
                    "mq.kafka.gateway",
                    "-ip=127.0.0.1",
                    &format!("-master={}", addrs.master),
                    &format!("-port={port}"),
                    "-schema-registry-url=http://127.0.0.1:1",
                ])
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log)?)
                .stderr(std::fs::File::create(&log)?)
                .spawn()?;
            let pid = child.id();
            let mut guard = Guard(Some(child));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            match wait_accepting(
                addr,
                guard.0.as_mut().expect("gateway child"),
                Duration::from_secs(30),
            )
            .await
            {
                Err(e) => rows.push(Row {
                    target: "gateway".into(),
                    notes: vec![format!(
                        "did not start: {e}: {}",
                        log_tail(&log, 5).replace('\n', " / ")
                    )],
                    ..Row::default()
                }),
                Ok(()) => {
                    let proc = Some(Proc::new(pid));
                    let bs = addr.to_string();
                    let _ = blocking(Duration::from_secs(10), move || {
                        wait_metadata(&bs, "none-such", 0, Duration::from_secs(5)).or(Ok(()))
                    })
                    .await;
                    let idle = proc.and_then(|p| p.rss_kib());
                    checks.extend(gateway_topic_checks(&addr.to_string(), o.partitions).await);
                    let ep = Endpoint {
                        name: "gateway",
                        bootstrap: addr.to_string(),
                        proc,
                        topic_prefix: "_",
                        admin: None,
                        perf: false,
                    };
                    mem.push(memory_check("gateway", addr, proc, idle, o.idle_connections).await);
                    run_kafka(&ep, &o, &mut rows, &mut low, others).await;
                }
            }
            drop(guard);
        }
    }

    let many = if wants("kelps") {
        let bin = o.kelp_bin.clone().or_else(default_kelp_bin).filter(|b| b.is_file());
        Some(kelps::run(&o, bin.as_deref(), &addrs.master, &addrs.filer, others).await)
    } else {
        None
    };

    let mut text = report(&o, &rows, &low, &mem, &checks, &started, &weed_version, &kelp_mode);
    if let Some(run) = &many {
        kelps::report(&mut text, &o, run);
    }
    println!("{text}");
    println!("(whole run: {:.0} s)", t0.elapsed().as_secs_f64());
    if let Some(out) = &o.out {
        std::fs::write(out, &text)?;
    }
    drop(sw);
    drop(seaweedfs);
    Ok(())
}
