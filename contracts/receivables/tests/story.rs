//! The whole life of one receivable, as DESIGN.md tells it.

mod common;

use common::*;
use trellis_receivables::*;

#[test]
fn a_receivable_travels_three_tiers_is_financed_and_settled_to_every_holder() {
    let mut c = Chain::new();
    c.call::<_, ()>(ADMIN, "init", &Params::default());
    c.limit(CORE, 2_000_000 * UNIT);

    // The core firm issues 1,000,000.00 to tier 1 against INV-001.
    let issue = c.issue_args(T1, 1_000_000 * UNIT, "INV-001");
    let maturity = issue.maturity_ms;
    let root: PieceId = c.call(CORE, "issue", &issue);
    assert_eq!(c.piece(root).status, Status::PendingAcceptance);
    assert_eq!(c.outstanding(CORE), 1_000_000 * UNIT);
    c.call::<_, ()>(T1, "accept", &PieceRef { piece: root });

    // Tier 1 pays tier 2 with 400,000.00 of it; keeps 600,000.00.
    let t1_split = c.split(T1, root, &[(T2, 400_000 * UNIT)]);
    let [to_t2, t1_keeps] = t1_split[..] else {
        panic!("two children")
    };
    assert_eq!(c.piece(t1_keeps).piece.amount, 600_000 * UNIT);

    // Tier 2 pays tier 3 with 150,000.00; keeps 250,000.00.
    let t2_split = c.split(T2, to_t2, &[(T3, 150_000 * UNIT)]);
    let [to_t3, t2_keeps] = t2_split[..] else {
        panic!("two children")
    };
    assert_eq!(c.piece(to_t3).piece.depth, 2);

    // Thirty days on, tier 3 discounts its piece at a bank at 3.5 % a year.
    c.advance(30 * DAY);
    let terms = c.rate_terms(350, 2 * DAY);
    c.call::<_, ()>(
        T3,
        "request_financing",
        &RequestFinancing {
            piece: to_t3,
            bank: BANK.into(),
            terms: terms.clone(),
        },
    );
    let financing: Financing = c.call(
        BANK,
        "accept_financing",
        &AcceptFinancing {
            piece: to_t3,
            bank: BANK.into(),
            terms,
            payment_ref: "FB-2023-000417".into(),
        },
    );
    // 150 days to maturity: discount = floor(15,000,000 * 350 * 150 / 3,650,000) = 215,753.
    assert_eq!(financing.price, 15_000_000 - 215_753);
    assert_eq!(financing.seller, T3);
    let financed = c.piece(to_t3);
    assert_eq!(
        (financed.status, financed.piece.holder.as_str()),
        (Status::Financed, BANK)
    );

    // The same invoice cannot back a second receivable.
    let again = c.issue_args(T2, 10_000 * UNIT, "INV-001");
    c.refuse(CORE, "issue", &again, "invoice_used");
    let found: Option<Root> = c.query(
        "by_invoice",
        &InvoiceRef {
            hash: invoice("INV-001"),
        },
    );
    assert_eq!(found.map(|r| r.id), Some(root));

    // Too early to settle; at maturity the core firm pays every holder.
    c.refuse(
        CORE,
        "settle",
        &Settle {
            root,
            payment_ref: "CM-PAY-1".into(),
        },
        "not_matured",
    );
    c.host.set_block(c.host.block().height + 1, maturity);
    let payouts: Vec<Payout> = c.call(
        CORE,
        "settle",
        &Settle {
            root,
            payment_ref: "CM-PAY-1".into(),
        },
    );
    let mut paid: Vec<(String, u128)> = payouts.iter().map(|p| (p.to.clone(), p.amount)).collect();
    paid.sort();
    assert_eq!(
        paid,
        vec![
            (BANK.into(), 150_000 * UNIT),
            (T1.into(), 600_000 * UNIT),
            (T2.into(), 250_000 * UNIT)
        ]
    );
    assert_eq!(c.outstanding(CORE), 0);
    let r: Root = c.query("root", &IdRef { id: root });
    assert_eq!(r.settled, r.face_value);

    // Every piece leads back to the core firm's promise.
    let tree: Vec<PieceView> = c.query("tree", &RootRef { root });
    assert_eq!(tree.len(), 5);
    for v in &tree {
        let l: Lineage = c.query("lineage", &IdRef { id: v.piece.id });
        assert_eq!(l.issuer, CORE);
        assert_eq!(l.path.first().map(|p| p.piece.id), Some(v.piece.id));
        assert_eq!(l.path.last().map(|p| p.piece.id), Some(root));
        assert_eq!(l.path.len(), usize::from(v.piece.depth) + 1);
        assert_eq!(l.root.invoice_hash, invoice("INV-001"));
    }
    let lineage: Lineage = c.query("lineage", &IdRef { id: to_t3 });
    let ids: Vec<PieceId> = lineage.path.iter().map(|p| p.piece.id).collect();
    assert_eq!(ids, vec![to_t3, to_t2, root]);
    for id in [t1_keeps, t2_keeps, to_t3] {
        assert_eq!(c.piece(id).status, Status::Settled);
    }
    let bank_holds: Vec<PieceView> = c.query(
        "pieces_by_holder",
        &ByHolder {
            org: BANK.into(),
            after: None,
            limit: None,
        },
    );
    assert_eq!(
        bank_holds.iter().map(|v| v.piece.id).collect::<Vec<_>>(),
        vec![to_t3]
    );
    assert_eq!(
        bank_holds[0]
            .piece
            .settlement
            .as_ref()
            .map(|s| s.payment_ref.as_str()),
        Some("CM-PAY-1")
    );

    let kinds: Vec<&str> = c.host.events().iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "initialized",
            "credit_limit_set",
            "issued",
            "accepted",
            "split",
            "split",
            "financing_requested",
            "financed",
            "settled"
        ]
    );
}
