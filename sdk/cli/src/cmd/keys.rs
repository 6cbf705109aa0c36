//! `trellis keys new|show|import`: key files, no node needed.

use crate::cli::{Encryption, KeysCommand};
use crate::context::{Ctx, dev_label, existing_password, load_key, new_password};
use crate::error::{Class, CliError, Result};
use crate::output::{Report, record};
use pkcs8::LineEnding;
use pkcs8::der::pem::PemLabel;
use serde_json::json;
use std::path::Path;
use trellis_sdk::keys::{self, KeyError};
use trellis_types::{KeyPair, Payload, SystemOp};

pub fn run(ctx: &Ctx, command: &KeysCommand) -> Result<Report> {
    match command {
        KeysCommand::New { out, encryption } => {
            let key = keys::generate();
            write(&key, out, encryption, "new key")
        }
        KeysCommand::Show { file } => show(ctx, file.as_deref()),
        KeysCommand::Add { .. } | KeysCommand::Remove { .. } => Err(CliError::other(
            "keys add and keys remove submit transactions: run them with `keys::account_op`",
        )),
        KeysCommand::Import {
            input,
            out,
            encryption,
        } => {
            let key = read_any(input, ctx.global.password_file.as_deref())?;
            write(&key, out, encryption, "imported key")
        }
    }
}

/// `keys add` and `keys remove`: an organisation admin manages its own organisation's keys.
pub async fn account_op(ctx: &Ctx, command: &KeysCommand) -> Result<Report> {
    let (op, key, verb) = match command {
        KeysCommand::Add {
            public_key,
            org_admin,
        } => (
            SystemOp::AddKey {
                key: *public_key,
                org_admin: *org_admin,
            },
            *public_key,
            if *org_admin {
                "added as an organisation admin"
            } else {
                "added"
            },
        ),
        KeysCommand::Remove { public_key } => (
            SystemOp::RemoveKey { key: *public_key },
            *public_key,
            "removed",
        ),
        _ => return Err(CliError::other("not an account operation")),
    };
    let client = ctx.writer()?;
    let committed = client.submit(Payload::System(op)).await?.wait().await?;
    let org = client
        .account(&client.signer().unwrap_or(key))
        .await?
        .map(|a| a.org)
        .unwrap_or_default();
    Ok(Report::new(
        format!(
            "account key {key} {verb} ({org})\n  transaction {} committed at {}:{}",
            committed.tx_hash, committed.height, committed.index
        ),
        json!({
            "public_key": key.to_hex(),
            "org": org,
            "action": if matches!(command, KeysCommand::Remove { .. }) { "removed" } else { "added" },
            "org_admin": matches!(command, KeysCommand::Add { org_admin: true, .. }),
            "transaction": crate::cmd::receivable::commit_json(&committed),
        }),
    ))
}

fn write(key: &KeyPair, out: &Path, encryption: &Encryption, what: &str) -> Result<Report> {
    let password = if encryption.encrypt {
        Some(new_password(encryption.new_password_file.as_deref())?)
    } else {
        None
    };
    keys::save(out, key, password.as_deref().map(str::as_bytes))?;
    let public = key.public();
    let pem = keys::public_key_pem(&public)?;
    let encrypted = password.is_some();
    let text = format!(
        "{what} written to {} ({}, readable by its owner only)\n{}\n\n\
         account key (give it to your organisation's admin to register): {public}",
        out.display(),
        if encrypted {
            "password-protected"
        } else {
            "unencrypted"
        },
        record([("public key", public.to_hex())]),
    );
    Ok(Report::new(
        text,
        json!({
            "file": out.display().to_string(),
            "public_key": public.to_hex(),
            "public_key_pem": pem,
            "encrypted": encrypted,
        }),
    ))
}

fn show(ctx: &Ctx, file: Option<&Path>) -> Result<Report> {
    let (key, source, encrypted) = match (file, &ctx.global.dev_account, &ctx.global.key) {
        (Some(file), _, _) => {
            let encrypted = is_encrypted(file);
            (
                load_key(file, ctx.global.password_file.as_deref())?,
                file.display().to_string(),
                encrypted,
            )
        }
        (None, Some(label), _) => {
            let label = dev_label(label);
            crate::output::note(format!(
                "warning: {label}'s dev key is public and INSECURE (dev and local chains only)"
            ));
            (
                trellis_genesis::dev_account(&label),
                format!("dev account {label}"),
                false,
            )
        }
        (None, None, Some(file)) => {
            let encrypted = is_encrypted(file);
            (
                load_key(file, ctx.global.password_file.as_deref())?,
                file.display().to_string(),
                encrypted,
            )
        }
        (None, None, None) => {
            return Err(CliError::usage(
                "which key? give a FILE, --key FILE or --dev-account ORG/ops",
            ));
        }
    };
    let public = key.public();
    let pem = keys::public_key_pem(&public)?;
    let text = format!(
        "{}\n\n{}",
        record([
            ("key", source.clone()),
            ("public key", public.to_hex()),
            (
                "file",
                if encrypted {
                    "password-protected".into()
                } else {
                    "unencrypted".into()
                }
            ),
        ]),
        pem.trim_end()
    );
    Ok(Report::new(
        text,
        json!({
            "source": source,
            "public_key": public.to_hex(),
            "public_key_pem": pem,
            "encrypted": encrypted,
        }),
    ))
}

fn is_encrypted(file: &Path) -> bool {
    std::fs::read_to_string(file)
        .map(|s| s.contains("ENCRYPTED PRIVATE KEY"))
        .unwrap_or(false)
}

/// A key in any form openssl writes: PKCS#8 PEM (encrypted or not) or DER.
fn read_any(input: &Path, password_file: Option<&Path>) -> Result<KeyPair> {
    let bytes = std::fs::read(input).map_err(|source| KeyError::Io {
        path: input.to_owned(),
        source,
    })?;
    let pem = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        String::from_utf8(bytes).map_err(|_| KeyError::Malformed("the PEM is not text".into()))?
    } else if bytes.first() == Some(&0x30) {
        // DER (a SEQUENCE): wrap it as PEM with the label its structure has.
        let label = if pkcs8::PrivateKeyInfo::try_from(bytes.as_slice()).is_ok() {
            pkcs8::PrivateKeyInfo::PEM_LABEL
        } else {
            pkcs8::EncryptedPrivateKeyInfo::PEM_LABEL
        };
        pkcs8::der::pem::encode_string(label, LineEnding::LF, &bytes)
            .map_err(|e| KeyError::Malformed(e.to_string()))?
    } else {
        return Err(KeyError::Malformed(
            "neither PEM nor DER; expected a PKCS#8 private key".into(),
        )
        .into());
    };
    match keys::from_pem(&pem, None) {
        Err(KeyError::PasswordNeeded) => {
            let password = existing_password(password_file, input)?;
            Ok(keys::from_pem(&pem, Some(password.as_bytes()))?)
        }
        Err(KeyError::Malformed(m))
            if pem.contains("BEGIN OPENSSH") || pem.contains("BEGIN EC") =>
        {
            Err(CliError::new(Class::Key, format!("not a PKCS#8 key: {m}"))
                .with_code("key_malformed")
                .with_hint("convert it first: openssl pkcs8 -topk8 -nocrypt -in IN -out OUT"))
        }
        other => Ok(other?),
    }
}
