//! `vesta-chaos --schedules N --seed S`: runs N fault schedules (seeds S, S+1, …) against fresh
//! multi-process clusters and prints, for each, what it did and what the checks found; exits non-zero if
//! any schedule found a linearizability violation, a lost acknowledged write or a key that came back.
//! `scripts/chaos.sh` builds and runs it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use vesta_chaos::{run, save_failure, Schedule};

#[derive(Parser)]
#[command(about = "Seeded fault schedules against a Vesta cluster, histories checked for linearizability")]
struct Args {
    /// How many schedules to run.
    #[arg(long, default_value_t = 10)]
    schedules: u64,
    /// The first seed; schedule i uses seed + i. A failing seed replays with `--schedules 1 --seed S`.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the load of each schedule runs, in ms.
    #[arg(long, default_value_t = 10_000)]
    load_ms: u64,
    /// Where the history and report of a failing schedule are kept.
    #[arg(long, default_value = "chaos-failures")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let (mut passed, mut failed) = (0u64, Vec::new());
    let (mut ops, mut unknown, mut violations, mut lost, mut returned) = (0, 0, 0, 0, 0);
    for i in 0..args.schedules {
        let schedule = Schedule::from_seed(args.seed + i, args.load_ms);
        eprintln!("[{}/{}] {}", i + 1, args.schedules, schedule.describe());
        let t = Instant::now();
        match run(&schedule) {
            Ok(outcome) => {
                ops += outcome.ops;
                unknown += outcome.unknown;
                violations += outcome.violations;
                lost += outcome.lost;
                returned += outcome.returned;
                println!(
                    "seed {}: {} ops ({} unknown outcomes), {} linearizability violations, {} undecided, {} \
                     acknowledged writes lost, {} deleted/expired keys returned — {} in {:.0?}",
                    outcome.seed,
                    outcome.ops,
                    outcome.unknown,
                    outcome.violations,
                    outcome.undecided,
                    outcome.lost,
                    outcome.returned,
                    if outcome.passed() { "ok" } else { "FAILED" },
                    t.elapsed()
                );
                if !outcome.passed() {
                    if let Some(report) = &outcome.report {
                        println!("{report}");
                    }
                    match save_failure(&args.out, &outcome) {
                        Ok(dir) => println!("history and report kept in {}", dir.display()),
                        Err(e) => println!("could not keep the history: {e}"),
                    }
                    println!("replay: scripts/chaos.sh --schedules 1 --seed {}", outcome.seed);
                    failed.push(outcome.seed);
                } else {
                    passed += 1;
                }
            }
            Err(e) => {
                println!("seed {}: could not run: {e}", schedule.seed);
                failed.push(schedule.seed);
            }
        }
    }
    println!(
        "{} schedules in {:.0?}: {passed} passed, {} failed{}; {ops} ops ({unknown} unknown outcomes), {violations} \
         linearizability violations, {lost} acknowledged writes lost, {returned} deleted/expired keys returned",
        args.schedules,
        started.elapsed(),
        failed.len(),
        if failed.is_empty() { String::new() } else { format!(" (seeds {failed:?})") },
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
