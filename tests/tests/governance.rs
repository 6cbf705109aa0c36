//! Governance on a running dev node, through the SDK: the consortium admits
//! organisations and suspends them by a majority of its admin
//! organisations, and what it admits takes part at once.

use std::time::Duration;
use trellis_genesis::{Genesis, dev_account};
use trellis_node::node::now_ms;
use trellis_receivables as rcv;
use trellis_sdk::{Client, Committed, Error};
use trellis_tests::{DEADLINE, DevNode};
use trellis_types::{Address, Bytes, Change, KeyPair, Payload, PublicKey, Role, SystemOp};

const OPEN_FOR: Duration = Duration::from_secs(3_600);

fn client_with(node: &DevNode, key: KeyPair) -> Client {
    Client::builder()
        .endpoint(node.url(""))
        .signer(key)
        .commit_timeout(DEADLINE)
        .build()
        .expect("a client builds")
}

fn member(node: &DevNode, org: &str) -> Client {
    client_with(node, dev_account(&format!("{org}/ops")))
}

fn admit(id: &str, roles: &[Role], admin_key: PublicKey) -> Change {
    Change::AddOrganisation {
        id: id.into(),
        name: format!("{id} Ltd"),
        roles: roles.to_vec(),
        admin_key,
    }
}

/// An attribute of the commit's first event: the proposal's.
fn attribute<'a>(committed: &'a Committed, name: &str) -> &'a str {
    let event = &committed.events()[0];
    event
        .attributes
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{} has no {name}", event.kind))
}

fn refusal(result: Result<impl std::fmt::Debug, Error>) -> (u16, String) {
    match result {
        Err(Error::Rejected { status, code, .. }) => (status, code),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Waits for an admitted transaction's commit.
async fn commit(pending: trellis_sdk::Result<trellis_sdk::PendingTx>) -> Committed {
    pending.expect("admitted").wait().await.expect("committed")
}

fn remark() -> Payload {
    Payload::System(SystemOp::Remark {
        data: Bytes(b"governance test".to_vec()),
    })
}

fn receivables_address() -> Address {
    Genesis::dev()
        .contracts
        .iter()
        .find(|c| c.name == "receivables")
        .expect("the dev genesis deploys the receivables contract")
        .address()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consortium_admits_and_suspends_members_by_a_majority_of_its_admins() {
    let node = DevNode::start().await.expect("dev node");
    let consortium = member(&node, "consortium");

    // The dev chain's sole admin organisation admits a second: alone, it is
    // the majority, so that passes at once. Then a third needs both.
    let (admin_b, admin_c) = (KeyPair::from_seed([61; 32]), KeyPair::from_seed([62; 32]));
    let committed = commit(
        consortium
            .propose(admit("admin-b", &[Role::Admin], admin_b.public()), OPEN_FOR)
            .await,
    )
    .await;
    assert_eq!(attribute(&committed, "passed"), "true");
    let committed = commit(
        consortium
            .propose(admit("admin-c", &[Role::Admin], admin_c.public()), OPEN_FOR)
            .await,
    )
    .await;
    assert_eq!(attribute(&committed, "passed"), "false");
    let committed = commit(
        client_with(&node, admin_b.clone())
            .approve(committed.tx_hash)
            .await,
    )
    .await;
    assert_eq!(attribute(&committed, "passed"), "true");

    // Three admin organisations now: admitting a tier-4 supplier needs two.
    let newcomer = KeyPair::from_seed([63; 32]);
    let proposed = commit(
        consortium
            .propose(
                admit("supplier-t4", &[Role::Supplier], newcomer.public()),
                OPEN_FOR,
            )
            .await,
    )
    .await;
    assert_eq!(
        [
            attribute(&proposed, "approvals"),
            attribute(&proposed, "needed"),
            attribute(&proposed, "passed")
        ],
        ["1", "2", "false"]
    );
    let id = proposed.tx_hash;

    // Any member reads what is open; the newcomer is no member yet.
    let t1 = member(&node, "supplier-t1");
    let open = t1.proposals(None, 100).await.expect("listed").proposals;
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].id, open[0].approvals_counted, open[0].needed),
        (id, 1, 2)
    );
    let newcomer_client = client_with(&node, newcomer.clone());
    assert_eq!(
        refusal(newcomer_client.submit(remark()).await),
        (401, "unknown_account".into()),
        "its client's first signed read (its nonce) is refused"
    );

    // A second admin organisation approves: the organisation is admitted.
    let approved = commit(client_with(&node, admin_b).approve(id).await).await;
    let kinds: Vec<&str> = approved.events().iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["proposal_approved", "account_added", "organisation_added"]
    );
    assert_eq!(t1.proposal(&id).await.expect("read"), None);

    // Its key sends at once, and tier 1 pays it with part of a receivable.
    newcomer_client
        .submit(remark())
        .await
        .expect("admitted")
        .wait()
        .await
        .expect("the newcomer's transaction commits");
    let address = receivables_address();
    let root = member(&node, "core-acme")
        .receivables(address)
        .issue(&rcv::Issue {
            to: "supplier-t1".into(),
            amount: 1_000_000,
            currency: "CNY".into(),
            maturity_ms: now_ms() + 3_600_000,
            invoice_hash: trellis_sdk::invoice_hash(b"INV-GOV-1"),
            terms: "net 30".into(),
        })
        .await
        .expect("issued")
        .value;
    let t1_receivables = t1.receivables(address);
    t1_receivables.accept(root).await.expect("accepted");
    let split = t1_receivables
        .split(&rcv::Split {
            piece: root,
            parts: vec![("supplier-t4".into(), 250_000)],
        })
        .await
        .expect("split to the newcomer")
        .value;
    let piece = newcomer_client
        .receivables(address)
        .piece(split[0])
        .await
        .expect("the newcomer sees its piece");
    assert_eq!(
        (piece.piece.holder.as_str(), piece.piece.amount),
        ("supplier-t4", 250_000)
    );

    // Suspended by two admin organisations, it neither sends nor reads; its
    // piece stays where it is.
    let suspension = commit(
        consortium
            .propose(
                Change::SetRoles {
                    org: "supplier-t4".into(),
                    roles: vec![],
                },
                OPEN_FOR,
            )
            .await,
    )
    .await;
    commit(
        client_with(&node, admin_c)
            .approve(suspension.tx_hash)
            .await,
    )
    .await;
    assert_eq!(
        refusal(newcomer_client.submit(remark()).await),
        (403, "suspended".into())
    );
    assert_eq!(
        refusal(newcomer_client.receivables(address).piece(split[0]).await),
        (403, "suspended".into())
    );
    let regulator = member(&node, "regulator").receivables(address);
    assert_eq!(
        regulator.piece(split[0]).await.expect("read").piece.holder,
        "supplier-t4"
    );
}
