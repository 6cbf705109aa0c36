//! The supply-chain story as signed transactions on a real dev node: issue,
//! accept, split, split again, finance, a refused second issue against the
//! same invoice, and settlement at maturity; checked through receipts, events
//! and contract queries.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::Duration;
use trellis_genesis::{Genesis, dev_account};
use trellis_node::node::now_ms;
use trellis_receivables as rcv;
use trellis_tests::{DevNode, poll};
use trellis_types::{Address, Bytes, Event, Payload, Receipt, ReceiptStatus, Transaction, encode};

const CORE: &str = "core-acme";
const T1: &str = "supplier-t1";
const T2: &str = "supplier-t2";
const T3: &str = "supplier-t3";
const BANK: &str = "bank-first";

/// A dev account that signs contract calls, keeping its own nonce.
struct Member {
    org: &'static str,
    nonce: u64,
}

struct Story {
    node: DevNode,
    contract: Address,
}

impl Story {
    /// Signs and submits `method(args)` as `who`, waits for the commit, returns the receipt.
    async fn call<A: Serialize>(&self, who: &mut Member, method: &str, args: &A) -> Receipt {
        let key = dev_account(&format!("{}/ops", who.org));
        let tx = Transaction {
            chain_id: "trellis-dev".into(),
            sender: key.public(),
            nonce: who.nonce,
            expires_at_ms: now_ms() + 60_000,
            payload: Payload::Call {
                contract: self.contract,
                method: method.into(),
                args: Bytes(encode(args)),
            },
        }
        .sign(&key);
        who.nonce += 1;
        let hash = self.node.submit_ok(&tx).await.expect("admitted");
        self.node
            .wait_committed(&hash)
            .await
            .expect("committed")
            .receipt
    }

    async fn query<A: Serialize, R: Serialize + DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> R {
        #[derive(serde::Deserialize)]
        struct Answer {
            result: Bytes,
        }
        let body = serde_json::json!({ "method": method, "args": Bytes(encode(args)) });
        let answer: Answer = self
            .node
            .as_regulator(
                reqwest::Method::POST,
                &format!("/v1/contracts/{}/query", self.contract),
                body.to_string().into_bytes(),
            )
            .header("content-type", "application/json")
            .send()
            .await
            .expect("query sent")
            .error_for_status()
            .expect("query answered")
            .json()
            .await
            .expect("JSON answer");
        trellis_types::decode(&answer.result).expect("canonical result")
    }
}

fn member(org: &'static str) -> Member {
    Member { org, nonce: 0 }
}

fn succeeded(receipt: &Receipt) -> &[Event] {
    assert_eq!(
        receipt.status,
        ReceiptStatus::Success,
        "{:?}",
        receipt.error
    );
    &receipt.events
}

fn attribute<'a>(event: &'a Event, key: &str) -> Vec<&'a str> {
    event
        .attributes
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Piece ids from a `split` event's `child` attributes (`id:org:amount`), by org.
fn children(event: &Event) -> BTreeMap<String, u64> {
    attribute(event, "child")
        .into_iter()
        .map(|c| {
            let mut parts = c.split(':');
            let id = parts.next().unwrap().parse().unwrap();
            (parts.next().unwrap().to_owned(), id)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supply_chain_story_runs_as_signed_transactions_on_a_dev_node() {
    let node = DevNode::start().await.expect("dev node");
    let contract = Genesis::dev().contracts[0].address();
    let story = Story { node, contract };
    let (mut core, mut t1, mut t2, mut t3, mut bank) = (
        member(CORE),
        member(T1),
        member(T2),
        member(T3),
        member(BANK),
    );

    // 1,000,000.00 CNY to tier 1 against INV-001, maturing in 20 s (the demo
    // chain's acceptance window is 10 s, and maturity must come after it).
    let invoice = *blake3::hash(b"INV-001").as_bytes();
    let maturity_ms = now_ms() + 20_000;
    let issue = rcv::Issue {
        to: T1.into(),
        amount: 100_000_000,
        currency: "CNY".into(),
        maturity_ms,
        invoice_hash: invoice,
        terms: "net 180".into(),
    };
    let receipt = story.call(&mut core, "issue", &issue).await;
    let issued = &succeeded(&receipt)[0];
    assert_eq!(issued.kind, "issued");
    let root: u64 = attribute(issued, "piece")[0].parse().unwrap();

    succeeded(
        &story
            .call(&mut t1, "accept", &rcv::PieceRef { piece: root })
            .await,
    );
    let split = story
        .call(
            &mut t1,
            "split",
            &rcv::Split {
                piece: root,
                parts: vec![(T2.into(), 40_000_000)],
            },
        )
        .await;
    let t1_children = children(&succeeded(&split)[0]);
    let t2_piece = t1_children[T2];
    let t1_rest = t1_children[T1];

    let split = story
        .call(
            &mut t2,
            "split",
            &rcv::Split {
                piece: t2_piece,
                parts: vec![(T3.into(), 15_000_000)],
            },
        )
        .await;
    let t2_children = children(&succeeded(&split)[0]);
    let t3_piece = t2_children[T3];
    let t2_rest = t2_children[T2];

    // Tier 3 finances its piece at the bank at a 3.5 % annual discount.
    let terms = rcv::Terms {
        price: None,
        annual_rate_bps: Some(350),
        expires_ms: now_ms() + 15_000,
    };
    let request = rcv::RequestFinancing {
        piece: t3_piece,
        bank: BANK.into(),
        terms: terms.clone(),
    };
    succeeded(&story.call(&mut t3, "request_financing", &request).await);
    let accept = rcv::AcceptFinancing {
        piece: t3_piece,
        bank: BANK.into(),
        terms,
        payment_ref: "BANK-PAY-1".into(),
    };
    let financed = story.call(&mut bank, "accept_financing", &accept).await;
    assert_eq!(succeeded(&financed)[0].kind, "financed");

    // Financing the same piece again is refused, and so is a second issue on INV-001.
    let again = rcv::OfferFinancing {
        piece: t3_piece,
        terms: rcv::Terms {
            price: Some(14_000_000),
            annual_rate_bps: None,
            expires_ms: now_ms() + 10_000,
        },
    };
    let refused = story.call(&mut bank, "offer_financing", &again).await;
    assert_eq!(refused.status, ReceiptStatus::Failed);
    let refused = story
        .call(
            &mut core,
            "issue",
            &rcv::Issue {
                maturity_ms: now_ms() + 30_000,
                ..issue
            },
        )
        .await;
    assert_eq!(refused.status, ReceiptStatus::Failed);
    assert_eq!(refused.error.as_ref().unwrap().code, "invoice_used");

    // Settling before maturity is refused; at maturity the core firm pays every holder.
    let early = story
        .call(
            &mut core,
            "settle",
            &rcv::Settle {
                root,
                payment_ref: "EARLY".into(),
            },
        )
        .await;
    assert_eq!(early.error.as_ref().unwrap().code, "not_matured");
    poll(
        "block time to pass maturity",
        Duration::from_secs(60),
        || async {
            Ok(
                (story.node.status().await?.height > 0 && now_ms() > maturity_ms + 1_500)
                    .then_some(()),
            )
        },
    )
    .await
    .unwrap();
    let settled = story
        .call(
            &mut core,
            "settle",
            &rcv::Settle {
                root,
                payment_ref: "CORE-PAY-1".into(),
            },
        )
        .await;
    let payouts: BTreeMap<String, String> = attribute(&succeeded(&settled)[0], "payout")
        .into_iter()
        .map(|p| {
            let v: Vec<&str> = p.split(':').collect();
            (v[1].to_owned(), v[2].to_owned())
        })
        .collect();
    assert_eq!(payouts[T1], "60000000");
    assert_eq!(payouts[T2], "25000000");
    assert_eq!(payouts[BANK], "15000000");

    // Every piece traces back to the core firm through its lineage.
    for piece in [root, t1_rest, t2_piece, t2_rest, t3_piece] {
        let lineage: rcv::Lineage = story.query("lineage", &rcv::IdRef { id: piece }).await;
        assert_eq!(lineage.issuer, CORE);
        assert_eq!(
            lineage.path.last().unwrap().piece.id,
            root,
            "piece {piece} leads to the root"
        );
    }
    let outstanding: u128 = story
        .query(
            "outstanding",
            &rcv::CreditRef {
                issuer: CORE.into(),
                currency: "CNY".into(),
            },
        )
        .await;
    assert_eq!(outstanding, 0, "everything issued was settled");
}
