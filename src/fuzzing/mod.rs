//! Fuzz targets: every decoder that reads bytes from a client, a peer or a config file, each
//! wrapped as a function from one input (a byte string) to "no panic".
//!
//! Owns: the target list, the built-in seeds of each target, the memory bound an input may
//! use, and the unit test that replays the checked-in corpus (`tests/fuzz-corpus/<target>/`).
//! Does not own the engine that makes inputs (the `kelp-fuzz` binary, `scripts/fuzz.sh`).
//!
//! Why inside the crate: the targets drive the same entry points the connection does,
//! including crate-private ones (the session's SASL exchange, the peer link's response
//! decoder), without widening kelp's public API. The module is compiled only into the unit
//! tests and under the `fuzz` feature, and is hidden from the docs.
//!
//! Each target asserts only what must hold for any input: no panic, memory within
//! [`memory_bound`] (checked by the fuzzer's allocator), and cheap invariants such as "a
//! decoded batch re-encodes to the same records". Structured targets read their input
//! through [`arbitrary::Unstructured`] to build valid frames, batches or messages, mutate
//! them, and fix up lengths and checksums so that the mutation reaches the code behind them.

mod config;
mod legacy;
mod records;
mod request;
mod sasl;
mod webhook;

use std::path::{Path, PathBuf};

/// One fuzz target.
pub struct Target {
    /// The name scripts/fuzz.sh and the corpus directory use.
    pub name: &'static str,
    /// One line for `kelp-fuzz list`.
    pub about: &'static str,
    /// Run one input. A panic is a bug.
    pub run: fn(&[u8]),
    /// Valid inputs to start mutating from, besides the checked-in corpus.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Longest input the fuzzer makes for this target.
    pub max_len: usize,
    /// Share of the fuzzer's default input count; slow targets (SASL derives PBKDF2 keys)
    /// get fewer inputs.
    pub weight: u32,
    /// Memory one input may hold at once: this much plus [`Target::memory_per_byte`] for each
    /// byte of the input. See [`memory_bound`].
    pub memory_base: usize,
    pub memory_per_byte: usize,
}

/// Every target, in the order scripts/fuzz.sh runs them.
pub const TARGETS: &[Target] = &[
    request::REQUEST,
    request::REQUEST_BODY,
    request::FRAMES,
    records::BATCH,
    records::BATCH_BYTES,
    legacy::LEGACY,
    legacy::LEGACY_BYTES,
    legacy::LEGACY_REQUEST,
    records::STORED,
    sasl::SASL,
    webhook::WEBHOOK,
    config::CONFIG,
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The decompression limit the record targets pass to the decoders (kelp's
/// `KELP_MAX_UNCOMPRESSED_BYTES`, small so that hitting it is cheap).
pub const DECOMPRESSION_LIMIT: usize = 1 << 20;

/// The most memory one input of `len` bytes may hold at once in `target`, harness included:
/// a fixed allowance (for the record targets: the values they build before compressing them,
/// and the codecs' own buffers, such as lz4's 4 MiB blocks) plus a multiple of the input.
/// The multiple is what decoding can legitimately cost per byte: a request element of three
/// bytes on the wire can take 130 in memory, twice while its vector grows, and the request
/// targets decode twice for their round trip. A decoder that reserves by what a length or
/// count *claims*, rather than by the bytes behind it, goes past it.
pub fn memory_bound(target: &Target, len: usize) -> usize {
    target.memory_base + target.memory_per_byte * len
}

/// Where the checked-in corpus lives: one directory per target.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus")
}

/// The corpus files of `target`, sorted by name (the fuzzer's input numbering depends on
/// the order).
pub fn corpus(dir: &Path, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir.join(target)) else { return Vec::new() };
    let mut paths: Vec<PathBuf> =
        entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    paths.sort();
    paths.into_iter().filter_map(|p| std::fs::read(&p).ok().map(|bytes| (p, bytes))).collect()
}

/// What the structured targets' generators return: an `Unstructured` error (input
/// exhausted) ends generation early, which is not a failure.
type Gen<T> = arbitrary::Result<T>;

/// Up to `max` bytes of the input (fewer when it runs out).
fn some_bytes<'a>(u: &mut arbitrary::Unstructured<'a>, max: usize) -> Gen<&'a [u8]> {
    let n = u.int_in_range(0..=max)?.min(u.len());
    u.bytes(n)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn every_seed_passes_its_target() {
        for t in TARGETS {
            for seed in (t.seeds)() {
                (t.run)(&seed);
            }
        }
    }

    /// The checked-in corpus through its own target, and every file through every other
    /// target too (inputs are just bytes to all of them).
    #[test]
    fn the_corpus_replays_through_every_target() {
        let dir = corpus_dir();
        let mut all = Vec::new();
        for t in TARGETS {
            let files = corpus(&dir, t.name);
            assert!(!files.is_empty(), "tests/fuzz-corpus/{} is empty", t.name);
            all.extend(files.into_iter().map(|(_, b)| b));
        }
        for t in TARGETS {
            for input in &all {
                (t.run)(input);
            }
        }
    }

    /// The corpus again, each input held to its target's memory bound as the fuzzer holds
    /// it. An allocation over the bound aborts the process, so the replay runs in a child:
    /// this test binary running only [`capped_replay`], where no other test allocates.
    #[test]
    fn the_corpus_replays_within_each_targets_memory_bound() {
        run_alone("fuzzing::tests::capped_replay");
    }

    /// Run the ignored test `name` of this test binary in a child process, where nothing
    /// else allocates, so that it can cap memory (an allocation over the cap aborts).
    pub(crate) fn run_alone(name: &str) {
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new(exe)
            .args([name, "--exact", "--ignored", "--test-threads=1"])
            .output()
            .expect("running the test");
        assert!(
            out.status.success(),
            "{name}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run in a process of its own by the_corpus_replays_within_each_targets_memory_bound"]
    fn capped_replay() {
        let alloc = &crate::TEST_ALLOC;
        for t in TARGETS {
            let inputs = (t.seeds)().into_iter().map(|s| ("seed".into(), s));
            for (path, input) in corpus(&corpus_dir(), t.name).into_iter().chain(inputs) {
                // Said before running: an abort leaves this as the last line.
                eprintln!("{} {} ({} bytes)", t.name, path.display(), input.len());
                alloc.set_limit(alloc.allocated() + memory_bound(t, input.len())).unwrap();
                (t.run)(&input);
                alloc.set_limit(usize::MAX).unwrap();
            }
        }
    }

    #[test]
    fn every_corpus_directory_names_a_target() {
        for entry in std::fs::read_dir(corpus_dir()).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(target(&name).is_some(), "tests/fuzz-corpus/{name} is no target");
        }
    }

    #[test]
    fn target_names_are_unique() {
        for (i, a) in TARGETS.iter().enumerate() {
            assert!(TARGETS[i + 1..].iter().all(|b| b.name != a.name), "{}", a.name);
        }
    }
}
