//! `trellis governance propose|approve|list|show`: changes to the
//! consortium that a majority of its admin organisations approve.

use crate::cli::{ChangeArgs, GovernanceCommand};
use crate::cmd::chain::parse_hash;
use crate::cmd::receivable::commit_json;
use crate::context::Ctx;
use crate::error::{Class, CliError, Result};
use crate::output::{Report, record, table};
use crate::when::format_ms;
use serde_json::json;
use std::time::Duration;
use trellis_sdk::Committed;
use trellis_sdk::api::ProposalInfo;
use trellis_types::{Bytes, Change, Role};

pub async fn run(ctx: &Ctx, command: &GovernanceCommand) -> Result<Report> {
    match command {
        GovernanceCommand::Propose(args) => propose(ctx, args).await,
        GovernanceCommand::Approve { id } => {
            let id = parse_hash("proposal", id)?;
            let committed = ctx.writer()?.approve(id).await?.wait().await?;
            Ok(outcome(&committed, "approved"))
        }
        GovernanceCommand::List => list(ctx).await,
        GovernanceCommand::Show { id } => show(ctx, id).await,
    }
}

async fn propose(ctx: &Ctx, args: &ChangeArgs) -> Result<Report> {
    let (change, lifetime) = change(args)?;
    let committed = ctx
        .writer()?
        .propose(change, lifetime)
        .await?
        .wait()
        .await?;
    Ok(outcome(&committed, "opened"))
}

/// The change `args` ask for, and how long its proposal stays open.
fn change(args: &ChangeArgs) -> Result<(Change, Duration)> {
    // The chain records roles sorted and once each.
    let sorted = |roles: &[Role]| {
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        roles
    };
    Ok(match args {
        ChangeArgs::AddOrganisation {
            id,
            name,
            roles,
            admin_key,
            open,
        } => (
            Change::AddOrganisation {
                id: id.clone(),
                name: name.clone(),
                roles: sorted(roles),
                admin_key: *admin_key,
            },
            open.lifetime,
        ),
        ChangeArgs::SetRoles {
            org, roles, open, ..
        } => (
            Change::SetRoles {
                org: org.clone(),
                roles: sorted(roles),
            },
            open.lifetime,
        ),
        ChangeArgs::UpgradeContract {
            contract,
            wasm,
            open,
        } => {
            let code = std::fs::read(wasm)
                .map_err(|e| CliError::usage(format!("cannot read {}: {e}", wasm.display())))?;
            (
                Change::UpgradeContract {
                    contract: *contract,
                    code: Bytes(code),
                },
                open.lifetime,
            )
        }
        ChangeArgs::AddAccount {
            org,
            key_to_add,
            org_admin,
            open,
        } => (
            Change::AddAccount {
                org: org.clone(),
                key: *key_to_add,
                org_admin: *org_admin,
            },
            open.lifetime,
        ),
        ChangeArgs::RemoveAccount {
            key_to_remove,
            open,
        } => (
            Change::RemoveAccount {
                key: *key_to_remove,
            },
            open.lifetime,
        ),
    })
}

/// What a committed proposal or approval did, from its receipt's first
/// event (`proposal_opened` or `proposal_approved`).
fn outcome(committed: &Committed, verb: &str) -> Report {
    let attribute = |name: &str| {
        committed
            .events()
            .first()
            .and_then(|e| e.attributes.iter().find(|(n, _)| n == name))
            .map_or("", |(_, v)| v.as_str())
    };
    let passed = attribute("passed") == "true";
    let id = attribute("proposal");
    let sentence = format!(
        "proposal {id} ({}) {verb}: {} approval(s) of the {} needed, {}",
        attribute("change"),
        attribute("approvals"),
        attribute("needed"),
        if passed {
            "carried out"
        } else {
            "waiting for more"
        }
    );
    let effects: Vec<&str> = committed
        .events()
        .iter()
        .skip(1)
        .map(|e| e.kind.as_str())
        .collect();
    Report::new(
        format!(
            "{sentence}\n  transaction {} committed at {}:{}",
            committed.tx_hash, committed.height, committed.index
        ),
        json!({
            "proposal": id,
            "change": attribute("change"),
            "approvals": attribute("approvals").parse::<u64>().ok(),
            "needed": attribute("needed").parse::<u64>().ok(),
            "passed": passed,
            "events": effects,
            "transaction": commit_json(committed),
        }),
    )
}

async fn list(ctx: &Ctx) -> Result<Report> {
    let client = ctx.reader()?;
    let mut all: Vec<ProposalInfo> = Vec::new();
    loop {
        let page = client.proposals(all.last().map(|p| &p.id), 100).await?;
        all.extend(page.proposals);
        if page.next_after.is_none() {
            break;
        }
    }
    let mut t = table([
        "PROPOSAL",
        "CHANGE",
        "PROPOSER",
        "APPROVALS",
        "NEEDED",
        "EXPIRES",
    ]);
    for p in &all {
        t.add_row(vec![
            p.id.to_hex(),
            describe(&p.proposal.change),
            p.proposal.proposer.clone(),
            format!(
                "{} ({})",
                p.approvals_counted,
                p.proposal.approvals.join(", ")
            ),
            p.needed.to_string(),
            if p.expired {
                "expired".into()
            } else {
                format_ms(p.proposal.expires_at_ms)
            },
        ]);
    }
    let text = if all.is_empty() {
        "no proposals are open".to_owned()
    } else {
        t.trim_fmt()
    };
    let value = serde_json::to_value(&all).map_err(|e| CliError::other(e.to_string()))?;
    Ok(Report::new(text, json!({ "proposals": value })))
}

async fn show(ctx: &Ctx, id: &str) -> Result<Report> {
    let id = parse_hash("proposal", id)?;
    let Some(p) = ctx.reader()?.proposal(&id).await? else {
        return Err(CliError::new(
            Class::NotFound,
            format!(
                "no proposal {id} is open (never made, already carried out, or not committed yet)"
            ),
        )
        .with_code("proposal_not_found"));
    };
    let text = record([
        ("proposal", p.id.to_hex()),
        ("change", describe(&p.proposal.change)),
        ("proposer", p.proposal.proposer.clone()),
        ("approved by", p.proposal.approvals.join(", ")),
        (
            "approvals",
            format!("{} of {} needed", p.approvals_counted, p.needed),
        ),
        (
            "proposed at height",
            p.proposal.proposed_at_height.to_string(),
        ),
        (
            "expires",
            format!(
                "{}{}",
                format_ms(p.proposal.expires_at_ms),
                if p.expired { " (expired)" } else { "" }
            ),
        ),
    ]);
    let value = serde_json::to_value(&p).map_err(|e| CliError::other(e.to_string()))?;
    Ok(Report::new(text, value))
}

/// A change in a few words.
fn describe(change: &Change) -> String {
    let roles = |roles: &[Role]| {
        roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    match change {
        Change::AddOrganisation {
            id, name, roles: r, ..
        } => format!("admit {id} ({name}) as {}", roles(r)),
        Change::SetRoles { org, roles: r } if r.is_empty() => format!("suspend {org}"),
        Change::SetRoles { org, roles: r } => format!("set {org}'s roles to {}", roles(r)),
        Change::UpgradeContract { contract, code } => {
            format!("upgrade {contract} ({} bytes of code)", code.0.len())
        }
        Change::AddAccount {
            org,
            key,
            org_admin,
        } => format!(
            "give {org} {} key {key}",
            if *org_admin { "admin" } else { "account" }
        ),
        Change::RemoveAccount { key } => format!("revoke key {key}"),
    }
}
