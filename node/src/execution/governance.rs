//! Governance: the consortium's changes to itself, proposed and approved by
//! its admin organisations and carried out by the approval that makes their
//! majority (`trellis_types::governance`; architecture.md, "Governance").
//! Proposals live in the state under [`keys::PROPOSAL`], by the hash of the
//! transaction that made them.

use super::{
    ExecError, Overlay, StateView, StorageError, TxRun, Writes, fail, keys, organisation, read,
};
use crate::storage::Storage;
use trellis_types::api::ProposalInfo;
use trellis_types::codec::{decode, encode};
use trellis_types::governance::{self, MAX_PROPOSAL_LIFETIME_MS};
use trellis_types::{Change, Hash, OrgId, Organisation, Proposal, PublicKey, Role, member};

/// The organisations that hold the admin role: whose majority governs.
fn admin_organisations(view: &StateView, top: &Writes) -> Result<Vec<OrgId>, StorageError> {
    let mut admins = Vec::new();
    let mut after = None;
    while let Some((key, value)) = view.next_under(top, keys::ORGANISATION, after.as_deref())? {
        let org: Organisation = decode(&value).map_err(|e| StorageError::Corrupt {
            what: format!("state record {}: {e}", String::from_utf8_lossy(&key)),
        })?;
        if org.has_role(Role::Admin) {
            admins.push(org.id);
        }
        after = Some(key);
    }
    Ok(admins)
}

/// Up to `limit` open proposals with ids above `after`, in id order, as of
/// the latest committed block (`time_ms` its timestamp).
pub fn open_proposals(
    storage: &Storage,
    after: Option<&Hash>,
    limit: usize,
    time_ms: u64,
) -> Result<Vec<ProposalInfo>, StorageError> {
    let view = StateView::new(storage.clone(), Writes::new());
    let admins = admin_organisations(&view, &Writes::new())?;
    let mut from = after.map(keys::proposal);
    let mut proposals = Vec::new();
    while proposals.len() < limit {
        let Some((key, value)) =
            view.next_under(&Writes::new(), keys::PROPOSAL, from.as_deref())?
        else {
            break;
        };
        let id = key[keys::PROPOSAL.len()..]
            .try_into()
            .map(Hash)
            .map_err(|_| StorageError::Corrupt {
                what: format!("proposal key {key:?} does not end in a hash"),
            })?;
        let proposal = decode(&value).map_err(|e| StorageError::Corrupt {
            what: format!("proposal {id}: {e}"),
        })?;
        proposals.push(proposal_info(&admins, id, proposal, time_ms));
        from = Some(key);
    }
    Ok(proposals)
}

/// Open proposal `id` as of the latest committed block (`time_ms` its timestamp).
pub fn open_proposal(
    storage: &Storage,
    id: &Hash,
    time_ms: u64,
) -> Result<Option<ProposalInfo>, StorageError> {
    let Some(proposal) = read(storage, &keys::proposal(id))? else {
        return Ok(None);
    };
    let view = StateView::new(storage.clone(), Writes::new());
    let admins = admin_organisations(&view, &Writes::new())?;
    Ok(Some(proposal_info(&admins, *id, proposal, time_ms)))
}

fn proposal_info(admins: &[OrgId], id: Hash, proposal: Proposal, time_ms: u64) -> ProposalInfo {
    ProposalInfo {
        id,
        approvals_counted: approvals_counted(admins, &proposal),
        needed: governance::approvals_needed(admins.len()),
        expired: time_ms >= proposal.expires_at_ms,
        proposal,
    }
}

/// How many of `proposal`'s approvals are of organisations in `admins`.
fn approvals_counted(admins: &[OrgId], proposal: &Proposal) -> usize {
    proposal
        .approvals
        .iter()
        .filter(|org| admins.contains(org))
        .count()
}

impl TxRun<'_> {
    pub(super) fn propose(
        &mut self,
        change: &Change,
        expires_at_ms: u64,
    ) -> Result<Result<(), ExecError>, StorageError> {
        if let Err(e) = self.require_admin("propose changes to the consortium")? {
            return Ok(Err(e));
        }
        let now = self.ctx.timestamp_ms;
        if expires_at_ms <= now || expires_at_ms - now > MAX_PROPOSAL_LIFETIME_MS {
            return Ok(Err(fail(
                "bad_expiry",
                format!(
                    "a proposal must expire after the block's time {now} and within {} days of it",
                    MAX_PROPOSAL_LIFETIME_MS / 86_400_000
                ),
            )));
        }
        // A change that could not be carried out now is refused at once
        // (it is checked again when it passes: the state may have moved).
        let mut dry_run = TxRun {
            view: Overlay {
                base: self.view.base,
                writes: Writes::new(),
            },
            events: Vec::new(),
            ..*self
        };
        if let Err(e) = dry_run.carry_out(change)? {
            return Ok(Err(e));
        }
        let proposal = Proposal {
            change: change.clone(),
            proposer: self.sender.org.clone(),
            approvals: vec![self.sender.org.clone()],
            proposed_at_height: self.ctx.height,
            expires_at_ms,
        };
        self.decide(self.tx_hash, proposal, "proposal_opened")
    }

    pub(super) fn approve(&mut self, id: &Hash) -> Result<Result<(), ExecError>, StorageError> {
        if let Err(e) = self.require_admin("approve changes to the consortium")? {
            return Ok(Err(e));
        }
        let Some(mut proposal) = read::<Proposal>(&self.view, &keys::proposal(id))? else {
            return Ok(Err(fail(
                "proposal_not_found",
                format!("no proposal {id} is open"),
            )));
        };
        if self.ctx.timestamp_ms >= proposal.expires_at_ms {
            return Ok(Err(fail(
                "proposal_expired",
                format!(
                    "proposal {id} expired at {}, the block's time is {}",
                    proposal.expires_at_ms, self.ctx.timestamp_ms
                ),
            )));
        }
        let org = &self.sender.org;
        let Err(at) = proposal.approvals.binary_search(org) else {
            return Ok(Err(fail(
                "already_approved",
                format!("{org} has already approved proposal {id}"),
            )));
        };
        proposal.approvals.insert(at, org.clone());
        self.decide(*id, proposal, "proposal_approved")
    }

    /// Carries `proposal` out if a majority of the admin organisations now
    /// approve it (those that lost the role since do not count), or records
    /// it as it stands; `kind` names the event that says which.
    fn decide(
        &mut self,
        id: Hash,
        proposal: Proposal,
        kind: &str,
    ) -> Result<Result<(), ExecError>, StorageError> {
        let admins = admin_organisations(self.view.base, &self.view.writes)?;
        let approving = approvals_counted(&admins, &proposal);
        let needed = governance::approvals_needed(admins.len());
        let passed = approving >= needed;
        self.event(
            kind,
            vec![
                ("proposal".into(), id.to_hex()),
                ("change".into(), proposal.change.kind().into()),
                ("org".into(), self.sender.org.clone()),
                ("approvals".into(), approving.to_string()),
                ("needed".into(), needed.to_string()),
                ("passed".into(), passed.to_string()),
            ],
        );
        let key = keys::proposal(&id);
        if !passed {
            self.view.writes.insert(key, Some(encode(&proposal)));
            return Ok(Ok(()));
        }
        self.view.writes.insert(key, None);
        self.carry_out(&proposal.change)
    }

    fn carry_out(&mut self, change: &Change) -> Result<Result<(), ExecError>, StorageError> {
        match change {
            Change::AddOrganisation {
                id,
                name,
                roles,
                admin_key,
            } => self.add_organisation(id, name, roles, admin_key),
            Change::SetRoles { org, roles } => self.set_roles(org, roles),
            Change::AddAccount {
                org,
                key,
                org_admin,
            } => {
                if organisation(&self.view, org)?.is_none() {
                    return Ok(Err(org_not_found(org)));
                }
                self.add_account(key, org, *org_admin)
            }
            Change::RemoveAccount { key } => self.remove_account(key, None),
            Change::UpgradeContract { contract, code } => self.upgrade(contract, code),
        }
    }

    fn add_organisation(
        &mut self,
        id: &str,
        name: &str,
        roles: &[Role],
        admin_key: &PublicKey,
    ) -> Result<Result<(), ExecError>, StorageError> {
        if !member::is_id(id, false) {
            return Ok(Err(fail(
                "invalid_org_id",
                format!(
                    "organisation id {id:?} is invalid: use 1 to {} lowercase ASCII letters, digits and '-'",
                    member::MAX_ID_LEN
                ),
            )));
        }
        if name.trim().is_empty() {
            return Ok(Err(fail("empty_name", "an organisation needs a name")));
        }
        if roles.is_empty() {
            return Ok(Err(fail(
                "invalid_roles",
                "a new organisation needs at least one role",
            )));
        }
        if let Err(e) = check_roles(roles) {
            return Ok(Err(e));
        }
        if organisation(&self.view, id)?.is_some() {
            return Ok(Err(fail(
                "org_exists",
                format!("{id} is already a member organisation"),
            )));
        }
        let record = Organisation {
            id: id.to_owned(),
            name: name.to_owned(),
            roles: roles.to_vec(),
        };
        if let Err(e) = self.add_account(admin_key, id, true)? {
            return Ok(Err(e));
        }
        self.view
            .writes
            .insert(keys::organisation(id), Some(encode(&record)));
        self.event(
            "organisation_added",
            vec![
                ("org".into(), id.to_owned()),
                ("roles".into(), roles_text(roles)),
                ("key".into(), admin_key.to_hex()),
            ],
        );
        Ok(Ok(()))
    }

    fn set_roles(
        &mut self,
        id: &str,
        roles: &[Role],
    ) -> Result<Result<(), ExecError>, StorageError> {
        if let Err(e) = check_roles(roles) {
            return Ok(Err(e));
        }
        let Some(mut record) = organisation(&self.view, id)? else {
            return Ok(Err(org_not_found(id)));
        };
        let admins = admin_organisations(self.view.base, &self.view.writes)?;
        if admins == [id] && !roles.contains(&Role::Admin) {
            return Ok(Err(fail(
                "last_admin",
                format!("{id} is the last admin organisation: without it no one could govern"),
            )));
        }
        let previous = std::mem::replace(&mut record.roles, roles.to_vec());
        self.view
            .writes
            .insert(keys::organisation(id), Some(encode(&record)));
        self.event(
            "roles_set",
            vec![
                ("org".into(), id.to_owned()),
                ("roles".into(), roles_text(roles)),
                ("previous".into(), roles_text(&previous)),
            ],
        );
        Ok(Ok(()))
    }
}

fn org_not_found(id: &str) -> ExecError {
    fail(
        "org_not_found",
        format!("{id} is not a member organisation"),
    )
}

/// Refuses roles not in their one recorded form.
fn check_roles(roles: &[Role]) -> Result<(), ExecError> {
    if member::roles_are_canonical(roles) {
        Ok(())
    } else {
        Err(fail(
            "invalid_roles",
            "list each role once, in the order core_enterprise, supplier, bank, regulator, admin",
        ))
    }
}

/// Roles as events show them: `supplier,bank`.
fn roles_text(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
