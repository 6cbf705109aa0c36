//! Who sees what through the queries: each member what concerns it, a
//! regulator everything. Runs on the Rust code, and on the built module
//! (`visibility_holds_on_the_built_module`).

mod common;

use common::*;
use trellis_receivables::*;

/// A receivable of CORE's, taken by T1, split to T2 and T3, with BANK's
/// offer on T3's piece: `(root, [t2, t3, t1's rest])`.
fn paper(c: &mut Chain) -> (PieceId, Vec<PieceId>) {
    let root = c.active(T1, 1_000 * UNIT, "INV-V");
    let kids = c.split(T1, root, &[(T2, 300 * UNIT), (T3, 200 * UNIT)]);
    let terms = c.rate_terms(500, 3 * DAY);
    c.call::<_, ()>(
        BANK,
        "offer_financing",
        &OfferFinancing {
            piece: kids[1],
            terms,
        },
    );
    (root, kids)
}

fn sees_piece(c: &mut Chain, org: &str, id: PieceId) -> bool {
    match c.query_as::<_, PieceView>(org, "piece", &IdRef { id }) {
        Ok(view) => {
            assert_eq!(view.piece.id, id);
            true
        }
        Err(e) => {
            assert_eq!(e.code, "not_found", "{org} piece {id}: {}", e.message);
            false
        }
    }
}

fn check_visibility(c: &mut Chain) {
    let (root, kids) = paper(c);
    let (t2, t3, t1) = (kids[0], kids[1], kids[2]);

    // A piece: its holder, its issuer, the bank offering on it, a regulator.
    for (org, id, seen) in [
        (T2, t2, true),
        (T2, t3, false),
        (T2, t1, false),
        (T2, root, false),
        (T3, t3, true),
        (T3, t2, false),
        (T1, t1, true),
        (T1, root, true),
        (T1, t2, false),
        (CORE, t2, true),
        (CORE, t3, true),
        (CORE2, t3, false),
        (BANK, t3, true),
        (BANK, t2, false),
        (BANK2, t3, false),
        (ADMIN, t1, false),
        (REGULATOR, t2, true),
        (REGULATOR, root, true),
    ] {
        assert_eq!(sees_piece(c, org, id), seen, "{org} sees piece {id}");
    }

    // Its lineage: where a visible piece came from, back to the root.
    let lineage: Lineage = c.query_as(T3, "lineage", &IdRef { id: t3 }).unwrap();
    let path: Vec<PieceId> = lineage.path.iter().map(|v| v.piece.id).collect();
    assert_eq!(path, vec![t3, root]);
    assert_eq!(lineage.issuer, CORE);
    let refused = c
        .query_as::<_, Lineage>(T3, "lineage", &IdRef { id: t2 })
        .unwrap_err();
    assert_eq!(refused.code, "not_found");

    // A root's record: whoever sees its root piece.
    assert!(
        c.query_as::<_, Root>(T1, "root", &IdRef { id: root })
            .is_ok()
    );
    assert!(
        c.query_as::<_, Root>(CORE, "root", &IdRef { id: root })
            .is_ok()
    );
    let refused = c
        .query_as::<_, Root>(T2, "root", &IdRef { id: root })
        .unwrap_err();
    assert_eq!(refused.code, "not_found");

    // Holdings: one's own only.
    let own = ByHolder {
        org: T2.into(),
        after: None,
        limit: None,
    };
    let held: Vec<PieceView> = c.query_as(T2, "pieces_by_holder", &own).unwrap();
    assert_eq!(held.iter().map(|v| v.piece.id).collect::<Vec<_>>(), [t2]);
    let refused = c
        .query_as::<_, Vec<PieceView>>(T3, "pieces_by_holder", &own)
        .unwrap_err();
    assert_eq!(refused.code, "not_visible");
    assert!(
        c.query_as::<_, Vec<PieceView>>(REGULATOR, "pieces_by_holder", &own)
            .is_ok()
    );

    // A whole tree: its issuer and regulators.
    let tree = RootRef { root };
    let pieces: Vec<PieceView> = c.query_as(CORE, "tree", &tree).unwrap();
    assert_eq!(pieces.len(), 4);
    for org in [T1, T2, BANK, CORE2] {
        let refused = c
            .query_as::<_, Vec<PieceView>>(org, "tree", &tree)
            .unwrap_err();
        assert_eq!(refused.code, "not_found", "{org} reads the tree");
        let page = TreePage {
            root,
            after: None,
            limit: None,
        };
        let refused = c
            .query_as::<_, Vec<PieceView>>(org, "tree_page", &page)
            .unwrap_err();
        assert_eq!(refused.code, "not_found", "{org} reads a tree page");
    }

    // Credit figures: the issuer, banks, admins, regulators.
    for (org, seen) in [
        (CORE, true),
        (BANK, true),
        (ADMIN, true),
        (REGULATOR, true),
        (CORE2, false),
        (T1, false),
    ] {
        for method in ["outstanding", "credit_limit"] {
            let answer = c.query_as::<_, u128>(org, method, &cny(CORE));
            match answer {
                Ok(_) => assert!(seen, "{org} reads {method}"),
                Err(e) => {
                    assert!(!seen, "{org} is refused {method}");
                    assert_eq!(e.code, "not_visible");
                }
            }
        }
    }

    // By invoice: banks and regulators find any root, an issuer its own;
    // another core enterprise learns nothing, a supplier is refused.
    let by_invoice = InvoiceRef {
        hash: invoice("INV-V"),
    };
    for (org, found) in [
        (BANK, true),
        (REGULATOR, true),
        (CORE, true),
        (CORE2, false),
    ] {
        let answer: Option<Root> = c.query_as(org, "by_invoice", &by_invoice).unwrap();
        assert_eq!(answer.map(|r| r.id), found.then_some(root), "{org}");
    }
    let refused = c
        .query_as::<_, Option<Root>>(T1, "by_invoice", &by_invoice)
        .unwrap_err();
    assert_eq!(refused.code, "not_visible");

    // The parameters are everyone's.
    assert!(c.query_as::<_, Params>(T3, "params", &()).is_ok());

    // Raw keys, read with their proofs: a (root) piece's record where the
    // piece is visible, the parameters; the rest a regulator's.
    let root_key = [b"r/".as_slice(), &root.to_be_bytes()].concat();
    let invoice_key = [b"i/".as_slice(), &invoice("INV-V")].concat();
    for (org, key, readable) in [
        (T2, piece_key(t2), true),
        (T2, piece_key(t3), false),
        (BANK, piece_key(t3), true),
        (BANK2, piece_key(t3), false),
        (T1, root_key.clone(), true),
        (T2, root_key.clone(), false),
        (T2, piece_key(999), false),
        (T2, [piece_key(t2), vec![0]].concat(), false),
        (T3, b"cfg".to_vec(), true),
        (T1, invoice_key.clone(), false),
        (REGULATOR, invoice_key, true),
        (REGULATOR, piece_key(t3), true),
    ] {
        let answer: bool = c.query_as(org, "may_read", &key).unwrap();
        assert_eq!(answer, readable, "{org} may read {key:?}");
    }
}

#[test]
fn each_member_sees_what_concerns_it_and_a_regulator_everything() {
    check_visibility(&mut Chain::new());
}

#[test]
fn visibility_holds_on_the_built_module() {
    check_visibility(&mut Chain::on_wasm());
}

#[test]
fn a_bank_sees_a_piece_once_asked_and_keeps_seeing_what_it_financed() {
    let mut c = Chain::new();
    let id = c.active(T1, 1_000 * UNIT, "INV-F");
    assert!(!sees_piece(&mut c, BANK, id));
    let terms = c.rate_terms(500, 3 * DAY);
    c.call::<_, ()>(
        BANK,
        "offer_financing",
        &OfferFinancing {
            piece: id,
            terms: terms.clone(),
        },
    );
    assert!(sees_piece(&mut c, BANK, id));
    let financed: Financing = c.call(
        T1,
        "accept_financing",
        &AcceptFinancing {
            piece: id,
            bank: BANK.into(),
            terms,
            payment_ref: "P".into(),
        },
    );
    assert_eq!(financed.bank, BANK);
    assert!(sees_piece(&mut c, BANK, id));
    assert!(!sees_piece(&mut c, BANK2, id));
}
