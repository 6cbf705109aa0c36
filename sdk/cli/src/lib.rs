//! The `trellis` command line, built on `trellis-sdk`.
//!
//! - [`cli`]: commands, options and help texts (clap).
//! - [`cmd`]: the commands: keys, receivables, chain reads, events.
//! - [`demo`]: the supply-chain story in one command; [`devnode`] starts a
//!   dev node for it when none answers.
//! - [`bench`]: the load generator: a realistic receivables mix (or
//!   remarks), open loop, measured from committed blocks.
//! - [`amount`] and [`when`]: amounts (`1,000,000.00 CNY`), rates, times
//!   and durations as people write them.
//! - [`output`]: tables for people, one JSON document for programs.
//! - [`error`]: error classes and their exit codes.
//!
//! Results go to stdout; progress, warnings and errors to stderr.

pub mod amount;
pub mod bench;
pub mod cli;
pub mod cmd;
pub mod context;
pub mod demo;
pub mod devnode;
pub mod error;
pub mod output;
pub mod when;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, Command};
use context::Ctx;
use error::{Class, CliError, Result};
use output::{Report, print_stdout};

/// Parses `args`, runs the command and prints its result; returns the exit code.
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = match Cli::command().try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(e) => {
            // --help and --version print to stdout and exit 0; usage errors exit 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    init_logging(cli.global.verbose);
    let ctx = Ctx {
        key_from_flag: matches.value_source("key") == Some(ValueSource::CommandLine),
        global: cli.global.clone(),
    };
    let node_defaulted = matches.value_source("nodes") == Some(ValueSource::DefaultValue);
    // The load generator sends, follows and accounts on two worker threads
    // (its signing has a thread of its own); everything else needs one.
    let runtime = match cli.command {
        Command::Bench(_) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return Class::Other.exit_code();
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(&ctx, &cli.command, node_defaulted) => result,
            () = interrupted() => Err(CliError::new(Class::Interrupted, "interrupted")),
        }
    });
    // Whatever the command left running (an event stream's task) ends here.
    runtime.shutdown_background();
    match result {
        Ok(Some(report)) => {
            if ctx.json() {
                match serde_json::to_string_pretty(&report.json) {
                    Ok(json) => print_stdout(&json),
                    Err(e) => {
                        eprintln!("error: encoding the result as JSON: {e}");
                        return Class::Other.exit_code();
                    }
                }
            } else if !report.text.is_empty() {
                print_stdout(&report.text);
            }
            match report.failure {
                Some(failure) => {
                    eprintln!("{}", failure.render());
                    failure.exit_code()
                }
                None => 0,
            }
        }
        Ok(None) => 0,
        Err(e) => {
            eprintln!("{}", e.render());
            if ctx.json() {
                print_stdout(&e.to_json().to_string());
            }
            e.exit_code()
        }
    }
}

/// Runs one command; `None` when it printed its result itself (streams, completions).
pub async fn run(ctx: &Ctx, command: &Command, node_defaulted: bool) -> Result<Option<Report>> {
    match command {
        Command::Keys(keys @ (cli::KeysCommand::Add { .. } | cli::KeysCommand::Remove { .. })) => {
            cmd::keys::account_op(ctx, keys).await.map(Some)
        }
        Command::Keys(keys) => cmd::keys::run(ctx, keys).map(Some),
        Command::Receivable(r) => cmd::receivable::run(ctx, r).await.map(Some),
        Command::Governance(g) => cmd::governance::run(ctx, g).await.map(Some),
        Command::Tx { hash, verify } => cmd::chain::tx(ctx, hash, *verify).await.map(Some),
        Command::Block { which, verify } => cmd::chain::block(ctx, which, *verify).await.map(Some),
        Command::Status => cmd::chain::status(ctx).await.map(Some),
        Command::Validators => cmd::chain::validators(ctx).await.map(Some),
        Command::Evidence { from_height } => {
            cmd::chain::evidence(ctx, *from_height).await.map(Some)
        }
        Command::Export { out, to_height } => {
            cmd::chain::export(ctx, out, *to_height).await.map(Some)
        }
        Command::Events(args) => cmd::events::run(ctx, args).await,
        Command::Demo(args) => demo::run(ctx, args, node_defaulted).await.map(Some),
        Command::Bench(args) => bench::run(ctx, args, node_defaulted).await.map(Some),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "trellis", &mut out);
            print_stdout(String::from_utf8_lossy(&out).trim_end());
            Ok(None)
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Logs to stderr: RUST_LOG, else warnings (-v info, -vv debug).
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
