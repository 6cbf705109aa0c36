//! What every command gets from the global options: clients for the node,
//! the signer (loaded only by commands that sign), the receivables contract.

use crate::cli::GlobalArgs;
use crate::error::{CliError, Result};
use crate::output::note;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;
use trellis_sdk::keys::KeyError;
use trellis_sdk::{Client, Receivables};
use trellis_types::{Address, KeyPair};

/// One HTTP request's limit (the commit wait is `--timeout`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The receivables contract the dev and local genesis deploy.
pub fn dev_contract_address() -> Address {
    trellis_genesis::Genesis::dev()
        .contracts
        .iter()
        .find(|c| c.name == "receivables")
        .map(|c| c.address())
        .expect("the embedded dev genesis deploys the receivables contract")
}

/// A dev account label as written (`core-acme/ops`, or just `core-acme`).
pub fn dev_label(label: &str) -> String {
    if label.contains('/') {
        label.to_owned()
    } else {
        format!("{label}/ops")
    }
}

pub struct Ctx {
    pub global: GlobalArgs,
    /// `--key` came from the command line (not TRELLIS_KEY).
    pub key_from_flag: bool,
}

impl Ctx {
    pub fn json(&self) -> bool {
        self.global.output == crate::cli::OutputFormat::Json
    }

    pub fn endpoints(&self) -> Vec<String> {
        urls(&self.global.nodes)
    }

    pub fn contract(&self) -> Address {
        self.global.contract.unwrap_or_else(dev_contract_address)
    }

    fn builder(&self) -> Result<trellis_sdk::ClientBuilder> {
        let mut builder = Client::builder()
            .endpoints(self.endpoints())
            .request_timeout(REQUEST_TIMEOUT)
            .commit_timeout(self.global.timeout);
        if let Some(path) = &self.global.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| CliError::usage(format!("--ca-cert {}: {e}", path.display())))?;
            builder = builder.root_certificate(pem);
        }
        let Some(path) = &self.global.genesis else {
            return Ok(builder);
        };
        let genesis = trellis_genesis::Genesis::load(path)
            .map_err(|e| CliError::usage(format!("--genesis {}: {e}", path.display())))?;
        Ok(builder
            .chain_id(genesis.chain_id.clone())
            .validators(genesis.validator_keys()))
    }

    /// A client for reads: it signs its requests with the configured key,
    /// if any, which a node that asks who reads (`[api] access = "members"`)
    /// needs.
    pub fn reader(&self) -> Result<Client> {
        let builder = self.builder()?;
        Ok(match self.signer()? {
            Some(key) => builder.signer(key),
            None => builder,
        }
        .build()?)
    }

    /// A client that signs with the configured key.
    pub fn writer(&self) -> Result<Client> {
        let key = self.signer()?.ok_or_else(|| {
            CliError::usage("this command signs a transaction: give --key FILE (or TRELLIS_KEY)")
                .with_hint("on a dev chain, --dev-account ORG/ops signs with a public dev key")
        })?;
        Ok(self.builder()?.signer(key).build()?)
    }

    pub fn receivables(&self, client: &Client) -> Receivables {
        client.receivables(self.contract())
    }

    /// The configured signer, if any: `--dev-account`, else `--key`/TRELLIS_KEY.
    pub fn signer(&self) -> Result<Option<KeyPair>> {
        if let Some(label) = &self.global.dev_account {
            if self.key_from_flag {
                return Err(CliError::usage(
                    "give either --key or --dev-account, not both",
                ));
            }
            let label = dev_label(label);
            note(format!(
                "warning: signing as {label} with its INSECURE public dev key (dev and local chains only)"
            ));
            return Ok(Some(trellis_genesis::dev_account(&label)));
        }
        match &self.global.key {
            Some(path) => Ok(Some(load_key(path, self.global.password_file.as_deref())?)),
            None => Ok(None),
        }
    }
}

/// Loads a key file, asking for its password only if it is encrypted.
pub fn load_key(path: &Path, password_file: Option<&Path>) -> Result<KeyPair> {
    match trellis_sdk::keys::load(path, None) {
        Err(KeyError::PasswordNeeded) => {
            let password = existing_password(password_file, path)?;
            Ok(trellis_sdk::keys::load(path, Some(password.as_bytes()))?)
        }
        other => Ok(other?),
    }
}

/// The password of a key being read: --password-file, TRELLIS_KEY_PASSWORD, or a prompt.
pub fn existing_password(password_file: Option<&Path>, key: &Path) -> Result<String> {
    if let Some(file) = password_file {
        return read_password_file(file);
    }
    if let Ok(password) = std::env::var("TRELLIS_KEY_PASSWORD") {
        return Ok(password);
    }
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("password for {}: ", key.display())).map_err(
            |e| {
                CliError::new(
                    crate::error::Class::Key,
                    format!("reading the password: {e}"),
                )
            },
        );
    }
    Err(KeyError::PasswordNeeded.into())
}

/// The password for a key file being written: --new-password-file,
/// TRELLIS_NEW_KEY_PASSWORD, or a prompt (twice).
pub fn new_password(password_file: Option<&Path>) -> Result<String> {
    let password = if let Some(file) = password_file {
        read_password_file(file)?
    } else if let Ok(password) = std::env::var("TRELLIS_NEW_KEY_PASSWORD") {
        password
    } else if std::io::stdin().is_terminal() {
        let read = |prompt: &str| {
            rpassword::prompt_password(prompt).map_err(|e| {
                CliError::new(
                    crate::error::Class::Key,
                    format!("reading the password: {e}"),
                )
            })
        };
        let first = read("new password: ")?;
        if read("again: ")? != first {
            return Err(
                CliError::new(crate::error::Class::Key, "the two passwords differ")
                    .with_code("password_mismatch"),
            );
        }
        first
    } else {
        return Err(CliError::new(
            crate::error::Class::Key,
            "--encrypt needs a password for the new file",
        )
        .with_code("password_needed")
        .with_hint("give --new-password-file FILE or set TRELLIS_NEW_KEY_PASSWORD"));
    };
    if password.is_empty() {
        return Err(
            CliError::new(crate::error::Class::Key, "the password is empty")
                .with_code("password_needed"),
        );
    }
    Ok(password)
}

/// The first line of a password file.
fn read_password_file(file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        CliError::new(
            crate::error::Class::Key,
            format!("password file {}: {e}", file.display()),
        )
        .with_code("password_file")
    })?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// URLs as given on the command line, trimmed, empty entries dropped.
pub fn urls(given: &[String]) -> Vec<String> {
    given
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect()
}
