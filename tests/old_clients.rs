//! Old clients that speak versions Kafka 4.0 removed (KIP-896) and Kafka 3.9 still served:
//! Debian's Sarama 1.22 (configured as Kafka 2.1.0: DescribeConfigs v0, OffsetCommit v1,
//! Produce/Fetch with message sets for some calls) and kafka-go 0.2.1 (Produce v2, Fetch v2
//! with message format v1). The Go programs under tests/go/ are built once per test binary
//! run into the target directory, with GO111MODULE=off against Debian's /usr/share/gocode.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::kelp::Kelp;

/// Build `tests/go/<name>` once; the path of its binary.
fn go_program(name: &str) -> PathBuf {
    static BUILT: OnceLock<parking_lot::Mutex<Vec<String>>> = OnceLock::new();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go").join(name);
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock();
    if !built.iter().any(|b| b == name) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/go").join(name);
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&dir)
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .status()
            .expect("go runs (scripts/install-deps.sh installs golang-go and the client packages)");
        assert!(status.success(), "building {}", dir.display());
        built.push(name.to_string());
    }
    out
}

/// Run a Go program to completion off the runtime's threads (kelp runs in-process); its
/// stdout lines.
async fn run(program: PathBuf, args: Vec<String>) -> Vec<String> {
    let shown = format!("{} {}", program.display(), args.join(" "));
    let out = tokio::task::spawn_blocking(move || Command::new(&program).args(&args).output())
        .await
        .expect("joined")
        .expect("the program runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shown} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sarama_1_22_admin_producer_and_group_commits() {
    let sarama = go_program("sarama");
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &["--auto-create-topics", "false"]).await;
    let addr = kelp.bootstrap();
    let topic = common::unique_name("sarama");
    let group = common::unique_name("sarama-group");

    // ClusterAdmin: CreateTopic, again (already exists), ListTopics, DescribeConfig (v0).
    let lines = run(sarama.clone(), args(&["admin", &addr, &topic, "1"])).await;
    assert_eq!(lines[0], format!("created {topic}"));
    assert!(lines[1].contains("already exists"), "{lines:?}");
    assert!(lines.contains(&format!("listed {topic} 1")), "{lines:?}");
    assert!(lines.contains(&"config max.message.bytes 1048588".to_string()), "{lines:?}");
    assert!(lines.contains(&"config cleanup.policy delete".to_string()), "{lines:?}");

    // A synchronous producer: offsets 0..10 on partition 0.
    let lines = run(sarama.clone(), args(&["produce", &addr, &topic, "10"])).await;
    let want: Vec<String> = (0..10).map(|i| format!("produced 0 {i}")).collect();
    assert_eq!(lines, want);

    // A group member reads 4 records and commits; ListConsumerGroupOffsets says 4; a new
    // member resumes at 4 and reads the rest, nothing twice.
    let consumed = |from: i64, to: i64| -> Vec<String> {
        (from..to).map(|i| format!("consumed 0 {i} k{i} v{i} {}", 1_600_000_000 + i)).collect()
    };
    let lines = run(sarama.clone(), args(&["consume", &addr, &group, &topic, "4"])).await;
    assert_eq!(lines, consumed(0, 4));
    let lines = run(sarama.clone(), args(&["offsets", &addr, &group, &topic])).await;
    assert_eq!(lines, vec!["committed 4 0".to_string()]);
    let lines = run(sarama.clone(), args(&["consume", &addr, &group, &topic, "6"])).await;
    assert_eq!(lines, consumed(4, 10));
    let lines = run(sarama, args(&["offsets", &addr, &group, &topic])).await;
    assert_eq!(lines, vec!["committed 10 0".to_string()]);
    assert!(kelp.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_go_0_2_1_round_trips_keys_values_and_timestamps() {
    let kafkago = go_program("kafkago");
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let topic = common::unique_name("kafkago");
    common::create_topic_raw(kelp.addr, &topic, 1).await;
    let lines = run(kafkago, args(&[&kelp.bootstrap(), &topic, "20"])).await;
    let mut want = vec!["written 20".to_string()];
    want.extend((0..20).map(|i| format!("read {i} k{i} v{i} {}", 1_600_000_000_000i64 + i)));
    assert_eq!(lines, want);
    assert!(kelp.stop().await);
}
