//! The `kelp` binary itself: bad configuration exits 64 naming the setting, SIGTERM during a
//! steady librdkafka produce loses no acknowledged record, and `kelp dev` serves Kafka in
//! front of its own SeaweedFS and cleans up on SIGTERM.

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use common::kelp::Kelp;

const KELP: &str = env!("CARGO_BIN_EXE_kelp");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Arguments, environment, and what the error must name.
type BadConfig<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn bad_configuration_exits_64_naming_the_setting() {
    let short_secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(short_secret.path(), "too short\n").unwrap();
    let short_secret = short_secret.path().to_str().unwrap();
    let peer = ("KELP_PEER_LISTEN", "127.0.0.1:0");
    let cases: &[BadConfig] = &[
        (&["serve", "--default-partitions", "0"], &[], "--default-partitions"),
        (&["serve"], &[("KELP_LISTEN", "not-an-address")], "--listen"),
        (&["serve"], &[("KELP_MAX_CONNECTIONS", "-3")], "--max-connections"),
        // A peer listener without a secret, and without saying the network is trusted.
        (&["serve"], &[peer], "KELP_PEER_SECRET_FILE"),
        (&["dev"], &[peer], "KELP_PEER_SECRET_FILE"),
        (
            &["serve"],
            &[peer, ("KELP_PEER_SECRET_FILE", "/nonexistent/kelp")],
            "KELP_PEER_SECRET_FILE",
        ),
        (&["serve"], &[peer, ("KELP_PEER_SECRET_FILE", short_secret)], "KELP_PEER_SECRET_FILE"),
        (
            &["serve", "--peer-secret-file", short_secret],
            &[peer, ("KELP_PEER_ALLOW_UNAUTHENTICATED", "true")],
            "KELP_PEER_ALLOW_UNAUTHENTICATED",
        ),
        (&["serve"], &[("KELP_PEER_MAX_FRAME_BYTES", "100")], "--peer-max-frame-bytes"),
    ];
    for (args, env, name) in cases {
        let out = Command::new(KELP).args(*args).envs(env.iter().copied()).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?} {env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name), "{args:?} {env:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_steady_produce_loses_no_acknowledged_record() {
    let seaweedfs = common::seaweedfs().await;
    let a = seaweedfs.addrs().clone();
    let (kafka, admin) = (free_port(), free_port());
    let mut child = Command::new(KELP)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{kafka}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        .args(["--master", &a.master, "--filer", &a.filer, "--shutdown-grace-ms", "10000"])
        // acks=all answered from the broker's memory: with the flush wait (about 2 s per
        // request here) librdkafka's five requests in flight carry only a handful of records
        // in the 2 s before SIGTERM, and this test is about the drain, not durability.
        .env(kelp::config::ENV_ACKS_ALL_FLUSHED, "false")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::eventually(|| async {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", admin))
            .await
            .map_err(|e| e.to_string())?;
        drop(s);
        let ok = reqwest_like_get(admin, "/readyz").await;
        if ok { Ok(()) } else { Err("not ready".to_string()) }
    })
    .await;
    let bootstrap = format!("127.0.0.1:{kafka}");
    let topic = common::unique_name("sigterm");
    common::create_topic_raw(bootstrap.parse().unwrap(), &topic, 2).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "5000")
        .set("retries", "0")
        .create()
        .unwrap();
    // One acknowledged record per partition first: the publish streams exist before the
    // clock starts, so the seconds before SIGTERM are steady produce, not set-up.
    let mut acked = HashSet::new();
    for p in 0..2 {
        let v = format!("warm-{p}");
        let record = FutureRecord::<(), _>::to(&topic).partition(p).payload(&v);
        let sent = producer.send(record, Duration::from_secs(5));
        sent.await.expect("warm-up record acknowledged");
        acked.insert(v);
    }
    let mut pending = Vec::new();
    let started = Instant::now();
    let mut i = 0usize;
    let mut signalled = false;
    while started.elapsed() < Duration::from_secs(6) {
        if !signalled && started.elapsed() > Duration::from_secs(2) {
            kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
            signalled = true;
        }
        let v = format!("r{i}");
        if let Ok(f) = producer
            .send_result(FutureRecord::<(), _>::to(&topic).partition((i % 2) as i32).payload(&v))
        {
            pending.push((v, f));
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for (v, f) in pending {
        if let Ok(Ok(_)) = f.await {
            acked.insert(v);
        }
    }
    let status =
        wait_exit(&mut child, Duration::from_secs(15)).expect("kelp exits within the grace period");
    assert!(status.success(), "{status:?}");
    assert!(acked.len() > 50, "only {} records acknowledged before SIGTERM", acked.len());

    // Every acknowledged record is there, read through a fresh kelp.
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let seen =
        common::clients::read_values(&kelp.bootstrap(), &topic, 2, |seen| acked.is_subset(seen));
    let lost: Vec<&String> = acked.difference(&seen).collect();
    assert!(lost.is_empty(), "{} acknowledged records lost: {lost:?}", lost.len());
    assert!(kelp.stop().await);
}

/// GET over plain HTTP/1.0; whether the answer was 200.
async fn reqwest_like_get(port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    if s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).await;
    buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
}

/// `kelp dev` on a free port with its temporary files in `dir`, and its bootstrap address.
fn spawn_kelp_dev(dir: &std::path::Path) -> (std::process::Child, String) {
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let child = Command::new(KELP)
        .args(["dev", "--listen", &bootstrap])
        .env("TMPDIR", dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, bootstrap)
}

/// Whether kcat gets metadata from `bootstrap` within 90 s (a cold SeaweedFS takes a while).
fn serves_kafka(bootstrap: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(90);
    while Instant::now() < end {
        let out = Command::new("kcat").args(["-b", bootstrap, "-L", "-m", "2"]).output().unwrap();
        if out.status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

#[test]
fn kelp_dev_sigkilled_takes_its_seaweedfs_processes_along() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, bootstrap) = spawn_kelp_dev(dir.path());
    assert!(serves_kafka(&bootstrap), "kelp dev did not serve Kafka within 90 s");
    let weeds = children_of(child.id());
    assert_eq!(weeds.len(), 2, "weed server and weed mq.broker run under kelp dev: {weeds:?}");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && weeds.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<u32> = weeds.into_iter().filter(|p| alive(*p)).collect();
    for p in &left {
        let _ = kill(Pid::from_raw(*p as i32), Signal::SIGKILL);
    }
    assert!(left.is_empty(), "weed processes outlived a SIGKILLed kelp dev: {left:?}");
}

/// Pids whose parent is `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Whether `pid` runs (a zombie, or no process, does not).
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// State and parent pid of `pid`, from /proc/<pid>/stat.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields follow the last ')'.
    let mut rest = text.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((state, rest.next()?.parse().ok()?))
}

#[test]
fn kelp_dev_serves_kafka_and_stops_seaweedfs_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, bootstrap) = spawn_kelp_dev(dir.path());
    assert!(serves_kafka(&bootstrap), "kelp dev did not serve Kafka within 90 s");
    let mut p = Command::new("kcat")
        .args(["-b", &bootstrap, "-P", "-t", "dev-smoke"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    p.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    assert!(p.wait().unwrap().success(), "kcat produced");
    let out = Command::new("kcat")
        .args(["-b", &bootstrap, "-C", "-t", "dev-smoke", "-o", "beginning", "-e"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status =
        wait_exit(&mut child, Duration::from_secs(30)).expect("kelp dev exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    // The throw-away SeaweedFS went with it: its temporary directory is gone.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("kelp-seaweedfs"))
        .collect();
    assert!(
        left.is_empty(),
        "left behind: {:?}",
        left.iter().map(|e| e.path()).collect::<Vec<_>>()
    );
}
