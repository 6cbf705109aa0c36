//! Governance transactions: proposals, approvals by a majority of the admin
//! organisations, and the changes they carry out, on real sled storage.

use super::*;
use trellis_genesis::{GenesisAccount, GenesisOrganisation};
use trellis_types::governance::MAX_PROPOSAL_LIFETIME_MS;

const ADMIN_B: &str = "admin-b/ops";
const ADMIN_C: &str = "admin-c/ops";

/// The dev genesis with two more admin organisations: three in all, so a
/// change needs two.
fn three_admins() -> Env {
    let mut genesis = Genesis::dev();
    for id in ["admin-b", "admin-c"] {
        let label = format!("{id}/ops");
        genesis.organisations.push(GenesisOrganisation {
            id: id.into(),
            name: id.into(),
            roles: vec![Role::Admin],
            accounts: vec![GenesisAccount {
                key: pk(&label),
                org_admin: true,
                label,
            }],
        });
    }
    genesis.validate().expect("a valid genesis");
    Env::with_genesis(&genesis)
}

fn approve(proposal: Hash) -> Payload {
    Payload::System(SystemOp::Approve { proposal })
}

fn add_organisation(id: &str, roles: &[Role], admin_key: PublicKey) -> Change {
    Change::AddOrganisation {
        id: id.into(),
        name: format!("{id} Ltd"),
        roles: roles.to_vec(),
        admin_key,
    }
}

fn set_roles(org: &str, roles: &[Role]) -> Change {
    Change::SetRoles {
        org: org.into(),
        roles: roles.to_vec(),
    }
}

fn kinds(receipt: &Receipt) -> Vec<&str> {
    receipt.events.iter().map(|e| e.kind.as_str()).collect()
}

/// An attribute of the receipt's first event, the proposal's.
fn attribute<'a>(receipt: &'a Receipt, name: &str) -> &'a str {
    let event = &receipt.events[0];
    event
        .attributes
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{} has no {name}", event.kind))
}

fn open_proposal(env: &Env, id: &Hash) -> Option<Proposal> {
    read(&env.storage, &keys::proposal(id)).expect("readable state")
}

fn roles_of(env: &Env, org: &str) -> Vec<Role> {
    organisation(&env.storage, org)
        .expect("readable state")
        .expect("a member")
        .roles
}

#[test]
fn a_sole_admin_organisation_admits_an_organisation_at_once_and_its_key_then_sends() {
    let env = Env::new();
    let newcomer = KeyPair::from_seed([40; 32]);
    let proposal = tx(
        ADMIN,
        0,
        propose(add_organisation(
            "supplier-t4",
            &[Role::Supplier],
            newcomer.public(),
        )),
    );
    let receipts = env.commit(std::slice::from_ref(&proposal));
    assert_success(&receipts[0]);
    assert_eq!(
        kinds(&receipts[0]),
        ["proposal_opened", "account_added", "organisation_added"]
    );
    assert_eq!(
        attribute(&receipts[0], "proposal"),
        proposal.hash().to_hex()
    );
    assert_eq!(attribute(&receipts[0], "passed"), "true");
    assert_eq!(open_proposal(&env, &proposal.hash()), None);
    assert_eq!(
        organisation(&env.storage, "supplier-t4").unwrap(),
        Some(Organisation {
            id: "supplier-t4".into(),
            name: "supplier-t4 Ltd".into(),
            roles: vec![Role::Supplier],
        })
    );
    assert_eq!(
        env.account(&newcomer.public()),
        Some(AccountRecord {
            org: "supplier-t4".into(),
            org_admin: true,
            nonce: 0,
        })
    );

    // Its admin key sends, and adds the organisation's other keys.
    let second = KeyPair::from_seed([41; 32]).public();
    let receipts = env.commit(&[tx_by(&newcomer, 0, add_key(second, false))]);
    assert_success(&receipts[0]);
    assert_eq!(env.account(&second).unwrap().org, "supplier-t4");
}

#[test]
fn a_change_waits_for_a_majority_of_the_admin_organisations() {
    let env = three_admins();
    let proposal = tx(
        ADMIN,
        0,
        propose(set_roles("supplier-t1", &[Role::Supplier, Role::Bank])),
    );
    let id = proposal.hash();
    let receipts = env.commit(&[proposal]);
    assert_success(&receipts[0]);
    assert_eq!(kinds(&receipts[0]), ["proposal_opened"]);
    assert_eq!(
        (
            attribute(&receipts[0], "approvals"),
            attribute(&receipts[0], "needed"),
            attribute(&receipts[0], "passed")
        ),
        ("1", "2", "false")
    );
    let open = open_proposal(&env, &id).expect("open");
    assert_eq!(open.approvals, ["consortium"]);
    assert_eq!(open.proposer, "consortium");
    assert_eq!(roles_of(&env, "supplier-t1"), [Role::Supplier]);

    // Another account of the same organisation, a non-admin, an unknown id:
    // none of them moves it.
    let second_admin = KeyPair::from_seed([42; 32]);
    env.commit(&[tx(ADMIN, 1, add_key(second_admin.public(), false))]);
    let receipts = env.commit(&[
        tx_by(&second_admin, 0, approve(id)),
        tx(T1, 0, approve(id)),
        tx(ADMIN_B, 0, approve(Hash([9; 32]))),
    ]);
    assert_eq!(failure_code(&receipts[0]), "already_approved");
    assert_eq!(failure_code(&receipts[1]), "not_admin");
    assert_eq!(failure_code(&receipts[2]), "proposal_not_found");
    assert_eq!(
        open_proposal(&env, &id).expect("still open").approvals,
        ["consortium"]
    );

    // The second admin organisation makes the majority.
    let receipts = env.commit(&[tx(ADMIN_B, 1, approve(id))]);
    assert_success(&receipts[0]);
    assert_eq!(kinds(&receipts[0]), ["proposal_approved", "roles_set"]);
    assert_eq!(attribute(&receipts[0], "passed"), "true");
    assert_eq!(roles_of(&env, "supplier-t1"), [Role::Supplier, Role::Bank]);
    assert_eq!(open_proposal(&env, &id), None);

    // Carried out once: the third approval finds nothing open.
    let receipts = env.commit(&[tx(ADMIN_C, 0, approve(id))]);
    assert_eq!(failure_code(&receipts[0]), "proposal_not_found");
}

#[test]
fn approvals_lapse_at_the_proposals_expiry() {
    let env = three_admins();
    let head = env.storage.head().unwrap().timestamp_ms;
    let proposal = Transaction {
        chain_id: CHAIN_ID.into(),
        sender: pk(ADMIN),
        nonce: 0,
        expires_at_ms: expiry(),
        // Blocks are a second apart: open for the next block only.
        payload: Payload::System(SystemOp::Propose {
            change: set_roles("supplier-t1", &[]),
            expires_at_ms: head + 2_000,
        }),
    }
    .sign(&dev_account(ADMIN));
    env.commit(std::slice::from_ref(&proposal));
    let receipts = env.commit(&[tx(ADMIN_B, 0, approve(proposal.hash()))]);
    assert_eq!(failure_code(&receipts[0]), "proposal_expired");
    assert_eq!(roles_of(&env, "supplier-t1"), [Role::Supplier]);
}

#[test]
fn proposals_that_could_not_be_carried_out_are_refused_at_once() {
    let env = Env::new();
    let fresh = || KeyPair::from_seed([43; 32]).public();
    let next = env.next().timestamp_ms;
    let with_expiry = |nonce, expires_at_ms| {
        tx(
            ADMIN,
            nonce,
            Payload::System(SystemOp::Propose {
                change: set_roles("supplier-t1", &[Role::Supplier, Role::Bank]),
                expires_at_ms,
            }),
        )
    };
    let cases = [
        (with_expiry(0, next), "bad_expiry"),
        (
            with_expiry(1, next + MAX_PROPOSAL_LIFETIME_MS + 1),
            "bad_expiry",
        ),
        (
            tx(
                ADMIN,
                2,
                propose(add_organisation("Supplier T4", &[Role::Supplier], fresh())),
            ),
            "invalid_org_id",
        ),
        (
            tx(
                ADMIN,
                3,
                propose(add_organisation("supplier-t4", &[], fresh())),
            ),
            "invalid_roles",
        ),
        (
            tx(
                ADMIN,
                4,
                propose(add_organisation(
                    "supplier-t4",
                    &[Role::Bank, Role::Supplier],
                    fresh(),
                )),
            ),
            "invalid_roles",
        ),
        (
            tx(
                ADMIN,
                5,
                propose(add_organisation("supplier-t1", &[Role::Supplier], fresh())),
            ),
            "org_exists",
        ),
        (
            tx(
                ADMIN,
                6,
                propose(add_organisation("supplier-t4", &[Role::Supplier], pk(T1))),
            ),
            "key_exists",
        ),
        (
            tx(
                ADMIN,
                7,
                propose(add_organisation(
                    "supplier-t4",
                    &[Role::Supplier],
                    PublicKey([0; 32]),
                )),
            ),
            "invalid_key",
        ),
        (
            tx(
                ADMIN,
                8,
                propose(Change::AddOrganisation {
                    id: "supplier-t4".into(),
                    name: " ".into(),
                    roles: vec![Role::Supplier],
                    admin_key: fresh(),
                }),
            ),
            "empty_name",
        ),
        (
            tx(
                ADMIN,
                9,
                propose(set_roles("supplier-t9", &[Role::Supplier])),
            ),
            "org_not_found",
        ),
        (
            tx(ADMIN, 10, propose(set_roles("consortium", &[Role::Bank]))),
            "last_admin",
        ),
        (
            tx(
                ACME,
                0,
                propose(set_roles("core-acme", &[Role::CoreEnterprise, Role::Admin])),
            ),
            "not_admin",
        ),
    ];
    let block: Vec<SignedTransaction> = cases.iter().map(|(t, _)| t.clone()).collect();
    let receipts = env.commit(&block);
    for ((t, code), receipt) in cases.iter().zip(&receipts) {
        assert_eq!(failure_code(receipt), *code, "{:?}", t.tx.payload);
        assert_eq!(open_proposal(&env, &t.hash()), None);
    }
    assert_eq!(organisation(&env.storage, "supplier-t4").unwrap(), None);
    assert_eq!(roles_of(&env, "consortium"), [Role::Admin]);
}

#[test]
fn a_change_that_no_longer_applies_fails_when_it_would_pass_and_stays_open() {
    let env = three_admins();
    let key = KeyPair::from_seed([44; 32]).public();
    let proposal = tx(
        ADMIN,
        0,
        propose(add_organisation("supplier-t4", &[Role::Supplier], key)),
    );
    let id = proposal.hash();
    env.commit(&[proposal]);
    // Meanwhile the key became another organisation's account.
    env.commit(&[tx(T1, 0, add_key(key, false))]);

    let receipts = env.commit(&[tx(ADMIN_B, 0, approve(id))]);
    assert_eq!(failure_code(&receipts[0]), "key_exists");
    assert_eq!(organisation(&env.storage, "supplier-t4").unwrap(), None);
    assert_eq!(
        open_proposal(&env, &id).expect("still open").approvals,
        ["consortium"]
    );
}

#[test]
fn a_suspended_organisation_sends_nothing_until_its_roles_are_given_back() {
    let env = Env::new();
    let receipts = env.commit(&[tx(ADMIN, 0, propose(set_roles("supplier-t1", &[])))]);
    assert_eq!(kinds(&receipts[0]), ["proposal_opened", "roles_set"]);
    assert_inadmissible_here(
        &env,
        tx(T1, 0, remark(b"suspended")),
        Inadmissible::Suspended("supplier-t1".into()),
    );

    let receipts = env.commit(&[tx(
        ADMIN,
        1,
        propose(set_roles("supplier-t1", &[Role::Supplier])),
    )]);
    assert_success(&receipts[0]);
    assert_success(&env.commit(&[tx(T1, 0, remark(b"back"))])[0]);
}

#[test]
fn approvals_of_organisations_that_lost_the_admin_role_do_not_count() {
    let env = three_admins();
    // admin-b proposes, then loses the role by a change consortium and admin-c make.
    let first = tx(
        ADMIN_B,
        0,
        propose(set_roles("supplier-t1", &[Role::Supplier, Role::Bank])),
    );
    let demote = tx(ADMIN, 0, propose(set_roles("admin-b", &[Role::Bank])));
    env.commit(&[first.clone(), demote.clone()]);
    let receipts = env.commit(&[tx(ADMIN_C, 0, approve(demote.hash()))]);
    assert_eq!(kinds(&receipts[0]), ["proposal_approved", "roles_set"]);

    // Two admin organisations are left, so two are needed; admin-b's approval is void.
    let receipts = env.commit(&[tx(ADMIN, 1, approve(first.hash()))]);
    assert_eq!(
        (
            attribute(&receipts[0], "approvals"),
            attribute(&receipts[0], "needed"),
            attribute(&receipts[0], "passed")
        ),
        ("1", "2", "false")
    );
    assert_eq!(roles_of(&env, "supplier-t1"), [Role::Supplier]);
    let receipts = env.commit(&[tx(ADMIN_C, 1, approve(first.hash()))]);
    assert_eq!(kinds(&receipts[0]), ["proposal_approved", "roles_set"]);
    assert_eq!(roles_of(&env, "supplier-t1"), [Role::Supplier, Role::Bank]);
}

/// `bad` is not admissible in the next block of `env`.
fn assert_inadmissible_here(env: &Env, bad: SignedTransaction, reason: Inadmissible) {
    let block = [bad];
    match execute_block(&env.vm, &env.storage, &env.next(), &block, &hashes(&block)) {
        Err(BlockError::Inadmissible {
            index: 0,
            reason: got,
        }) => assert_eq!(got, reason),
        Err(e) => panic!("expected an inadmissible transaction, got {e}"),
        Ok(_) => panic!("a block carrying {:?} was accepted", block[0]),
    }
}

#[test]
fn the_consortium_revokes_a_members_stolen_key_and_gives_it_a_new_admin_key() {
    let env = three_admins();
    let stolen = pk(T1);
    let fresh = KeyPair::from_seed([45; 32]);
    let revoke = tx(ADMIN, 0, propose(Change::RemoveAccount { key: stolen }));
    let rekey = tx(
        ADMIN,
        1,
        propose(Change::AddAccount {
            org: "supplier-t1".into(),
            key: fresh.public(),
            org_admin: true,
        }),
    );
    env.commit(&[revoke.clone(), rekey.clone()]);
    let receipts = env.commit(&[
        tx(ADMIN_B, 0, approve(revoke.hash())),
        tx(ADMIN_B, 1, approve(rekey.hash())),
    ]);
    assert_eq!(
        kinds(&receipts[0]),
        ["proposal_approved", "account_removed"]
    );
    assert_eq!(kinds(&receipts[1]), ["proposal_approved", "account_added"]);
    assert_eq!(env.account(&stolen), None);
    assert_eq!(
        env.account(&fresh.public()),
        Some(AccountRecord {
            org: "supplier-t1".into(),
            org_admin: true,
            nonce: 0,
        })
    );

    // The stolen key sends nothing; the new one acts as the organisation's admin.
    assert_inadmissible_here(
        &env,
        tx(T1, 0, remark(b"thief")),
        Inadmissible::UnknownSender(stolen),
    );
    let clerk = KeyPair::from_seed([46; 32]).public();
    assert_success(&env.commit(&[tx_by(&fresh, 0, add_key(clerk, false))])[0]);
}

#[test]
fn account_changes_that_could_not_be_made_are_refused_at_once() {
    let env = Env::new();
    let unknown = KeyPair::from_seed([47; 32]).public();
    let add = |org: &str, key| {
        propose(Change::AddAccount {
            org: org.into(),
            key,
            org_admin: false,
        })
    };
    let cases = [
        (
            tx(ADMIN, 0, propose(Change::RemoveAccount { key: pk(ADMIN) })),
            "self_removal",
        ),
        (
            tx(ADMIN, 1, propose(Change::RemoveAccount { key: unknown })),
            "account_not_found",
        ),
        (tx(ADMIN, 2, add("supplier-t9", unknown)), "org_not_found"),
        (
            tx(ADMIN, 3, add("supplier-t1", pk("supplier-t2/ops"))),
            "key_exists",
        ),
    ];
    let block: Vec<SignedTransaction> = cases.iter().map(|(t, _)| t.clone()).collect();
    let receipts = env.commit(&block);
    for ((t, code), receipt) in cases.iter().zip(&receipts) {
        assert_eq!(failure_code(receipt), *code, "{:?}", t.tx.payload);
    }
    assert_eq!(env.account(&unknown), None);
    assert_eq!(
        env.account(&pk("supplier-t2/ops")).unwrap().org,
        "supplier-t2"
    );
}
