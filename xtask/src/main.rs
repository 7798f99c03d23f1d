//! `cargo xtask <command>`: the project's own tasks.
//!
//! - `engine start [--port N] [--nodes N]`: start the long-lived test engine (OpenSearch 2.19 in a
//!   JVM, see `testing/engine/`) detached and print its URL.
//! - `engine run [--port N] [--nodes N]`: a private engine in the foreground, stopped with this
//!   command (Ctrl-C, or its terminal closing).
//! - `engine stop`, `engine status`.
//! - `engine check [--nodes N]`: REST smoke test of the engine (with N >= 3, failover too).
//! - `test`, `demo`, `bench`: run against `ELASTICSEARCH_URL`, the running engine, or a private
//!   engine started for the run (see [`engine::ensure_engine`]).

mod engine;
mod engine_check;

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  engine start [--port N] [--nodes N]   start the test engine (detached) and print its URL
  engine run [--port N] [--nodes N]     run a private engine until this command ends (Ctrl-C)
  engine stop                           stop the engine of `engine start`
  engine status                         print whether it runs, and its URL
  engine check [--nodes N]              smoke-test the engine's REST API (N >= 3: failover too)
  test                                  run the test suite against an engine
  demo                                  run the demo against an engine
  bench                                 run the benchmarks against an engine

ELASTICSEARCH_URL, when set, names an engine to use instead of starting one.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["engine", "start", rest @ ..] => {
            let opts = engine_options(rest)?;
            let url = engine::start(&opts)?;
            println!("{url}");
            Ok(ExitCode::SUCCESS)
        }
        ["engine", "run", rest @ ..] => {
            let opts = engine_options(rest)?;
            let guard = engine::start_attached(&opts)?;
            for (n, url) in guard.node_urls().iter().enumerate() {
                eprintln!("engine: node {} at {url}", n + 1);
            }
            eprintln!("engine: running until this command ends (Ctrl-C)");
            println!("{}", guard.url());
            // The engine watches this process and exits with it, however it ends.
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        ["engine", "stop"] => {
            if engine::stop()? {
                eprintln!("engine: stopped");
            } else {
                eprintln!("engine: not running");
            }
            Ok(ExitCode::SUCCESS)
        }
        ["engine", "status"] => {
            match engine::status()? {
                engine::EngineStatus::External { url } => {
                    println!("external: {url} ({})", engine::URL_ENV)
                }
                engine::EngineStatus::Running { pid, url } => {
                    println!("running: {url} (pid {pid})")
                }
                engine::EngineStatus::NotAnswering { pid, url } => println!(
                    "not answering: pid {pid} is alive{}",
                    url.map(|u| format!(", url {u}")).unwrap_or_default()
                ),
                engine::EngineStatus::Stopped => println!("stopped"),
            }
            Ok(ExitCode::SUCCESS)
        }
        ["engine", "check", rest @ ..] => {
            let opts = engine_options(rest)?;
            engine_check::run(opts.nodes)?;
            Ok(ExitCode::SUCCESS)
        }
        ["test", rest @ ..] => {
            let mut cargo_args = vec!["test", "--workspace"];
            cargo_args.extend_from_slice(rest);
            cargo_with_engine(&cargo_args)
        }
        ["demo", rest @ ..] => {
            let mut cargo_args = vec!["run", "--release", "--example", "quickstart", "--"];
            cargo_args.extend_from_slice(rest);
            cargo_with_engine(&cargo_args)
        }
        ["bench", rest @ ..] => {
            // The micro benchmarks need no engine; their figures are read by the example.
            let micro = run_cargo(&["bench", "--bench", "codec", "--", "--noplot"], None)?;
            if micro != ExitCode::SUCCESS {
                return Ok(micro);
            }
            let mut cargo_args = vec!["run", "--release", "--example", "bench", "--"];
            cargo_args.extend_from_slice(rest);
            cargo_with_engine(&cargo_args)
        }
        [] | ["help"] | ["-h"] | ["--help"] => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("xtask: unknown command: {}\n\n{USAGE}", args.join(" "));
            Ok(ExitCode::from(2))
        }
    }
}

/// Runs `cargo <args>` with `ELASTICSEARCH_URL` naming an engine: the one the environment
/// names, the one `engine start` left running, or a private one stopped when cargo is done.
fn cargo_with_engine(args: &[&str]) -> Result<ExitCode> {
    let (url, guard) = engine::ensure_engine()?;
    eprintln!("xtask: engine at {url}");
    let code = run_cargo(args, Some(&url));
    if let Some(guard) = guard {
        guard.stop()?;
    }
    code
}

/// Runs `cargo <args>` in the workspace root, with `ELASTICSEARCH_URL` when given.
fn run_cargo(args: &[&str], engine_url: Option<&str>) -> Result<ExitCode> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = std::process::Command::new(cargo);
    command.args(args).current_dir(engine::workspace_root());
    if let Some(url) = engine_url {
        command.env(engine::URL_ENV, url);
    }
    let status = command
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn engine_options(args: &[&str]) -> Result<engine::EngineOptions> {
    let mut opts = engine::EngineOptions::default();
    let mut it = args.iter();
    while let Some(&arg) = it.next() {
        let mut value = || {
            it.next()
                .copied()
                .with_context(|| format!("{arg} needs a value"))
        };
        match arg {
            "--port" => opts.port = Some(value()?.parse().context("--port")?),
            "--nodes" => opts.nodes = value()?.parse().context("--nodes")?,
            _ => bail!("unknown option for `engine start`: {arg}"),
        }
    }
    Ok(opts)
}
