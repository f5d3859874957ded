//! Exercise `kelp::seaweed` against a running SeaweedFS (master + filer + MQ broker).
//!
//! `cargo run --example seaweed_probe -- <master host:port> [scenario]`, scenario one of:
//! - `all` (default): topic lifecycle, shared publishing, fetch and waiting, reload after
//!   every publisher left, delete and re-create, filer entries;
//! - `bulk`: 50 000 records through one partition, read back from memory, disk and reload;
//! - `spread`: with several brokers, every partition through its own leader;
//! - `chaos`: publish from several tasks for 40 s; kill and restart the broker meanwhile;
//! - `moves`: with two or more brokers, kill one meanwhile and watch its partitions;
//! - `restart`: publish once a second for 60 s; restart the broker meanwhile.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kelp::error::Error;
use kelp::seaweed::{Message, Seaweed, SeaweedOptions};

fn msg(i: usize) -> Message {
    Message {
        key: Bytes::from(format!("k{i}")),
        value: Bytes::from(format!("value-{i}")),
        ts_ns: 0,
    }
}

async fn connect(master: &str) -> Seaweed {
    let sw = Seaweed::connect(SeaweedOptions {
        master: master.to_string(),
        filer: None,
        namespace: "kelp".into(),
        call_timeout: Duration::from_secs(5),
    })
    .await
    .expect("connect");
    let t0 = Instant::now();
    loop {
        match sw.ping().await {
            Ok(()) => break,
            Err(e) if t0.elapsed() < Duration::from_secs(60) => {
                println!("ping: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("not ready: {e}"),
        }
    }
    println!("ready after {:?}", t0.elapsed());
    sw
}

fn is_kafka(r: &Result<impl std::fmt::Debug, Error>, want: ResponseError) -> bool {
    matches!(r, Err(Error::Kafka(c)) if *c == want)
}

async fn all(master: &str) {
    let sw = connect(master).await;
    let topic = format!("probe-{}", std::process::id());

    // Topic lifecycle.
    assert_eq!(sw.partition_count(&topic).await.unwrap(), None);
    sw.create_topic(&topic, 3).await.unwrap();
    assert!(is_kafka(&sw.create_topic(&topic, 3).await, ResponseError::TopicAlreadyExists));
    assert_eq!(sw.partition_count(&topic).await.unwrap(), Some(3));
    let listed = sw.list_topics().await.unwrap();
    assert!(listed.contains(&(topic.clone(), 3)), "{listed:?}");
    assert!(is_kafka(&sw.add_partitions(&topic, 4).await, ResponseError::InvalidRequest));
    assert!(is_kafka(&sw.add_partitions(&topic, 3).await, ResponseError::InvalidPartitions));
    assert!(is_kafka(
        &sw.publish(&topic, 3, vec![msg(0)]).await,
        ResponseError::UnknownTopicOrPartition
    ));
    assert!(is_kafka(
        &sw.publish("no-such-topic-xyz", 0, vec![msg(0)]).await,
        ResponseError::UnknownTopicOrPartition
    ));
    println!("lifecycle ok");

    // Concurrent publishers share one stream; offsets are contiguous.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..50 {
        let sw = sw.clone();
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let batch: Vec<Message> = (0..20).map(|i| msg(t * 20 + i)).collect();
            let offs = sw.publish(&topic, 1, batch.clone()).await.unwrap();
            assert_eq!(offs.len(), 20);
            assert!(
                offs.windows(2).all(|w| w[1] == w[0] + 1),
                "batch offsets contiguous: {offs:?}"
            );
            offs.into_iter().zip(batch).collect::<Vec<_>>()
        }));
    }
    let mut acked: Vec<(i64, Message)> = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort_by_key(|(o, _)| *o);
    println!("published 1000 in {:?}; offsets {}..={}", t0.elapsed(), acked[0].0, acked[999].0);
    assert_eq!(acked[0].0, 2, "two markers first");
    assert!(acked.windows(2).all(|w| w[1].0 == w[0].0 + 1));

    // Fetch everything back.
    let mut got = Vec::new();
    let mut next = 0;
    while got.len() < 1000 {
        let f = sw.fetch(&topic, 1, next, 64 * 1024, Duration::from_millis(100), 1).await.unwrap();
        assert!(!f.messages.is_empty());
        next = f.messages.last().unwrap().0 + 1;
        assert_eq!(f.log_start_offset, 2);
        got.extend(f.messages);
    }
    for ((o1, m1), (o2, m2)) in acked.iter().zip(&got) {
        assert_eq!(o1, o2);
        assert_eq!(m1.key, m2.key);
        assert_eq!(m1.value, m2.value);
    }
    assert_eq!(sw.offset_range(&topic, 1).await.unwrap(), (2, 1002));
    assert_eq!(sw.offset_range(&topic, 0).await.unwrap(), (0, 0));
    println!("fetch ok");

    // Waiting: nothing arrives → returns after max_wait; a publish wakes it early.
    let t0 = Instant::now();
    let f = sw.fetch(&topic, 1, 1002, 1024, Duration::from_millis(500), 1).await.unwrap();
    assert!(f.messages.is_empty());
    println!("empty long poll took {:?}", t0.elapsed());
    assert!(t0.elapsed() >= Duration::from_millis(450));
    let sw2 = sw.clone();
    let topic2 = topic.clone();
    let publisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sw2.publish(&topic2, 1, vec![msg(1000)]).await.unwrap()
    });
    let t0 = Instant::now();
    let f = sw.fetch(&topic, 1, 1002, 1024, Duration::from_secs(5), 1).await.unwrap();
    println!(
        "woken fetch took {:?}, got {:?}",
        t0.elapsed(),
        f.messages.iter().map(|m| m.0).collect::<Vec<_>>()
    );
    assert_eq!(publisher.await.unwrap(), vec![1002]);
    assert_eq!(f.messages.len(), 1);
    assert!(t0.elapsed() < Duration::from_secs(2));
    let f = sw.fetch(&topic, 1, 1003, 1024, Duration::ZERO, 0).await.unwrap();
    assert!(f.messages.is_empty() && f.high_water_mark == 1003);
    assert!(is_kafka(
        &sw.fetch(&topic, 1, 1004, 1024, Duration::ZERO, 1).await,
        ResponseError::OffsetOutOfRange
    ));
    assert!(is_kafka(
        &sw.fetch(&topic, 1, -1, 1024, Duration::ZERO, 1).await,
        ResponseError::OffsetOutOfRange
    ));
    println!("waiting ok");

    // Records stay readable after every publisher left (the broker unloads the partition).
    drop(sw);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sw = connect(master).await;
    let f = sw.fetch(&topic, 1, 0, 1 << 20, Duration::from_millis(100), 1).await.unwrap();
    println!(
        "after reconnect: {} records from {:?}, hwm {}",
        f.messages.len(),
        f.messages.first().map(|m| m.0),
        f.high_water_mark
    );
    assert_eq!(f.messages.len(), 1001);
    println!("reload ok");

    // Delete and re-create: a new incarnation, empty.
    sw.delete_topic(&topic).await.unwrap();
    assert_eq!(sw.partition_count(&topic).await.unwrap(), None);
    assert!(is_kafka(&sw.delete_topic(&topic).await, ResponseError::UnknownTopicOrPartition));
    assert!(!sw.list_topics().await.unwrap().iter().any(|(t, _)| *t == topic));
    assert!(is_kafka(
        &sw.publish(&topic, 1, vec![msg(0)]).await,
        ResponseError::UnknownTopicOrPartition
    ));
    sw.create_topic(&topic, 2).await.unwrap();
    assert_eq!(sw.partition_count(&topic).await.unwrap(), Some(2));
    assert_eq!(sw.publish(&topic, 1, vec![msg(7)]).await.unwrap(), vec![2]);
    let f = sw.fetch(&topic, 1, 0, 1 << 20, Duration::ZERO, 1).await.unwrap();
    assert_eq!(f.messages.len(), 1);
    assert_eq!(f.messages[0].1.value, msg(7).value);
    println!("delete/recreate ok");
    sw.delete_topic(&topic).await.unwrap();

    // Filer.
    let dir = format!("/kelp-probe/{}", std::process::id());
    let path = format!("{dir}/groups/g1/state");
    assert_eq!(sw.filer_get(&path).await.unwrap(), None);
    sw.filer_put(&path, b"one").await.unwrap();
    assert_eq!(sw.filer_get(&path).await.unwrap().as_deref(), Some(&b"one"[..]));
    sw.filer_put(&path, b"two").await.unwrap();
    assert_eq!(sw.filer_get(&path).await.unwrap().as_deref(), Some(&b"two"[..]));
    assert!(!sw.filer_create(&path, b"three").await.unwrap());
    assert!(sw.filer_create(&format!("{dir}/groups/g1/other"), b"").await.unwrap());
    assert_eq!(
        sw.filer_get(&format!("{dir}/groups/g1/other")).await.unwrap().as_deref(),
        Some(&b""[..])
    );
    assert_eq!(sw.filer_list(&format!("{dir}/groups/g1")).await.unwrap(), vec!["other", "state"]);
    assert_eq!(sw.filer_list(&format!("{dir}/nope")).await.unwrap(), Vec::<String>::new());
    sw.filer_delete(&path).await.unwrap();
    sw.filer_delete(&path).await.unwrap();
    assert_eq!(sw.filer_get(&path).await.unwrap(), None);
    sw.filer_delete(&dir).await.unwrap();
    assert_eq!(sw.filer_list(&dir).await.unwrap(), Vec::<String>::new());
    println!("filer ok");
    println!("ALL OK");
}

/// Many records through one partition, read back from memory and from disk.
async fn bulk(master: &str) {
    let sw = connect(master).await;
    let topic = format!("bulk-{}", std::process::id());
    sw.create_topic(&topic, 2).await.unwrap();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let sw = sw.clone();
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for b in 0..25usize {
                let batch: Vec<Message> =
                    (0..250).map(|i| msg(t * 1_000_000 + b * 1000 + i)).collect();
                let offs = sw.publish(&topic, 0, batch.clone()).await.unwrap();
                acked.extend(offs.into_iter().zip(batch));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort_by_key(|(o, _)| *o);
    let n = acked.len();
    println!("published {n} in {:?}", t0.elapsed());
    let check = |label: &str, got: &[(i64, Message)]| {
        assert_eq!(got.len(), n, "{label}: count");
        for ((o1, m1), (o2, m2)) in acked.iter().zip(got) {
            assert_eq!((o1, &m1.value), (o2, &m2.value), "{label}");
        }
        println!("{label}: {n} records match");
    };
    let read_all = |sw: Seaweed| {
        let topic = topic.clone();
        async move {
            let mut got = Vec::new();
            let mut next = 0;
            let t0 = Instant::now();
            while got.len() < n && t0.elapsed() < Duration::from_secs(60) {
                let f = sw
                    .fetch(&topic, 0, next, 256 * 1024, Duration::from_millis(200), 1)
                    .await
                    .unwrap();
                if let Some(last) = f.messages.last() {
                    next = last.0 + 1;
                }
                got.extend(f.messages);
            }
            println!("read {} in {:?}", got.len(), t0.elapsed());
            got
        }
    };
    check("from memory", &read_all(sw.clone()).await);
    tokio::time::sleep(Duration::from_secs(7)).await;
    check("after flush", &read_all(sw.clone()).await);
    drop(sw);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sw = connect(master).await;
    check("after reload", &read_all(sw.clone()).await);
    assert_eq!(sw.offset_range(&topic, 0).await.unwrap(), (2, n as i64 + 2));
    sw.delete_topic(&topic).await.unwrap();
    println!("BULK OK");
}

/// Publish continuously from several tasks; kill the broker meanwhile. Every call must
/// return within its bound, with a retriable error while the broker is away.
async fn chaos(master: &str) {
    let sw = connect(master).await;
    let topic = format!("chaos-{}", std::process::id());
    sw.create_topic(&topic, 2).await.unwrap();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let sw = sw.clone();
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errs, mut slowest) =
                (0usize, std::collections::BTreeMap::new(), Duration::ZERO);
            while t0.elapsed() < Duration::from_secs(40) {
                let batch: Vec<Message> = (0..100).map(msg).collect();
                let started = Instant::now();
                match sw.publish(&topic, (t % 2) as u32, batch).await {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        let kind = format!("{e}").chars().take(70).collect::<String>();
                        *errs.entry(kind).or_insert(0usize) += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                slowest = slowest.max(started.elapsed());
            }
            (ok, errs, slowest)
        }));
    }
    for t in tasks {
        let (ok, errs, slowest) = t.await.unwrap();
        println!("ok {ok} slowest {slowest:?} errors {errs:?}");
    }
}

/// With several brokers: every partition is written and read through its own leader.
async fn spread(master: &str) {
    let sw = connect(master).await;
    let topic = format!("spread-{}", std::process::id());
    sw.create_topic(&topic, 8).await.unwrap();
    for p in 0..8u32 {
        let offs = sw.publish(&topic, p, (0..10).map(msg).collect()).await.unwrap();
        let f = sw.fetch(&topic, p, 0, 1 << 20, Duration::ZERO, 1).await.unwrap();
        assert_eq!(f.messages.len(), 10, "partition {p}");
        assert_eq!(f.messages[0].0, offs[0]);
    }
    println!("SPREAD OK");
    sw.delete_topic(&topic).await.unwrap();
}

/// With several brokers, kill one by hand while this runs: partitions it led must move.
async fn moves(master: &str) {
    let sw = connect(master).await;
    let topic = format!("moves-{}", std::process::id());
    sw.create_topic(&topic, 8).await.unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(45) {
        let mut line = String::new();
        for p in 0..8u32 {
            let r = sw.publish(&topic, p, vec![msg(0)]).await;
            line.push_str(&match r {
                Ok(o) => format!(" {p}:{}", o[0]),
                Err(e) => {
                    format!(" {p}:ERR({})", format!("{e}").chars().take(40).collect::<String>())
                }
            });
        }
        println!("{:>5.1}s{line}", t0.elapsed().as_secs_f32());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for p in 0..8u32 {
        let f = sw.fetch(&topic, p, 0, 1 << 20, Duration::ZERO, 1).await;
        println!("partition {p}: {:?}", f.map(|f| (f.messages.len(), f.high_water_mark)));
    }
}

/// Publish once a second and print what happens; restart the broker meanwhile.
async fn restart(master: &str) {
    let sw = connect(master).await;
    let topic = format!("restart-{}", std::process::id());
    sw.create_topic(&topic, 1).await.unwrap();
    let t0 = Instant::now();
    let mut i = 0;
    while t0.elapsed() < Duration::from_secs(60) {
        let started = Instant::now();
        let r = sw.publish(&topic, 0, vec![msg(i)]).await;
        println!(
            "{:>5.1}s publish {i}: {:?} in {:?}",
            t0.elapsed().as_secs_f32(),
            r,
            started.elapsed()
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let f = sw.fetch(&topic, 0, 0, 1 << 20, Duration::ZERO, 1).await;
    println!("fetched: {:?}", f.map(|f| f.messages.into_iter().map(|m| m.0).collect::<Vec<_>>()));
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().collect();
    let master = args.get(1).map(String::as_str).unwrap_or("127.0.0.1:23333");
    match args.get(2).map(String::as_str).unwrap_or("all") {
        "restart" => restart(master).await,
        "bulk" => bulk(master).await,
        "chaos" => chaos(master).await,
        "spread" => spread(master).await,
        "moves" => moves(master).await,
        _ => all(master).await,
    }
}
