//! `cargo xtask`: developer and CI automation for the xmppd workspace.
//!
//! Subcommands:
//! - `ci [--quick]`: the whole gate CI runs (see [`ci`]); `--quick` skips fmt, clippy and
//!   cargo-deny.
//! - `bench [ARGS…]`: benchmarks, implemented in [`bench`].
//!
//! It deliberately has no argument-parsing dependency: two subcommands do not need one,
//! and keeping xtask light keeps `cargo xtask` fast to build on a cold cache.

mod bench;
mod ci;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let result = match command.as_str() {
        "ci" => ci::run(rest),
        "bench" => bench::run(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(anyhow::anyhow!("unknown xtask command `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci [--quick]   fmt, clippy, cargo deny, build, unit tests, then end-to-end tests
                 (tests/e2e); --quick skips fmt, clippy and cargo deny
  bench [ARGS]   run the benchmarks";
