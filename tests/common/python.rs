//! A kafka-python group consumer in its own process (an independent Kafka implementation next
//! to librdkafka), reporting its partition assignment as it changes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use parking_lot::Mutex;

/// Prints the consumer's assignment as a JSON list each time it changes.
const KAFKA_PYTHON_CONSUMER: &str = r#"
import json, sys
from kafka import KafkaConsumer
bootstrap, topic, group = sys.argv[1:4]
c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, client_id="kafka-python",
                  session_timeout_ms=6000, heartbeat_interval_ms=1000, max_poll_interval_ms=10000,
                  auto_offset_reset="earliest", enable_auto_commit=False)
last = None
while True:
    c.poll(timeout_ms=200)
    now = sorted(tp.partition for tp in c.assignment())
    if now != last:
        print(json.dumps(now), flush=True)
        last = now
"#;

pub struct PythonConsumer {
    child: Mutex<Child>,
    assignment: Arc<Mutex<BTreeSet<i32>>>,
    stderr: Arc<Mutex<String>>,
}

impl PythonConsumer {
    /// Join `group` on `topic` (session 6 s, heartbeat 1 s).
    pub fn start(bootstrap: &str, topic: &str, group: &str) -> PythonConsumer {
        let mut child = Command::new("python3")
            .args(["-c", KAFKA_PYTHON_CONSUMER, bootstrap, topic, group])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/install-deps.sh installs it and kafka-python)");
        let assignment = Arc::new(Mutex::new(BTreeSet::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (a, out) = (Arc::clone(&assignment), child.stdout.take().expect("stdout"));
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                *a.lock() = line
                    .trim_matches(['[', ']'])
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect();
            }
        });
        let (e, err) = (Arc::clone(&stderr), child.stderr.take().expect("stderr"));
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut e = e.lock();
                e.push_str(&line);
                e.push('\n');
            }
        });
        PythonConsumer { child: Mutex::new(child), assignment, stderr }
    }

    /// The partitions it owns now; panics with its stderr if the process has exited.
    pub fn assignment(&self) -> BTreeSet<i32> {
        if let Ok(Some(status)) = self.child.lock().try_wait() {
            panic!("kafka-python consumer exited ({status}):\n{}", self.stderr.lock());
        }
        self.assignment.lock().clone()
    }

    /// SIGKILL: the member disappears without leaving the group.
    pub fn kill(&self) {
        self.child.lock().kill().expect("kill kafka-python");
    }
}

impl Drop for PythonConsumer {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}
