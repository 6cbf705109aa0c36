//! Governance: changes to the consortium itself (who its members are, what
//! they may do, the code of its contracts), which take effect once a
//! majority of the organisations holding the admin role approve them
//! (Fabric's default `MAJORITY Admins` rule for a channel's configuration).
//!
//! An admin organisation proposes a change ([`crate::SystemOp::Propose`]),
//! approving it in the same transaction; others approve it
//! ([`crate::SystemOp::Approve`]); the approval that makes the majority
//! carries the change out in its own transaction. A proposal is known by
//! the hash of the transaction that made it and lapses at its expiry.

use crate::bytes::Bytes;
use crate::crypto::PublicKey;
use crate::member::{OrgId, Role};
use crate::tx::Address;
use serde::{Deserialize, Serialize};

/// The longest a proposal may stay open: 30 days.
pub const MAX_PROPOSAL_LIFETIME_MS: u64 = 30 * 24 * 3_600_000;

/// A change to the consortium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Admits organisation `id` with `roles` (at least one) and its first
    /// account, `admin_key`, an organisation admin that adds the others.
    AddOrganisation {
        id: OrgId,
        name: String,
        /// Sorted in [`Role`] order, without duplicates.
        roles: Vec<Role>,
        admin_key: PublicKey,
    },
    /// Replaces organisation `org`'s roles. None suspends it: its accounts
    /// send nothing and read nothing, its pieces stay where they are.
    SetRoles {
        org: OrgId,
        /// Sorted in [`Role`] order, without duplicates.
        roles: Vec<Role>,
    },
    /// Replaces the code of the contract at `contract`; its address and
    /// stored state stay.
    UpgradeContract { contract: Address, code: Bytes },
    /// Gives organisation `org` account `key`: a new admin key for a member
    /// that lost, or had stolen, the keys that would add it.
    AddAccount {
        org: OrgId,
        key: PublicKey,
        org_admin: bool,
    },
    /// Revokes account `key` of any organisation (a compromised key). Its
    /// next nonce is kept: what it signed never runs again.
    RemoveAccount { key: PublicKey },
}

impl Change {
    /// The change's name, as events and lists show it.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::AddOrganisation { .. } => "add_organisation",
            Change::SetRoles { .. } => "set_roles",
            Change::UpgradeContract { .. } => "upgrade_contract",
            Change::AddAccount { .. } => "add_account",
            Change::RemoveAccount { .. } => "remove_account",
        }
    }
}

/// An open proposal, as the state records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Proposal {
    pub change: Change,
    /// The organisation whose account proposed it.
    pub proposer: OrgId,
    /// The admin organisations that approved it, sorted (the proposer's included).
    pub approvals: Vec<OrgId>,
    pub proposed_at_height: u64,
    /// Unix milliseconds; no approval counts in a block stamped at or after this.
    pub expires_at_ms: u64,
}

/// How many of `admins` admin organisations a change needs: more than half.
pub fn approvals_needed(admins: usize) -> usize {
    admins / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_of_the_admin_organisations_is_needed() {
        let needed: Vec<usize> = (1..=6).map(approvals_needed).collect();
        assert_eq!(needed, [1, 2, 2, 3, 3, 4]);
    }
}
