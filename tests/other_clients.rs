//! Independent Kafka client implementations against kelp: kcat (librdkafka's CLI) and
//! kafka-python (a pure-Python implementation of the protocol).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::kelp::Kelp;

const N: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_produces_and_consumes_with_keys_headers_and_offsets() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &["--default-partitions", "2"]).await;
    let topic = common::unique_name("kpy");
    let script = r#"
import sys, json, time
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
p = KafkaProducer(bootstrap_servers=bootstrap, acks='all', compression_type='gzip', linger_ms=5)
acked = []
for i in range(n):
    key = None if i % 5 == 0 else ('k%d' % i).encode()
    value = b'' if i % 7 == 0 else ('v%d' % i).encode()
    headers = [('h', b'1'), ('h', b'2')] if i % 3 == 0 else []
    md = p.send(topic, key=key, value=value, headers=headers, partition=i % 2, timestamp_ms=1600000000000 + i).get(timeout=60)
    acked.append([md.partition, md.offset])
p.flush()
c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=20000)
tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
c.assign(tps)
c.seek_to_beginning(*tps)
got = []
deadline = time.time() + 90
while len(got) < n and time.time() < deadline:
    batch = c.poll(timeout_ms=2000)
    for tp, msgs in batch.items():
        for m in msgs:
            got.append({'p': m.partition, 'o': m.offset, 'k': None if m.key is None else m.key.decode(),
                        'v': m.value.decode(), 'h': [[k, v.decode()] for k, v in m.headers], 't': m.timestamp})
print(json.dumps({'acked': acked, 'got': got}))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &kelp.bootstrap(), &topic, &N.to_string()])
        .output()
        .expect("python3 runs (scripts/install-deps.sh installs kafka-python)");
    assert!(out.status.success(), "kafka-python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json from the script");
    let acked = v["acked"].as_array().unwrap();
    assert_eq!(acked.len(), N);
    // Offsets acknowledged per partition are 0, 1, 2, ... in send order.
    for p in 0..2 {
        let offs: Vec<i64> =
            acked.iter().filter(|a| a[0] == p).map(|a| a[1].as_i64().unwrap()).collect();
        assert_eq!(offs, (0..offs.len() as i64).collect::<Vec<_>>(), "partition {p}");
    }
    let got = v["got"].as_array().unwrap();
    assert_eq!(got.len(), N);
    for g in got {
        let p = g["p"].as_i64().unwrap();
        let o = g["o"].as_i64().unwrap();
        let i = (o * 2 + p) as usize; // record i went to partition i % 2 at offset i / 2
        let want_key =
            if i.is_multiple_of(5) { serde_json::Value::Null } else { format!("k{i}").into() };
        let want_value = if i.is_multiple_of(7) { String::new() } else { format!("v{i}") };
        assert_eq!(g["k"], want_key, "record {i}");
        assert_eq!(g["v"], serde_json::Value::from(want_value), "record {i}");
        assert_eq!(g["t"].as_i64().unwrap(), 1_600_000_000_000 + i as i64, "record {i} timestamp");
        let want_headers = if i.is_multiple_of(3) {
            serde_json::json!([["h", "1"], ["h", "2"]])
        } else {
            serde_json::json!([])
        };
        assert_eq!(g["h"], want_headers, "record {i} headers");
    }
    assert!(kelp.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produces_and_consumes_keys_headers_and_auto_creates_the_topic() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let topic = common::unique_name("kcat");
    let mut input = String::new();
    for i in 0..N {
        input.push_str(&format!("key{i}:value {i}\n"));
    }
    let mut child = Command::new("kcat")
        .args([
            "-b",
            &kelp.bootstrap(),
            "-P",
            "-t",
            &topic,
            "-K",
            ":",
            "-H",
            "source=kcat",
            "-z",
            "snappy",
            "-X",
            "acks=all",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat runs (scripts/install-deps.sh installs it)");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kcat -P failed: {}", String::from_utf8_lossy(&out.stderr));

    let out = Command::new("kcat")
        .args([
            "-b",
            &kelp.bootstrap(),
            "-C",
            "-t",
            &topic,
            "-o",
            "beginning",
            "-e",
            "-f",
            "%p|%o|%k|%s|%h\n",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "kcat -C failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), N, "{text}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("0|{i}|key{i}|value {i}|source=kcat"));
    }
    assert!(kelp.stop().await);
}
