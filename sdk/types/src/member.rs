//! Consortium members: organisations, their roles and their account keys.

use crate::crypto::PublicKey;
use serde::{Deserialize, Serialize};

/// An organisation's stable identifier, e.g. `core-acme`: see [`is_id`].
pub type OrgId = String;

/// Longest organisation id (or node name) accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Whether `s` is 1..=[`MAX_ID_LEN`] bytes of `[a-z0-9-]` (plus `_` when
/// `underscore`): an organisation id (without), a node name (with).
pub fn is_id(s: &str, underscore: bool) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (underscore && b == b'_')
        })
}

/// Whether `roles` is sorted in [`Role`] order without duplicates, the one
/// form an organisation's roles are recorded in.
pub fn roles_are_canonical(roles: &[Role]) -> bool {
    roles.windows(2).all(|w| w[0] < w[1])
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_canonical_only_sorted_and_without_duplicates() {
        use Role::*;
        assert!(roles_are_canonical(&[]));
        assert!(roles_are_canonical(&[Supplier, Bank, Admin]));
        assert!(!roles_are_canonical(&[Bank, Supplier]));
        assert!(!roles_are_canonical(&[Bank, Bank]));
    }

    #[test]
    fn ids_are_short_lowercase_ascii() {
        assert!(is_id("supplier-t4", false));
        assert!(is_id(&"a".repeat(MAX_ID_LEN), false));
        for bad in [
            "",
            "Supplier",
            "a b",
            "a_b",
            "é",
            &"a".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(!is_id(bad, false), "{bad:?}");
        }
        assert!(is_id("validator_0", true));
    }
}
