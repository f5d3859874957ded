//! Files kelp reads while it runs or starts: the SASL users file and the quotas file (both
//! YAML, re-read when they change), the webhook's sidecar file (JSON) and the Kubernetes
//! version string. A bad file is refused with a message; it never takes the process down.

use super::Target;
use crate::quota::rules::{Kind, Rules};
use crate::sasl::Users;
use crate::webhook::{InjectSettings, parse_kube_version};

pub const CONFIG: Target = Target {
    name: "config",
    about: "users file, quotas file, sidecar file and Kubernetes version strings",
    run: config_target,
    seeds: config_seeds,
    max_len: 2048,
    weight: 3,
    memory_base: 4 << 20,
    memory_per_byte: 256,
};

/// Input: byte 0 picks the file, the rest is its text.
fn config_target(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    match which % 4 {
        0 => {
            let _ = Users::parse(&text);
        }
        1 => {
            if let Ok(rules) = Rules::parse_file(&text) {
                for kind in [Kind::Produce, Kind::Fetch, Kind::Request] {
                    let _ = rules.most_specific(kind, Some("alice"), "reporting");
                    let _ = rules.most_specific(kind, None, "");
                }
            }
        }
        2 => {
            let _ = InjectSettings::from_sidecar_json(&text, which & 4 != 0, "K", "v");
        }
        _ => {
            let _ = parse_kube_version(&text);
        }
    }
}

fn config_seeds() -> Vec<Vec<u8>> {
    let files: [(u8, &str); 6] = [
        (
            0,
            "users:\n  bob:\n    scram-sha-256:\n      salt: W22ZaJ0SNY7soEsUEjb6gQ==\n      iterations: 4096\n      stored-key: WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=\n      server-key: wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=\n",
        ),
        (0, "users:\n  alice:\n    password: alice-secret\n"),
        (
            1,
            "quotas:\n  - client-id: <default>\n    producer_byte_rate: 1048576\n  - user: alice\n    client-id: reporting\n    consumer_byte_rate: 2097152\n    request_rate: 50\n",
        ),
        (
            2,
            r#"{"container":{"name":"kelp","env":[{"name":"KELP_SHUTDOWN_GRACE_MS","value":"60500"}]},"volumes":[{"name":"q"}]}"#,
        ),
        (3, "v1.29.4-eks-036c24b"),
        (3, "1.28+"),
    ];
    files
        .into_iter()
        .map(|(which, text)| {
            let mut input = vec![which];
            input.extend_from_slice(text.as_bytes());
            input
        })
        .collect()
}
