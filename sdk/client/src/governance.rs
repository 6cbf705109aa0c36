//! Governance: proposing and approving changes to the consortium, and
//! reading the proposals open (`trellis_types::governance`).

use crate::client::{Client, now_ms};
use crate::error::Result;
use crate::submit::PendingTx;
use std::time::Duration;
use trellis_types::api::{ProposalInfo, ProposalList};
use trellis_types::{Change, Hash, Payload, SystemOp};

impl Client {
    /// Proposes `change` for the signer's organisation (an admin
    /// organisation), open for `lifetime` from now (at most 30 days). Its
    /// committed receipt's first event, `proposal_opened`, says whether it
    /// passed at once (`passed`); otherwise other admin organisations
    /// [`Client::approve`] it by the transaction's hash.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, key: trellis_types::PublicKey) -> trellis_sdk::Result<()> {
    /// use trellis_types::{Change, Role};
    /// let change = Change::AddOrganisation {
    ///     id: "supplier-t4".into(),
    ///     name: "Tier Four Parts Ltd".into(),
    ///     roles: vec![Role::Supplier],
    ///     admin_key: key,
    /// };
    /// let pending = client.propose(change, std::time::Duration::from_secs(7 * 86_400)).await?;
    /// println!("proposal {}", pending.tx_hash());
    /// # Ok(()) }
    /// ```
    pub async fn propose(&self, change: Change, lifetime: Duration) -> Result<PendingTx> {
        let lifetime = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        self.submit(Payload::System(SystemOp::Propose {
            change,
            expires_at_ms: now_ms().saturating_add(lifetime),
        }))
        .await
    }

    /// Approves open proposal `proposal` for the signer's organisation; the
    /// approval that makes a majority of the admin organisations carries the
    /// change out in the same transaction.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, id: trellis_types::Hash) -> trellis_sdk::Result<()> {
    /// let committed = client.approve(id).await?.wait().await?;
    /// # Ok(()) }
    /// ```
    pub async fn approve(&self, proposal: Hash) -> Result<PendingTx> {
        self.submit(Payload::System(SystemOp::Approve { proposal }))
            .await
    }

    /// `GET /v1/proposals`: up to `limit` (at most 100) open proposals with
    /// ids above `after`, in id order; `next_after` continues the list.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// for open in client.proposals(None, 100).await?.proposals {
    ///     println!("{} {}: {} of {}", open.id, open.proposal.change.kind(), open.approvals_counted, open.needed);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn proposals(&self, after: Option<&Hash>, limit: usize) -> Result<ProposalList> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(after) = after {
            query.push(("after", after.to_hex()));
        }
        self.get_json("/v1/proposals", &query).await
    }

    /// `GET /v1/proposals/{id}`: an open proposal; `None` if none is open by
    /// that id (never made, carried out already, or not committed yet).
    pub async fn proposal(&self, id: &Hash) -> Result<Option<ProposalInfo>> {
        self.get_json_if_found(&format!("/v1/proposals/{id}")).await
    }
}
