//! What can go wrong, sorted into classes that each have their own exit
//! code, so a script can tell "the node said no" from "the contract said no"
//! from "nobody answered" without reading the message.
//!
//! | exit | class | when |
//! | --- | --- | --- |
//! | 0 | — | success |
//! | 1 | `other` | anything else (an answer that does not decode, a proof that does not check, ...) |
//! | 2 | `usage` | bad arguments: clap's own errors, and amounts, dates, rates, hashes the CLI refuses |
//! | 3 | `rejected` | the node refused the request (admission: `unknown_sender`, `bad_signature`, ...) |
//! | 4 | `failed` | committed, but execution failed: the contract's code (`not_holder`, `invoice_used`, ...) |
//! | 5 | `commit_timeout` | admitted but not seen committed within `--timeout` |
//! | 6 | `unreachable` | no answer from any node (connection refused, timeouts), or only 5xx after retries |
//! | 7 | `key` | a key or password file missing, unreadable, malformed, encrypted without a password, ... |
//! | 8 | `not_found` | no such transaction, block, piece or contract |
//! | 9 | `regression` | `trellis bench`: committed operations per second below `--min-ops` |
//! | 10 | `dropped` | admitted, then dropped from the mempool uncommitted (`expired`, `nonce_used`, ...) |
//! | 130 | `interrupted` | Ctrl-C (SIGINT) or SIGTERM |

use serde_json::{Value, json};
use trellis_sdk::api::DropReason;
use trellis_sdk::keys::KeyError;

/// The class of an error; its exit code is [`Class::exit_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Other,
    Usage,
    Rejected,
    Failed,
    CommitTimeout,
    Unreachable,
    Key,
    NotFound,
    Regression,
    Dropped,
    Interrupted,
}

impl Class {
    pub fn exit_code(self) -> i32 {
        match self {
            Class::Other => 1,
            Class::Usage => 2,
            Class::Rejected => 3,
            Class::Failed => 4,
            Class::CommitTimeout => 5,
            Class::Unreachable => 6,
            Class::Key => 7,
            Class::NotFound => 8,
            Class::Regression => 9,
            Class::Dropped => 10,
            Class::Interrupted => 130,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::Other => "other",
            Class::Usage => "usage",
            Class::Rejected => "rejected",
            Class::Failed => "failed",
            Class::CommitTimeout => "commit_timeout",
            Class::Unreachable => "unreachable",
            Class::Key => "key",
            Class::NotFound => "not_found",
            Class::Regression => "regression",
            Class::Dropped => "dropped",
            Class::Interrupted => "interrupted",
        }
    }
}

/// An error as the CLI reports it: a class, the node's or the contract's
/// code when there is one, a message, and an optional hint for what to do.
#[derive(Debug, Clone)]
pub struct CliError {
    pub class: Class,
    pub code: Option<String>,
    pub message: String,
    pub hint: Option<String>,
    /// The transaction concerned, when one was submitted.
    pub tx_hash: Option<String>,
}

impl CliError {
    pub fn new(class: Class, message: impl Into<String>) -> CliError {
        CliError {
            class,
            code: None,
            message: message.into(),
            hint: None,
            tx_hash: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(Class::Usage, message)
    }

    pub fn other(message: impl Into<String>) -> CliError {
        CliError::new(Class::Other, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_code(mut self, code: impl Into<String>) -> CliError {
        self.code = Some(code.into());
        self
    }

    pub fn exit_code(&self) -> i32 {
        self.class.exit_code()
    }

    /// What stderr shows: `error[code]: message`, then the hint.
    pub fn render(&self) -> String {
        let mut out = match &self.code {
            Some(code) => format!("error[{code}]: {}", self.message),
            None => format!("error: {}", self.message),
        };
        if let Some(tx) = &self.tx_hash {
            out.push_str(&format!("\n  transaction: {tx}"));
        }
        if let Some(hint) = &self.hint {
            out.push_str(&format!("\n  hint: {hint}"));
        }
        out
    }

    /// The one JSON document `--output json` prints on stdout for an error.
    pub fn to_json(&self) -> Value {
        json!({
            "error": {
                "class": self.class.name(),
                "exit_code": self.exit_code(),
                "code": self.code,
                "message": self.message,
                "hint": self.hint,
                "tx_hash": self.tx_hash,
            }
        })
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl From<trellis_sdk::Error> for CliError {
    fn from(e: trellis_sdk::Error) -> CliError {
        use trellis_sdk::Error as E;
        let message = e.to_string();
        let code = e.code().map(str::to_owned);
        let (class, hint, tx_hash) = match &e {
            E::Rejected { status, code, .. }
                if *status == 404
                    || code == "not_found"
                    || code == "contract_not_found" =>
            {
                (Class::NotFound, None, None)
            }
            E::Rejected { code, .. } => (Class::Rejected, rejection_hint(code), None),
            E::Failed { receipt, .. } => (Class::Failed, None, Some(receipt.tx.to_hex())),
            E::CommitTimeout { tx_hash } => (
                Class::CommitTimeout,
                Some(format!(
                    "it may still commit: look it up later with `trellis tx {tx_hash}`, or wait longer with --timeout"
                )),
                Some(tx_hash.to_hex()),
            ),
            E::Dropped { tx_hash, reason } => (
                Class::Dropped,
                Some(match reason {
                    DropReason::Expired => "it expired before a block took it: send it again".into(),
                    DropReason::NonceUsed => {
                        "another transaction of this key used its nonce: is the key used elsewhere?".into()
                    }
                    DropReason::SenderRemoved => "this key's account was removed".into(),
                }),
                Some(tx_hash.to_hex()),
            ),
            E::Transport { .. } => (
                Class::Unreachable,
                Some(
                    "is a node running there? Start a dev node with `cargo run -p trellis-node -- --dev`, or point --node / TRELLIS_NODE at one".into(),
                ),
                None,
            ),
            E::Server { .. } => (
                Class::Unreachable,
                Some("the node is failing; its log says more".into()),
                None,
            ),
            E::Key(k) => return key_error(k),
            E::Config(_) => (Class::Usage, None, None),
            E::Proof(_) => (
                Class::Other,
                Some("the node's answer is not what the validators committed: ask another node".into()),
                None,
            ),
            E::Decode(_) => (Class::Other, None, None),
        };
        CliError {
            class,
            code,
            message,
            hint,
            tx_hash,
        }
    }
}

fn rejection_hint(code: &str) -> Option<String> {
    let hint = match code {
        "unknown_sender" => {
            "this key is not an account of any member organisation: an admin of your organisation must add it first"
        }
        "read_only_sender" => {
            "this key's organisation is a regulator, which reads the chain and sends no transactions"
        }
        "bad_signature" => "the signature does not verify: is the key file the one registered?",
        "wrong_chain" => "the node serves another chain than the transaction was signed for",
        "expired" | "expiry_too_far" => "check this machine's clock",
        "mempool_full" | "sender_queue_full" | "org_share_full" | "too_many_streams" => {
            "the node is busy: try again later"
        }
        _ => return None,
    };
    Some(hint.into())
}

/// A key problem as a `key` class error with a stable code.
pub fn key_error(e: &KeyError) -> CliError {
    let (code, hint) = match e {
        KeyError::Io { .. } => ("key_file", None),
        KeyError::Exists(_) => (
            "key_exists",
            Some("choose another file name; an existing key is never overwritten"),
        ),
        KeyError::Malformed(_) => (
            "key_malformed",
            Some("expected PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes"),
        ),
        KeyError::NotEd25519(_) => (
            "key_not_ed25519",
            Some("make an ed25519 key: `trellis keys new` or `openssl genpkey -algorithm ed25519`"),
        ),
        KeyError::PasswordNeeded => (
            "password_needed",
            Some("give --password-file FILE or set TRELLIS_KEY_PASSWORD"),
        ),
        KeyError::WrongPassword => ("wrong_password", None),
        KeyError::Encode(_) => ("key_encode", None),
    };
    CliError {
        class: Class::Key,
        code: Some(code.into()),
        message: e.to_string(),
        hint: hint.map(str::to_owned),
        tx_hash: None,
    }
}

impl From<KeyError> for CliError {
    fn from(e: KeyError) -> CliError {
        key_error(&e)
    }
}

impl From<crate::amount::AmountError> for CliError {
    fn from(e: crate::amount::AmountError) -> CliError {
        CliError::usage(e.to_string())
    }
}

impl From<crate::when::WhenError> for CliError {
    fn from(e: crate::when::WhenError) -> CliError {
        CliError::usage(e.to_string())
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
