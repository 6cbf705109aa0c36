//! Running the built `trellis` binary as a test: bounded, with a clean
//! environment, its exit code and both output streams kept.
#![allow(dead_code)]

use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_trellis");
/// Longest any one run may take (the demo waits ~25 s for maturity; a quick
/// bench sets up, waits for maturities and drains, on a debug build).
const RUN_DEADLINE: Duration = Duration::from_secs(240);
/// Environment a developer may have set that would change what the CLI does.
const TRELLIS_ENV: [&str; 8] = [
    "TRELLIS_NODE",
    "TRELLIS_CA_CERT",
    "TRELLIS_KEY",
    "TRELLIS_KEY_PASSWORD",
    "TRELLIS_NEW_KEY_PASSWORD",
    "TRELLIS_OUTPUT",
    "TRELLIS_CONTRACT",
    "TRELLIS_NODE_BIN",
];

/// What a finished `trellis` run left.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{self}");
        self
    }

    /// Stdout as exactly one JSON document (trailing output fails the parse).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{self}"))
    }

    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "{self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trellis {:?} exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

/// `trellis args` with `envs` set and nothing else of ours inherited.
pub fn command(args: &[&str], envs: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in TRELLIS_ENV {
        cmd.env_remove(var);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `cmd` (made by [`command`] from `args`) to completion, bounded; killed if it overruns.
pub async fn finish(mut cmd: tokio::process::Command, args: &[&str]) -> Run {
    let child = cmd.spawn().expect("trellis starts");
    let output = tokio::time::timeout(RUN_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("trellis {args:?} still running after {RUN_DEADLINE:?}"))
        .expect("trellis runs");
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub async fn trellis_env(args: &[&str], envs: &[(&str, &str)]) -> Run {
    finish(command(args, envs), args).await
}

pub async fn trellis(args: &[&str]) -> Run {
    trellis_env(args, &[]).await
}
