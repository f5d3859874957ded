//! `kelp-fuzz`: the fuzzer behind scripts/fuzz.sh. It runs the targets of `kelp::fuzzing`
//! on stable Rust without a coverage-guided engine: each input is a seed (a target's
//! built-in seeds and its corpus under tests/fuzz-corpus) with random byte-level edits, and
//! the targets themselves turn bytes into valid frames, batches and messages before
//! corrupting them, which is what gets inputs past lengths and checksums.
//!
//! Inputs are numbered and input `i` is a pure function of (seed, target, corpus, `i`), so a
//! worker process can run millions of them and, when one kills it, the supervisor reruns the
//! last stretch with each input announced before it runs to learn exactly which one did.
//! - A panic is caught in the worker; the input is saved and fuzzing goes on.
//! - An allocation beyond `kelp::fuzzing::memory_bound` of the input fails (the global
//!   allocator below is capped per input), which aborts the worker; so does a stack
//!   overflow. The supervisor finds the input, saves it and starts a new worker after it.
//! - A worker silent for `--timeout` seconds is killed and treated the same way.
//!
//! Crash inputs go to `--crashes/<target>/`; `kelp-fuzz replay FILE` runs one again in
//! process, with its panic message and backtrace.

use parking_lot::Mutex;
use std::alloc::System;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use kelp::fuzzing::{self, TARGETS, Target};

/// Every allocation is counted; the limit is lowered around each input.
#[global_allocator]
static ALLOC: cap::Cap<System> = cap::Cap::new(System, usize::MAX);

/// A worker reports progress at least this often (in inputs), so a crash is found by
/// rerunning at most this many inputs one by one.
const REPORT_EVERY: u64 = 1 << 16;
/// ... and, between those, after this much time.
const REPORT_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Parser)]
#[command(name = "kelp-fuzz", about = "Fuzz kelp's decoders (see docs/fuzzing.md)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the targets.
    List,
    /// Fuzz the named targets (all when none is named).
    Run {
        /// Inputs in total, shared among the targets by their weights.
        #[arg(long, default_value_t = 10_000_000)]
        inputs: u64,
        /// Seed of input generation: the same seed makes the same inputs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Targets fuzzed at the same time (one worker process each).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// A worker silent for this many seconds is hung.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Corpus directory (one sub-directory per target).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Where crash inputs are written (one sub-directory per target).
        #[arg(long, default_value = "fuzz-crashes")]
        crashes: PathBuf,
        targets: Vec<String>,
    },
    /// Write every target's built-in seeds into a corpus directory (one file each, named by
    /// its content), for checking in next to what fuzzing found.
    Seeds {
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Only these targets (all when none is named).
        targets: Vec<String>,
    },
    /// Run files (or every file in directories) through one target or all of them.
    Replay {
        #[arg(long)]
        target: Option<String>,
        /// Cap memory per input as fuzzing does (an allocation over the bound aborts; run
        /// under a debugger to see where).
        #[arg(long)]
        capped: bool,
        paths: Vec<PathBuf>,
    },
    /// (Internal) run inputs `from..to` of one target and report on stdout.
    #[command(hide = true)]
    Work {
        target: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
        #[arg(long)]
        corpus: PathBuf,
        #[arg(long)]
        crashes: PathBuf,
        /// Announce every input before running it.
        #[arg(long)]
        trace: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::List => {
            for t in TARGETS {
                println!("{:<14} {}", t.name, t.about);
            }
            ExitCode::SUCCESS
        }
        Cmd::Run { inputs, seed, jobs, timeout, corpus, crashes, targets } => {
            let corpus = corpus.unwrap_or_else(fuzzing::corpus_dir);
            let chosen = match choose(&targets) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let plan = Plan { seed, timeout: Duration::from_secs(timeout), corpus, crashes };
            if run(&plan, &chosen, inputs, jobs.max(1)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Cmd::Seeds { corpus, targets } => {
            let dir = corpus.unwrap_or_else(fuzzing::corpus_dir);
            let chosen = match choose(&targets) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            for t in chosen {
                for seed in (t.seeds)() {
                    if save(&dir, t.name, "seed", &seed).is_none() {
                        eprintln!("cannot write into {}", dir.display());
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Cmd::Replay { target, capped, paths } => replay(target.as_deref(), capped, &paths),
        Cmd::Work { target, seed, from, to, corpus, crashes, trace } => {
            let Some(t) = fuzzing::target(&target) else {
                eprintln!("no target {target}");
                return ExitCode::from(2);
            };
            work(t, seed, from..to, &corpus, &crashes, trace);
            ExitCode::SUCCESS
        }
    }
}

fn choose(names: &[String]) -> Result<Vec<&'static Target>, String> {
    if names.is_empty() {
        return Ok(TARGETS.iter().collect());
    }
    names.iter().map(|n| fuzzing::target(n).ok_or_else(|| format!("no target {n}"))).collect()
}

// === input generation ===

/// SplitMix64: small, fast and good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A length up to `max`, short ones far more often than long ones.
    fn len(&mut self, max: usize) -> usize {
        let bits = self.below(usize::BITS as usize - max.leading_zeros() as usize + 1);
        self.below((1usize << bits).min(max) + 1)
    }
}

/// The inputs of one target: its seeds and corpus, and how to derive input `i` from them.
struct Inputs {
    pool: Vec<Vec<u8>>,
    max_len: usize,
    seed: u64,
}

impl Inputs {
    fn new(t: &Target, corpus: &Path, seed: u64) -> Inputs {
        let mut pool = (t.seeds)();
        pool.extend(fuzzing::corpus(corpus, t.name).into_iter().map(|(_, b)| b));
        // Each target draws from its own stream.
        let name_hash = t.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Inputs { pool, max_len: t.max_len, seed: seed ^ name_hash }
    }

    /// Input `i`: the pool as it is first, then pool entries (or random bytes) edited.
    fn get(&self, i: u64) -> Vec<u8> {
        if let Some(p) = usize::try_from(i).ok().and_then(|i| self.pool.get(i)) {
            return p.clone();
        }
        let mut r = Rng(self.seed ^ i.wrapping_mul(0xd605_bbb5_8c8a_bd35));
        r.next();
        let mut v = if self.pool.is_empty() || r.below(16) == 0 {
            (0..r.len(self.max_len)).map(|_| r.next() as u8).collect()
        } else {
            self.pool[r.below(self.pool.len())].clone()
        };
        let edits = 1 + if r.below(4) == 0 { r.below(16) } else { r.below(3) };
        for _ in 0..edits {
            self.edit(&mut v, &mut r);
        }
        v.truncate(self.max_len);
        v
    }

    fn edit(&self, v: &mut Vec<u8>, r: &mut Rng) {
        const BYTES: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, 0xfe, 0x40, 0x3f];
        let len = v.len();
        let at = if len == 0 { 0 } else { r.below(len) };
        match r.below(14) {
            0 if len > 0 => v[at] ^= 1 << r.below(8),
            1 if len > 0 => v[at] = r.next() as u8,
            2 if len > 0 => v[at] = BYTES[r.below(BYTES.len())],
            3 if len >= 2 => {
                let n = [0i16, -1, 1, i16::MAX, i16::MIN, 0xff, 0x100][r.below(7)];
                let at = at.min(len - 2);
                v[at..at + 2].copy_from_slice(&n.to_be_bytes());
            }
            4 if len >= 4 => {
                let n =
                    [0i32, -1, 1, i32::MAX, i32::MIN, 0x7fff, 0x8000, 0x10000, len as i32, 4096]
                        [r.below(10)];
                let at = at.min(len - 4);
                v[at..at + 4].copy_from_slice(&n.to_be_bytes());
            }
            5 if len > 0 => v[at] = v[at].wrapping_add((r.below(33) as u8).wrapping_sub(16)),
            6 => {
                let n = 1 + r.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
                v.splice(at..at, bytes);
            }
            7 if len > 0 => {
                let end = (at + 1 + r.below(16)).min(len);
                v.drain(at..end);
            }
            8 if len > 0 => {
                let end = (at + 1 + r.below(32)).min(len);
                let chunk = v[at..end].to_vec();
                let to = r.below(len + 1);
                v.splice(to..to, chunk);
            }
            9 => v.truncate(at),
            10 if !self.pool.is_empty() => {
                let other = &self.pool[r.below(self.pool.len())];
                let from = if other.is_empty() { 0 } else { r.below(other.len()) };
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            11 => {
                let n = 1 + r.below(64);
                let b = BYTES[r.below(BYTES.len())];
                v.splice(at..at, std::iter::repeat_n(b, n));
            }
            // Long inputs: a run of one byte, up to the target's longest input.
            13 => {
                let n = r.len(self.max_len.saturating_sub(len));
                let b = BYTES[r.below(BYTES.len())];
                v.splice(at..at, std::iter::repeat_n(b, n));
            }
            12 if len > 0 => {
                // A zigzag varint of a value lengths and counts should never hold.
                let n =
                    [-1i64, 0, 1, i64::MAX, i64::MIN, i64::from(i32::MAX), len as i64][r.below(7)];
                let mut z = ((n << 1) ^ (n >> 63)) as u64;
                let mut varint = Vec::new();
                while z >= 0x80 {
                    varint.push(z as u8 | 0x80);
                    z >>= 7;
                }
                varint.push(z as u8);
                v.splice(at..at + 1, varint);
            }
            _ => {}
        }
    }
}

// === the worker ===

/// The last panic's message and location, kept by the panic hook for the worker's report.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn work(
    t: &Target,
    seed: u64,
    range: std::ops::Range<u64>,
    corpus: &Path,
    crashes: &Path,
    trace: bool,
) {
    let inputs = Inputs::new(t, corpus, seed);
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        *LAST_PANIC.lock() = Some(format!("{at}: {msg}"));
    }));
    let mut out = std::io::stdout().lock();
    let mut seen = HashSet::new();
    let mut last_report = Instant::now();
    let _ = writeln!(out, "at {}", range.start);
    for i in range.clone() {
        if trace {
            let _ = writeln!(out, "try {i}");
            let _ = out.flush();
        } else if i % REPORT_EVERY == 0
            || (i % 1024 == 0 && last_report.elapsed() >= REPORT_INTERVAL)
        {
            let _ = writeln!(out, "at {i}");
            let _ = out.flush();
            last_report = Instant::now();
        }
        let input = inputs.get(i);
        let limit = ALLOC.allocated() + fuzzing::memory_bound(t, input.len());
        let _ = ALLOC.set_limit(limit);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| (t.run)(&input)));
        let _ = ALLOC.set_limit(usize::MAX);
        if result.is_err() {
            let what = LAST_PANIC.lock().take().unwrap_or_default();
            let place = what.split(": ").next().unwrap_or_default().to_string();
            // One file per panic site and run is enough to reproduce it.
            let file =
                if seen.insert(place) { save(crashes, t.name, "panic", &input) } else { None };
            let file = file.map(|f| f.display().to_string()).unwrap_or_else(|| "-".into());
            let _ = writeln!(out, "panic {i} {file} {what}");
            let _ = out.flush();
        }
    }
    let _ = writeln!(out, "done {}", range.end);
}

/// Write a crash input; its name is the content's hash, so a repeat overwrites itself.
fn save(dir: &Path, target: &str, kind: &str, input: &[u8]) -> Option<PathBuf> {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("{kind}-{:08x}", crc32fast::hash(input)));
    std::fs::write(&path, input).ok()?;
    Some(path)
}

// === the supervisor ===

struct Plan {
    seed: u64,
    timeout: Duration,
    corpus: PathBuf,
    crashes: PathBuf,
}

#[derive(Default)]
struct Report {
    inputs: u64,
    panics: u64,
    crashes: u64,
    elapsed: Duration,
}

/// How a worker ended.
enum End {
    /// It ran its whole range.
    Done,
    /// It died or went silent; `last` is the last input it announced (or reached).
    Died { last: u64, why: String },
}

struct Worker {
    /// The first input of its range.
    start: u64,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn spawn(plan: &Plan, t: &Target, range: std::ops::Range<u64>, trace: bool) -> Worker {
    let exe = std::env::current_exe().expect("own executable");
    let mut cmd = Command::new(exe);
    cmd.args(["work", t.name, "--seed", &plan.seed.to_string()])
        .args(["--from", &range.start.to_string(), "--to", &range.end.to_string()])
        .arg("--corpus")
        .arg(&plan.corpus)
        .arg("--crashes")
        .arg(&plan.crashes)
        // Decode errors are `anyhow` errors, which capture a backtrace each when these are
        // set: that would measure backtraces, not decoders.
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if trace {
        cmd.arg("--trace");
    }
    let mut child = cmd.spawn().expect("starting a worker");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        // The tail says why a worker aborted ("memory allocation of N bytes failed", ...).
        let tail: Vec<&str> = s.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    });
    Worker { start: range.start, child, lines, stderr }
}

/// Follow a worker to its end, counting panics into `report`.
fn follow(plan: &Plan, t: &Target, mut w: Worker, report: &mut Report) -> End {
    let mut last = w.start;
    loop {
        match w.lines.recv_timeout(plan.timeout) {
            Ok(line) => {
                let mut words = line.splitn(4, ' ');
                match (words.next(), words.next().and_then(|n| n.parse::<u64>().ok())) {
                    (Some("done"), Some(_)) => {
                        let _ = w.child.wait();
                        return End::Done;
                    }
                    (Some("at" | "try"), Some(i)) => last = i,
                    (Some("panic"), Some(i)) => {
                        report.panics += 1;
                        let file = words.next().unwrap_or("-");
                        let what = words.next().unwrap_or("");
                        println!("{}: PANIC at input {i} ({file}): {what}", t.name);
                    }
                    _ => {}
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = w.child.kill();
                let _ = w.child.wait();
                let why = format!("no progress for {:?}", plan.timeout);
                return End::Died { last, why };
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = w.child.wait().map(|s| s.to_string()).unwrap_or_default();
                let stderr = w.stderr.join().unwrap_or_default();
                return End::Died { last, why: format!("{status}: {stderr}") };
            }
        }
    }
}

fn fuzz_target(plan: &Plan, t: &'static Target, n: u64) -> Report {
    let start = Instant::now();
    let mut report = Report::default();
    let mut next = 0;
    while next < n {
        let end = follow(plan, t, spawn(plan, t, next..n, false), &mut report);
        let End::Died { last, why } = end else { break };
        // Rerun from the last report with every input announced: the last one announced
        // before the worker dies again is the one that killed it.
        let stop = n.min(last + REPORT_EVERY + 1);
        match follow(plan, t, spawn(plan, t, last..stop, true), &mut report) {
            End::Died { last: culprit, why: again } => {
                report.crashes += 1;
                let input = Inputs::new(t, &plan.corpus, plan.seed).get(culprit);
                let file = save(&plan.crashes, t.name, "crash", &input)
                    .map(|f| f.display().to_string())
                    .unwrap_or_else(|| "-".into());
                println!("{}: CRASH at input {culprit} ({file}): {again}", t.name);
                next = culprit + 1;
            }
            End::Done => {
                println!("{}: worker died ({why}) but inputs {last}..{stop} pass alone", t.name);
                next = stop;
            }
        }
    }
    report.inputs = n;
    report.elapsed = start.elapsed();
    report
}

/// Fuzz `targets` with `total` inputs shared by weight; whether nothing was found.
fn run(plan: &Plan, targets: &[&'static Target], total: u64, jobs: usize) -> bool {
    let weights: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
    let mut queue: Vec<(&'static Target, u64)> = targets
        .iter()
        .map(|t| (*t, (total * u64::from(t.weight)).div_ceil(weights.max(1))))
        .collect();
    queue.reverse();
    println!(
        "fuzzing {} targets, {total} inputs, seed {}, {jobs} at a time; crashes go to {}",
        targets.len(),
        plan.seed,
        plan.crashes.display()
    );
    let start = Instant::now();
    let queue = Mutex::new(queue);
    let reports = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let Some((t, n)) = queue.lock().pop() else { break };
                    let r = fuzz_target(plan, t, n);
                    let secs = r.elapsed.as_secs_f64();
                    println!(
                        "{:<14} {:>11} inputs in {:>8.1} s ({:>9.0}/s), {} panics, {} crashes",
                        t.name,
                        r.inputs,
                        secs,
                        r.inputs as f64 / secs.max(1e-9),
                        r.panics,
                        r.crashes
                    );
                    reports.lock().push(r);
                }
            });
        }
    });
    let reports = reports.into_inner();
    let inputs: u64 = reports.iter().map(|r| r.inputs).sum();
    let found: u64 = reports.iter().map(|r| r.panics + r.crashes).sum();
    println!("total: {inputs} inputs in {:.1} s, {found} failures", start.elapsed().as_secs_f64());
    found == 0
}

// === replay ===

fn replay(target: Option<&str>, capped: bool, paths: &[PathBuf]) -> ExitCode {
    let targets: Vec<&Target> = match target {
        Some(n) => match fuzzing::target(n) {
            Some(t) => vec![t],
            None => {
                eprintln!("no target {n}");
                return ExitCode::from(2);
            }
        },
        None => TARGETS.iter().collect(),
    };
    let mut files = Vec::new();
    for p in paths {
        match std::fs::read_dir(p) {
            Ok(entries) => files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path())),
            Err(_) => files.push(p.clone()),
        }
    }
    files.sort();
    for f in &files {
        let input = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                return ExitCode::from(2);
            }
        };
        for t in &targets {
            let bound = fuzzing::memory_bound(t, input.len());
            println!("{} through {} (memory bound {bound} bytes)", f.display(), t.name);
            if capped {
                let _ = ALLOC.set_limit(ALLOC.allocated() + bound);
            }
            (t.run)(&input);
            let _ = ALLOC.set_limit(usize::MAX);
        }
    }
    println!("{} files passed", files.len());
    ExitCode::SUCCESS
}
