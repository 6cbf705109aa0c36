//! Consortium members: organisations, their roles and their account keys.

use crate::crypto::PublicKey;
use serde::{Deserialize, Serialize};

/// An organisation's stable identifier, e.g. `core-acme`.
pub type OrgId = String;

/// What an organisation may do on the chain.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Issues receivables and settles them at maturity.
    CoreEnterprise,
    /// Holds, splits, transfers and finances receivables.
    Supplier,
    /// Finances receivables.
    Bank,
    /// Reads everything, changes nothing.
    Regulator,
    /// Consortium administration: members, limits, contracts.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::CoreEnterprise,
        Role::Supplier,
        Role::Bank,
        Role::Regulator,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::CoreEnterprise => "core_enterprise",
            Role::Supplier => "supplier",
            Role::Bank => "bank",
            Role::Regulator => "regulator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Organisation {
    pub id: OrgId,
    pub name: String,
    /// Sorted, without duplicates.
    pub roles: Vec<Role>,
}

impl Organisation {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// An account key and the organisation it acts for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Account {
    pub key: PublicKey,
    pub org: OrgId,
    /// May add and remove keys of its own organisation.
    pub org_admin: bool,
}
