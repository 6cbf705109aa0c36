//! The state machine under a small deterministic network: every message is
//! delivered in order, timers fire in time order, blocks carry no transactions.

use super::*;
use std::collections::VecDeque;
use trellis_types::Header;

const CHAIN: &str = "test-chain";

fn timeouts() -> Timeouts {
    Timeouts {
        propose_ms: 100,
        prevote_ms: 50,
        precommit_ms: 50,
        delta_ms: 10,
        idle_block_ms: 0,
    }
}

fn keys(n: usize) -> Vec<KeyPair> {
    (0..n)
        .map(|i| KeyPair::insecure_from_label(&format!("validator-{i}")))
        .collect()
}

/// Validator 0 of four, started at height 1, and the four keys.
fn first_of_four() -> (Vec<KeyPair>, Consensus) {
    let ks = keys(4);
    let set = ValidatorSet::new(ks.iter().map(KeyPair::public).collect()).unwrap();
    let mut node = Consensus::new(
        CHAIN.into(),
        set,
        Some(ks[0].clone()),
        timeouts(),
        1,
        SafetyState::default(),
    );
    node.start();
    (ks, node)
}

fn block(height: u64, round: u64, proposer: PublicKey, salt: u8) -> Block {
    let parent_commit = QuorumCertificate::genesis(Hash::ZERO);
    Block {
        header: Header {
            chain_id: CHAIN.into(),
            height,
            round,
            parent: Hash([salt; 32]),
            tx_root: trellis_types::block::tx_root(&[]),
            parent_commit_hash: parent_commit.hash(),
            receipts_root: Hash::ZERO,
            state_root: Hash::ZERO,
            timestamp_ms: height,
            proposer,
        },
        parent_commit,
        txs: vec![],
    }
}

/// The key, among `ks`, of `set`'s proposer at `height` and `round`.
fn proposer_key(ks: &[KeyPair], set: &ValidatorSet, height: u64, round: u64) -> KeyPair {
    let proposer = set.proposer(height, round);
    ks.iter()
        .find(|k| k.public() == proposer)
        .expect("the keys of the whole set")
        .clone()
}

/// `key`'s proposal of `block` in `round`, without a proof of lock.
/// `key`'s prevote for nil in `round` of height 1.
fn nil_prevote(key: &KeyPair, round: u64) -> Message {
    let data = VoteData {
        chain_id: CHAIN.into(),
        height: 1,
        round,
        kind: VoteKind::Prevote,
        block: None,
    };
    Message::Vote(data.sign(key))
}

fn signed_proposal(key: &KeyPair, block: &Block, round: u64) -> Message {
    let mut p = Proposal {
        block: Arc::new(block.clone()),
        round,
        pol_round: None,
        pol_votes: vec![],
        signature: Signature([0; 64]),
    };
    p.signature = key.sign(&p.data(CHAIN).signing_hash());
    Message::Proposal(Box::new(p))
}

struct Net {
    nodes: Vec<Consensus>,
    /// Nodes that receive and send nothing.
    silent: Vec<bool>,
    /// (deliver to, message)
    inbox: VecDeque<(usize, Message)>,
    /// (node, height, round) blocks requested by BuildBlock, built on the next step.
    builds: VecDeque<(usize, u64, u64)>,
    /// (fire at, sequence, node, height, round, step)
    timers: Vec<(u64, u64, usize, u64, u64, Step)>,
    now: u64,
    seq: u64,
    commits: Vec<Vec<(Block, QuorumCertificate)>>,
    persisted: Vec<Vec<SafetyState>>,
    /// Blocks a node's driver judges invalid.
    invalid: Vec<Hash>,
    /// Votes are lost in transit while set.
    drop_votes: bool,
    /// Precommits of this round are lost in transit.
    drop_precommits_of_round: Option<u64>,
}

impl Net {
    fn new(n: usize) -> Self {
        let keys = keys(n);
        let set = ValidatorSet::new(keys.iter().map(KeyPair::public).collect()).unwrap();
        let nodes = keys
            .into_iter()
            .map(|k| {
                Consensus::new(
                    CHAIN.into(),
                    set.clone(),
                    Some(k),
                    timeouts(),
                    1,
                    SafetyState::default(),
                )
            })
            .collect();
        Net {
            nodes,
            silent: vec![false; n],
            inbox: VecDeque::new(),
            builds: VecDeque::new(),
            timers: vec![],
            now: 0,
            seq: 0,
            commits: vec![vec![]; n],
            persisted: vec![vec![]; n],
            invalid: vec![],
            drop_votes: false,
            drop_precommits_of_round: None,
        }
    }

    /// Crashes every node and restarts it from its last persisted safety record.
    fn restart_all(&mut self) {
        let keys = keys(self.nodes.len());
        let set = self.nodes[0].validators().clone();
        for (i, key) in keys.into_iter().enumerate() {
            let safety = self.persisted[i].last().cloned().unwrap_or_default();
            let height = self.commits[i].len() as u64 + 1;
            self.nodes[i] = Consensus::new(
                CHAIN.into(),
                set.clone(),
                Some(key),
                timeouts(),
                height,
                safety,
            );
        }
        self.inbox.clear();
        self.builds.clear();
        self.timers.clear();
        self.start();
    }

    fn start(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.silent[i] {
                let actions = self.nodes[i].start();
                self.apply(i, actions);
            }
        }
    }

    fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Broadcast(m) => {
                    for j in 0..self.nodes.len() {
                        if j != i {
                            self.inbox.push_back((j, m.clone()));
                        }
                    }
                }
                Action::PersistSafety(s) => self.persisted[i].push(s),
                Action::BuildBlock { height, round } => self.builds.push_back((i, height, round)),
                Action::ValidateBlock(b) => {
                    let ok = !self.invalid.contains(&b.hash());
                    let more = self.nodes[i].on_block_validated(b.hash(), ok);
                    self.apply(i, more);
                }
                Action::ScheduleTimeout {
                    height,
                    round,
                    step,
                    after_ms,
                } => {
                    self.seq += 1;
                    self.timers
                        .push((self.now + after_ms, self.seq, i, height, round, step));
                }
                Action::Commit { block, certificate } => {
                    self.commits[i].push((Arc::unwrap_or_clone(block), certificate))
                }
                Action::RecordEvidence(proof) => {
                    panic!("node {i} found honest validators equivocating: {proof:?}")
                }
            }
        }
    }

    /// Runs until every live node committed `height`, or `max_ms` of simulated time passed.
    fn run_until(&mut self, height: usize, max_ms: u64) {
        while self.now <= max_ms {
            let live_done = (0..self.nodes.len())
                .filter(|&i| !self.silent[i])
                .all(|i| self.commits[i].len() >= height);
            if live_done {
                return;
            }
            if let Some((i, height, round)) = self.builds.pop_front() {
                let me = self.nodes[i].key.as_ref().unwrap().public();
                let actions = self.nodes[i].on_block_built(block(height, round, me, i as u8));
                self.apply(i, actions);
                continue;
            }
            if let Some((to, m)) = self.inbox.pop_front() {
                let lost = match &m {
                    Message::Vote(v) => {
                        self.drop_votes
                            || (v.data.kind == VoteKind::Precommit
                                && self.drop_precommits_of_round == Some(v.data.round))
                    }
                    Message::Proposal(_) => false,
                };
                if !self.silent[to] && !lost {
                    let (actions, result) = self.nodes[to].on_message(m);
                    self.apply(to, actions);
                    if let Err(Rejected::WrongHeight { got, current }) = result
                        && got > current
                    {
                        self.sync(to);
                    }
                }
                continue;
            }
            self.timers.sort();
            if self.timers.is_empty() {
                return;
            }
            let (at, _, i, h, r, step) = self.timers.remove(0);
            self.now = at;
            if !self.silent[i] {
                let actions = self.nodes[i].on_timeout(h, r, step);
                self.apply(i, actions);
            }
        }
    }

    /// Block sync as the driver does it: copy the committed blocks `to` lacks
    /// from a node that has them, then move its consensus past them.
    fn sync(&mut self, to: usize) {
        let have = self.commits[to].len();
        let Some(source) = (0..self.nodes.len()).max_by_key(|&i| self.commits[i].len()) else {
            return;
        };
        if self.commits[source].len() <= have {
            return;
        }
        let missing = self.commits[source][have..].to_vec();
        self.commits[to].extend(missing);
        let height = self.commits[to].len() as u64 + 1;
        let actions = self.nodes[to].catch_up(height);
        self.apply(to, actions);
    }

    fn assert_agreement(&self) {
        let longest = self.commits.iter().map(Vec::len).max().unwrap_or(0);
        for h in 0..longest {
            let hashes: Vec<Hash> = self
                .commits
                .iter()
                .filter_map(|c| c.get(h))
                .map(|(b, _)| b.hash())
                .collect();
            assert!(
                hashes.windows(2).all(|w| w[0] == w[1]),
                "fork at height {}",
                h + 1
            );
        }
    }
}

#[test]
fn a_single_validator_commits_a_chain_of_certified_blocks() {
    let mut net = Net::new(1);
    net.start();
    net.run_until(5, 10_000);
    assert_eq!(net.commits[0].len(), 5);
    for (i, (block, qc)) in net.commits[0].iter().enumerate() {
        assert_eq!(block.header.height, i as u64 + 1);
        assert_eq!(qc.block, block.hash());
        net.nodes[0]
            .validators()
            .verify_certificate(CHAIN, qc)
            .unwrap();
    }
}

#[test]
fn four_honest_validators_commit_the_same_blocks_in_round_zero() {
    let mut net = Net::new(4);
    net.start();
    net.run_until(8, 10_000);
    for c in &net.commits {
        assert_eq!(c.len(), 8);
        assert!(c.iter().all(|(b, _)| b.header.round == 0));
    }
    net.assert_agreement();
}

#[test]
fn one_silent_validator_of_four_only_slows_its_own_turns() {
    let mut net = Net::new(4);
    net.silent[2] = true;
    net.start();
    net.run_until(8, 60_000);
    for i in [0, 1, 3] {
        assert_eq!(net.commits[i].len(), 8, "node {i}");
    }
    net.assert_agreement();
    let later_rounds = net.commits[0]
        .iter()
        .filter(|(b, _)| b.header.round > 0)
        .count();
    assert!(
        later_rounds > 0,
        "the silent proposer's heights need a second round"
    );
}

#[test]
fn two_silent_validators_of_four_stop_all_commits() {
    let mut net = Net::new(4);
    net.silent[1] = true;
    net.silent[3] = true;
    net.start();
    net.run_until(1, 5_000);
    assert!(net.commits.iter().all(Vec::is_empty));
}

#[test]
fn an_invalid_proposal_is_refused_and_the_next_round_commits() {
    let mut net = Net::new(4);
    // Height 1, round 0 is proposed by validator (1 + 0) % 4 of the sorted set.
    let proposer = net.nodes[0].validators().proposer(1, 0);
    let idx = (0..4)
        .find(|&i| net.nodes[i].key.as_ref().unwrap().public() == proposer)
        .unwrap();
    net.invalid.push(block(1, 0, proposer, idx as u8).hash());
    net.start();
    net.run_until(1, 10_000);
    net.assert_agreement();
    for c in &net.commits {
        assert_eq!(c[0].0.header.round, 1);
    }
}

#[test]
fn every_vote_is_persisted_before_it_is_broadcast() {
    let mut node = Consensus::new(
        CHAIN.into(),
        ValidatorSet::new(keys(4).iter().map(KeyPair::public).collect()).unwrap(),
        Some(keys(4).remove(0)),
        timeouts(),
        1,
        SafetyState::default(),
    );
    let mut actions = node.start();
    // Force a nil prevote by timing out the propose step.
    actions.extend(node.on_timeout(1, 0, Step::Propose));
    let persist = actions
        .iter()
        .position(|a| matches!(a, Action::PersistSafety(_)));
    let vote = actions
        .iter()
        .position(|a| matches!(a, Action::Broadcast(Message::Vote(_))));
    assert!(persist.unwrap() < vote.unwrap());
}

#[test]
fn restarted_validator_never_votes_twice_in_a_round() {
    let set = ValidatorSet::new(keys(4).iter().map(KeyPair::public).collect()).unwrap();
    let key = keys(4).remove(0);
    let mut node = Consensus::new(
        CHAIN.into(),
        set.clone(),
        Some(key.clone()),
        timeouts(),
        1,
        SafetyState::default(),
    );
    node.start();
    let actions = node.on_timeout(1, 0, Step::Propose);
    let Some(Action::PersistSafety(saved)) = actions
        .iter()
        .find(|a| matches!(a, Action::PersistSafety(_)))
        .cloned()
    else {
        panic!("no persisted safety state")
    };
    assert_eq!(saved.last_vote, Some((0, VoteKind::Prevote, None)));

    // After a crash the node restarts from what it persisted; a proposal for
    // round 0 now arrives. Prevoting for it would contradict the nil prevote.
    let mut restarted = Consensus::new(CHAIN.into(), set.clone(), Some(key), timeouts(), 1, saved);
    restarted.start();
    let proposer_key = proposer_key(&keys(4), &set, 1, 0);
    let b = block(1, 0, proposer_key.public(), 9);
    let (mut actions, result) = restarted.on_message(signed_proposal(&proposer_key, &b, 0));
    assert_eq!(result, Ok(()));
    actions.extend(restarted.on_block_validated(b.hash(), true));
    let signed: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::Vote(v)) => Some(v.data.clone()),
            _ => None,
        })
        .collect();
    assert!(
        signed
            .iter()
            .all(|d| !(d.round == 0 && d.kind == VoteKind::Prevote && d.block.is_some())),
        "restarted validator signed a conflicting prevote: {signed:?}"
    );
}

#[test]
fn conflicting_votes_from_one_validator_are_flagged_as_equivocation() {
    let (ks, mut node) = first_of_four();
    let vote = |block: Option<Hash>| {
        let data = VoteData {
            chain_id: CHAIN.into(),
            height: 1,
            round: 0,
            kind: VoteKind::Prevote,
            block,
        };
        data.sign(&ks[1])
    };
    assert_eq!(node.on_message(Message::Vote(vote(None))).1, Ok(()));
    assert_eq!(
        node.on_message(Message::Vote(vote(None))).1,
        Err(Rejected::Duplicate)
    );
    // A conflicting vote someone else signed in validator 1's name is a
    // forgery, not validator 1's equivocation.
    let mut forged = vote(Some(Hash([1; 32])));
    forged.signature = ks[2].sign(&forged.data.signing_hash());
    let (actions, result) = node.on_message(Message::Vote(forged));
    assert_eq!(result, Err(Rejected::BadSignature));
    assert!(evidence(&actions).is_empty());
    // The real one is refused, and the two votes are kept as proof.
    let (actions, result) = node.on_message(Message::Vote(vote(Some(Hash([1; 32])))));
    assert_eq!(result, Err(Rejected::Equivocation(ks[1].public())));
    let proof = DuplicateVote {
        first: vote(None),
        second: vote(Some(Hash([1; 32]))),
    };
    assert_eq!(evidence(&actions), [&proof]);
    assert_eq!(proof.check(), Ok(()));
}

/// A proof a peer passes on is taken only if it proves an equivocation by a
/// validator of this chain, and only for a height near the node's.
#[test]
fn evidence_from_a_peer_is_checked_and_taken_only_near_the_current_height() {
    let (ks, node) = first_of_four();
    let proof = |signer: &KeyPair, chain: &str, height: u64, second: Option<Hash>| {
        let vote = |block| {
            let data = VoteData {
                chain_id: chain.into(),
                height,
                round: 0,
                kind: VoteKind::Precommit,
                block,
            };
            data.sign(signer)
        };
        DuplicateVote {
            first: vote(None),
            second: vote(second),
        }
    };
    let other = Some(Hash([1; 32]));
    assert_eq!(node.check_evidence(&proof(&ks[1], CHAIN, 1, other)), Ok(()));
    assert_eq!(
        node.check_evidence(&proof(&ks[1], "another-chain", 1, other)),
        Err("the votes are another chain's")
    );
    let outsider = KeyPair::insecure_from_label("outsider");
    assert_eq!(
        node.check_evidence(&proof(&outsider, CHAIN, 1, other)),
        Err("the voter is not a validator")
    );
    assert_eq!(
        node.check_evidence(&proof(&ks[1], CHAIN, 1, None)),
        Err("the votes agree")
    );
    let mut forged = proof(&ks[1], CHAIN, 1, other);
    forged.second.signature = ks[2].sign(&forged.second.data.signing_hash());
    assert_eq!(
        node.check_evidence(&forged),
        Err("a vote's signature is not its validator's")
    );

    // At height 1: its own and the next, not beyond.
    assert!(node.evidence_is_recent(&proof(&ks[1], CHAIN, 1, other)));
    assert!(node.evidence_is_recent(&proof(&ks[1], CHAIN, 2, other)));
    assert!(!node.evidence_is_recent(&proof(&ks[1], CHAIN, 3, other)));
    let mut later = Consensus::new(
        CHAIN.into(),
        node.validators().clone(),
        Some(ks[0].clone()),
        timeouts(),
        EVIDENCE_HEIGHTS + 10,
        SafetyState::default(),
    );
    later.start();
    assert!(later.evidence_is_recent(&proof(&ks[1], CHAIN, 10, other)));
    assert!(!later.evidence_is_recent(&proof(&ks[1], CHAIN, 9, other)));
}

fn evidence(actions: &[Action]) -> Vec<&DuplicateVote> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RecordEvidence(proof) => Some(&**proof),
            _ => None,
        })
        .collect()
}

/// An equivocator sends each side one vote. The side that holds the other
/// finds its proof in the certificate that the next height's proposal (or
/// block sync) brings; agreeing votes, or a forged one, prove nothing.
#[test]
fn a_certificate_that_conflicts_with_a_held_precommit_is_evidence() {
    let (ks, mut node) = first_of_four();
    let precommit = |signer: &KeyPair, voter: &KeyPair, block: Option<Hash>| {
        let data = VoteData {
            chain_id: CHAIN.into(),
            height: 1,
            round: 0,
            kind: VoteKind::Precommit,
            block,
        };
        Vote {
            signature: signer.sign(&data.signing_hash()),
            voter: voter.public(),
            data,
        }
    };
    // This node holds validator 1's and 2's precommits for nil, 3's for X.
    let x = Hash([7; 32]);
    for (k, block) in [(1, None), (2, None), (3, Some(x))] {
        let vote = precommit(&ks[k], &ks[k], block);
        assert_eq!(node.on_message(Message::Vote(vote)).1, Ok(()));
    }
    // The others decided X: their certificate has 1 (equivocating), 3
    // (agreeing) and a vote in 2's name that 2 did not sign.
    let signature = |v: Vote| (v.voter, v.signature);
    let mut votes = vec![
        signature(precommit(&ks[1], &ks[1], Some(x))),
        signature(precommit(&ks[0], &ks[2], Some(x))),
        signature(precommit(&ks[3], &ks[3], Some(x))),
    ];
    votes.sort();
    let certificate = QuorumCertificate {
        height: 1,
        round: 0,
        block: x,
        votes,
    };
    let proof = DuplicateVote {
        first: precommit(&ks[1], &ks[1], None),
        second: precommit(&ks[1], &ks[1], Some(x)),
    };
    let found = node.evidence_in(&certificate);
    assert_eq!(evidence(&found), [&proof]);
    // Out of order, as no valid certificate is: not looked at.
    let mut unsorted = certificate.clone();
    unsorted.votes.reverse();
    assert!(node.evidence_in(&unsorted).is_empty());
    // A certificate of another height or round says nothing here.
    for other in [
        QuorumCertificate {
            height: 2,
            ..certificate.clone()
        },
        QuorumCertificate {
            round: 1,
            ..certificate.clone()
        },
    ] {
        assert!(node.evidence_in(&other).is_empty());
    }
}

/// A re-proposal counts for the validator that signed it, not for the one
/// that built its block: a Byzantine proposer and its own prevote are one
/// validator of four, not the f + 1 that pull the others into its round.
#[test]
fn one_validator_alone_cannot_pull_the_others_into_a_later_round() {
    let (ks, mut node) = first_of_four();
    let set = node.validators().clone();
    let round = 5;
    let byzantine = proposer_key(&ks, &set, 1, round);
    let built = block(1, 0, set.proposer(1, 0), 7);
    assert_ne!(built.header.proposer, byzantine.public());
    let mut p = Proposal {
        block: Arc::new(built.clone()),
        round,
        pol_round: Some(0),
        pol_votes: vec![],
        signature: Signature([0; 64]),
    };
    p.signature = byzantine.sign(&p.data(CHAIN).signing_hash());
    assert_eq!(node.on_message(Message::Proposal(Box::new(p))).1, Ok(()));
    let data = VoteData {
        chain_id: CHAIN.into(),
        height: 1,
        round,
        kind: VoteKind::Prevote,
        block: Some(built.hash()),
    };
    let prevote = data.sign(&byzantine);
    assert_eq!(node.on_message(Message::Vote(prevote)).1, Ok(()));
    assert_eq!(node.round(), 0, "one validator moved this one to its round");
}

/// A proposal's signature covers the header alone: a copy whose body was
/// spoiled on the way is refused as its sender's doing, and neither takes
/// the round's place nor has the header judged; the real one that follows is
/// validated and prevoted for.
#[test]
fn a_proposal_with_a_spoiled_body_does_not_take_the_rounds_place() {
    let (ks, mut node) = first_of_four();
    let set = node.validators().clone();
    let proposer = proposer_key(&ks, &set, 1, 0);
    assert_ne!(
        proposer.public(),
        ks[0].public(),
        "node 0 awaits a proposal"
    );
    let real = block(1, 0, proposer.public(), 3);
    let mut spoiled = real.clone();
    spoiled.parent_commit.round = 1;

    let (actions, result) = node.on_message(signed_proposal(&proposer, &spoiled, 0));
    assert!(
        matches!(result, Err(Rejected::BodyMismatch(_))),
        "{result:?}"
    );
    assert!(actions.is_empty(), "{actions:?}");
    let (actions, result) = node.on_message(signed_proposal(&proposer, &real, 0));
    assert_eq!(result, Ok(()));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ValidateBlock(b) if b.hash() == real.hash())),
        "{actions:?}"
    );
    let prevoted = node.on_block_validated(real.hash(), true).iter().any(|a| {
        matches!(a, Action::Broadcast(Message::Vote(v))
                if v.data.kind == VoteKind::Prevote && v.data.block == Some(real.hash()))
    });
    assert!(prevoted);
}

#[test]
fn votes_with_bad_signatures_or_from_strangers_are_rejected() {
    let (ks, mut node) = first_of_four();
    let data = VoteData {
        chain_id: CHAIN.into(),
        height: 1,
        round: 0,
        kind: VoteKind::Prevote,
        block: None,
    };
    let stranger = KeyPair::insecure_from_label("stranger");
    let from_stranger = data.clone().sign(&stranger);
    assert_eq!(
        node.on_message(Message::Vote(from_stranger)).1,
        Err(Rejected::NotValidator(stranger.public()))
    );
    let forged = Vote {
        signature: ks[2].sign(&data.signing_hash()),
        voter: ks[1].public(),
        data,
    };
    assert_eq!(
        node.on_message(Message::Vote(forged)).1,
        Err(Rejected::BadSignature)
    );
}

#[test]
fn only_signed_next_height_messages_of_its_first_rounds_are_kept_once_each() {
    let (ks, mut node) = first_of_four();
    let vote = |signer: &KeyPair, voter: PublicKey, round: u64| {
        let data = VoteData {
            chain_id: CHAIN.into(),
            height: 2,
            round,
            kind: VoteKind::Prevote,
            block: None,
        };
        Message::Vote(Vote {
            signature: signer.sign(&data.signing_hash()),
            voter,
            data,
        })
    };
    let stranger = KeyPair::insecure_from_label("stranger");
    let kept = vote(&ks[1], ks[1].public(), 0);
    // What is kept, or dropped as a repeat or too far ahead, is still
    // reported, so the driver can sync; what is forged is refused, so the
    // driver strikes its sender.
    let later = Err(Rejected::WrongHeight { got: 2, current: 1 });
    for (message, result) in [
        (kept.clone(), later.clone()),
        (kept.clone(), later.clone()),
        (
            vote(&stranger, stranger.public(), 0),
            Err(Rejected::NotValidator(stranger.public())),
        ),
        (vote(&ks[2], ks[1].public(), 1), Err(Rejected::BadSignature)),
        (vote(&ks[1], ks[1].public(), FUTURE_ROUNDS), later.clone()),
    ] {
        assert_eq!(node.on_message(message).1, result);
    }
    assert_eq!(node.future, vec![kept]);
}

/// A next-height proposal whose body is not its header's is not kept for
/// later, and does not keep out the real one.
#[test]
fn a_next_height_proposal_with_a_spoiled_body_is_not_kept() {
    let (ks, mut node) = first_of_four();
    let set = node.validators().clone();
    let proposer = proposer_key(&ks, &set, 2, 0);
    let real = block(2, 0, proposer.public(), 3);
    let mut spoiled = real.clone();
    spoiled.parent_commit.round = 1;
    assert_eq!(
        node.on_message(signed_proposal(&proposer, &spoiled, 0)).1,
        Err(Rejected::BodyMismatch(
            "the parent's commit certificate does not match parent_commit_hash"
        ))
    );
    assert_eq!(
        node.on_message(signed_proposal(&proposer, &real, 0)).1,
        Err(Rejected::WrongHeight { got: 2, current: 1 })
    );
    assert_eq!(node.future, vec![signed_proposal(&proposer, &real, 0)]);
}

#[test]
fn the_sync_target_needs_f_plus_one_validators_signed_past_and_being_behind_one() {
    let (ks, mut node) = first_of_four();
    let vote = |signer: &KeyPair, voter: PublicKey, height: u64| {
        let data = VoteData {
            chain_id: CHAIN.into(),
            height,
            round: 0,
            kind: VoteKind::Precommit,
            block: None,
        };
        Message::Vote(Vote {
            signature: signer.sign(&data.signing_hash()),
            voter,
            data,
        })
    };
    assert_eq!(node.sync_target(), 0, "nothing is ahead of a fresh node");
    assert!(!node.is_behind());

    // Forged and stranger-signed claims count for nothing, and are refused
    // (so their sender is struck) rather than reported as from later on.
    let stranger = KeyPair::insecure_from_label("stranger");
    assert_eq!(
        node.on_message(vote(&ks[1], ks[2].public(), 900)).1,
        Err(Rejected::BadSignature)
    );
    assert_eq!(
        node.on_message(vote(&stranger, stranger.public(), 900)).1,
        Err(Rejected::NotValidator(stranger.public()))
    );
    assert_eq!(node.sync_target(), 0);
    assert!(!node.is_behind());
    // One validator alone (it may be the byzantine one) cannot set the
    // target, however far ahead it claims to be; its word is enough to ask
    // for blocks, which carry their own certificates.
    let _ = node.on_message(vote(&ks[1], ks[1].public(), 1_000));
    assert_eq!(node.sync_target(), 0);
    assert!(node.is_behind());
    // A second validator (f+1 = 2 of 4) vouches for height 41 being decided:
    // 40 is committed.
    let _ = node.on_message(vote(&ks[2], ks[2].public(), 41));
    assert_eq!(node.sync_target(), 40);
    // A lower message does not lower a validator's record.
    let _ = node.on_message(vote(&ks[2], ks[2].public(), 5));
    assert_eq!(node.sync_target(), 40);
    let _ = node.on_message(vote(&ks[3], ks[3].public(), 60));
    assert_eq!(node.sync_target(), 59);

    // Caught up past them, the records behind fall away and the target is
    // the node's own committed height.
    node.catch_up(1_001);
    assert!(node.heights_ahead.is_empty());
    assert_eq!(node.sync_target(), 1_000);
    assert!(!node.is_behind());
}

#[test]
fn a_certificate_without_a_quorum_or_with_a_forged_vote_does_not_verify() {
    let mut net = Net::new(4);
    net.start();
    net.run_until(1, 10_000);
    let set = net.nodes[0].validators().clone();
    let (_, qc) = net.commits[0][0].clone();
    set.verify_certificate(CHAIN, &qc).unwrap();
    let mut short = qc.clone();
    short.votes.truncate(2);
    assert!(matches!(
        set.verify_certificate(CHAIN, &short),
        Err(CertificateError::NoQuorum { .. })
    ));
    let mut forged = qc.clone();
    forged.votes[0].1.0[0] ^= 1;
    assert!(matches!(
        set.verify_certificate(CHAIN, &forged),
        Err(CertificateError::BadSignature(_))
    ));
    assert!(set.verify_certificate("other-chain", &qc).is_err());
}

#[test]
fn a_validator_whose_record_is_ahead_of_its_chain_signs_nothing_until_it_gets_there() {
    let set = ValidatorSet::new(keys(4).iter().map(KeyPair::public).collect()).unwrap();
    // The proposer of height 1, round 0, so that it would build and propose.
    let key = proposer_key(&keys(4), &set, 1, 0);
    let x = Hash([9; 32]);
    let record = SafetyState {
        height: 3,
        last_vote: Some((0, VoteKind::Prevote, Some(x))),
        locked: None,
    };
    let mut node = Consensus::new(CHAIN.into(), set, Some(key), timeouts(), 1, record);
    let signs = |actions: &[Action]| {
        actions.iter().any(|a| {
            matches!(
                a,
                Action::PersistSafety(_) | Action::Broadcast(_) | Action::BuildBlock { .. }
            )
        })
    };
    let mut actions = node.start();
    for step in [Step::Propose, Step::Prevote, Step::Precommit] {
        actions.extend(node.on_timeout(1, 0, step));
    }
    assert!(!signs(&actions), "signed at height 1: {actions:?}");

    // Block sync brings it to height 3: it says again what it said there.
    let actions = node.catch_up(3);
    assert_eq!(node.signing_suspended_until(), None);
    let votes: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::Vote(v)) => Some(&v.data),
            _ => None,
        })
        .collect();
    assert_eq!(votes.len(), 1, "{actions:?}");
    assert_eq!(
        (
            votes[0].height,
            votes[0].round,
            votes[0].kind,
            votes[0].block
        ),
        (3, 0, VoteKind::Prevote, Some(x))
    );
}

#[test]
fn a_validator_whose_record_is_ahead_of_its_chain_catches_up_and_resumes_from_it() {
    let mut net = Net::new(4);
    net.start();
    net.run_until(2, 10_000);
    // Node 0 crashes and comes back with its blocks lost, but its safety
    // record says it prevoted some block X in round 0 of height 3.
    let x = Hash([9; 32]);
    let record = SafetyState {
        height: 3,
        last_vote: Some((0, VoteKind::Prevote, Some(x))),
        locked: None,
    };
    let key = keys(4).remove(0);
    let set = net.nodes[0].validators().clone();
    net.nodes[0] = Consensus::new(CHAIN.into(), set, Some(key), timeouts(), 1, record);
    assert_eq!(net.nodes[0].signing_suspended_until(), Some(3));
    net.commits[0].clear();
    net.persisted[0].clear();
    let actions = net.nodes[0].start();
    net.apply(0, actions);
    net.run_until(5, 60_000);

    assert_eq!(net.commits[0].len(), 5, "node 0 caught up and went on");
    net.assert_agreement();
    assert!(
        net.persisted[0].iter().all(|s| s.height >= 3),
        "node 0 signed below its record: {:?}",
        net.persisted[0]
    );
    for s in net.persisted[0].iter().filter(|s| s.height == 3) {
        if let Some((0, VoteKind::Prevote, block)) = s.last_vote {
            assert_eq!(block, Some(x), "a second round-0 prevote at height 3");
        }
    }
    assert!(
        net.persisted[0].iter().any(|s| s.height > 3),
        "node 0 votes again above its record"
    );
}

#[test]
fn validators_that_all_restart_after_prevoting_into_the_void_still_commit() {
    let mut net = Net::new(4);
    net.drop_votes = true;
    net.start();
    // Every node sees the proposal and prevotes for it, but no vote arrives anywhere.
    net.run_until(1, 50);
    assert!(net.commits.iter().all(Vec::is_empty));
    assert!(
        net.persisted.iter().all(|p| p
            .iter()
            .any(|s| matches!(s.last_vote, Some((0, VoteKind::Prevote, Some(_)))))),
        "every node persisted a prevote for the round-0 block"
    );
    net.drop_votes = false;
    net.restart_all();
    net.run_until(3, 60_000);
    for c in &net.commits {
        assert_eq!(c.len(), 3);
    }
    net.assert_agreement();
}

/// Four validators that all locked on round 0's block, none of whose
/// precommits ever arrives (nor will), and that block's hash.
fn four_locked_in_round_zero() -> (Net, Hash) {
    let mut net = Net::new(4);
    // Round 0: everyone sees the proposal and the prevotes, so everyone locks
    // on its block and precommits it, but no precommit of round 0 ever arrives.
    net.drop_precommits_of_round = Some(0);
    net.start();
    // Stop before the precommit timeout (50 ms) moves anyone to round 1.
    net.run_until(1, 40);
    assert!(net.commits.iter().all(Vec::is_empty));
    assert!(
        net.nodes
            .iter()
            .all(|n| n.locked.as_ref().is_some_and(|(r, _)| *r == 0)),
        "every node locked in round 0"
    );
    let locked = net.nodes[0].locked.as_ref().unwrap().1.hash();
    (net, locked)
}

#[test]
fn a_locked_block_is_re_proposed_by_the_next_proposer_and_committed() {
    let (mut net, locked) = four_locked_in_round_zero();
    net.run_until(1, 60_000);
    for c in &net.commits {
        let (block, qc) = &c[0];
        assert_eq!(
            block.hash(),
            locked,
            "the locked block is the one committed"
        );
        assert_eq!(
            block.header.round, 0,
            "a re-proposed block keeps its header"
        );
        assert!(qc.round >= 1, "committed in a later round");
    }
    net.assert_agreement();
}

/// Every validator locks on a block whose precommits are all lost, then all
/// restart: the prevotes that proved the lock are gone with their memory,
/// so a re-proposal of the locked block carries no proof of lock. Each still
/// prevotes it, as it may prevote the block it is locked on whatever the
/// proposal claims, and the block is decided.
#[test]
fn validators_that_all_restart_locked_without_the_prevotes_decide_their_lock() {
    let (mut net, locked) = four_locked_in_round_zero();
    // Still lost: the precommits each sends again after its restart.
    net.restart_all();
    net.run_until(1, 60_000);
    for c in &net.commits {
        assert_eq!(c.first().map(|(b, _)| b.hash()), Some(locked));
    }
    net.assert_agreement();
}

/// The driver reports no verdict on a block it cannot judge yet (its
/// timestamp ahead of the node's clock: `Chain::validate_proposal`), so that
/// a verdict depending on when it arrived does not stick to it: the block
/// is sent for validation again when it is proposed again, and prevoted.
#[test]
fn a_block_left_unjudged_is_judged_again_when_proposed_again() {
    let (ks, mut node) = first_of_four();
    let set = node.validators().clone();
    let built = block(1, 0, set.proposer(1, 0), 7);
    let hash = built.hash();
    let validations = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::ValidateBlock(b) if b.hash() == hash))
            .count()
    };
    let (actions, result) =
        node.on_message(signed_proposal(&proposer_key(&ks, &set, 1, 0), &built, 0));
    assert_eq!(result, Ok(()));
    assert_eq!(validations(&actions), 1);
    // No verdict comes. Two validators (more than a third) move on to a
    // later round whose proposer is another: this node joins them.
    let me = ks[0].public();
    let round = (1..).find(|&r| set.proposer(1, r) != me).unwrap();
    for key in ks.iter().filter(|k| k.public() != me).take(2) {
        assert_eq!(node.on_message(nil_prevote(key, round)).1, Ok(()));
    }
    assert_eq!(node.round(), round);
    // Proposed again with the round it was first proposed in, no prevotes
    // carried (none were cast for it): unlocked, this node may prevote it.
    let mut again = Proposal {
        block: Arc::new(built.clone()),
        round,
        pol_round: Some(0),
        pol_votes: vec![],
        signature: Signature([0; 64]),
    };
    again.signature = proposer_key(&ks, &set, 1, round).sign(&again.data(CHAIN).signing_hash());
    let (actions, result) = node.on_message(Message::Proposal(Box::new(again)));
    assert_eq!(result, Ok(()));
    assert_eq!(validations(&actions), 1, "judged again: {actions:?}");
    let prevoted = node.on_block_validated(hash, true).iter().any(|a| {
        matches!(a, Action::Broadcast(Message::Vote(v))
                if v.data.kind == VoteKind::Prevote && v.data.block == Some(hash))
    });
    assert!(prevoted);
}

/// A block is decided, made the head and then lost before it reached the disk
/// on every validator (one validator, or all of them crashing at once): each
/// restarts below it with only its safety record, which holds its precommit and
/// the block it locked on. They must decide that same block again.
#[test]
fn validators_that_all_lose_a_decided_block_decide_it_again() {
    for n in [1, 4] {
        let mut net = Net::new(n);
        net.start();
        net.run_until(1, 60_000);
        let decided = net.commits[0][0].0.hash();
        for commits in &mut net.commits {
            assert_eq!(commits.pop().map(|(b, _)| b.hash()), Some(decided));
        }
        net.restart_all();
        net.run_until(2, 60_000);
        for c in &net.commits {
            assert_eq!(c.len(), 2, "{n} validators commit again");
            assert_eq!(c[0].0.hash(), decided, "{n} validators: the same block");
        }
        net.assert_agreement();
    }
}

/// A proposer that restarts after voting in its own round signs no second
/// proposal for that round: neither a new block nor its lock re-proposed with
/// `pol_round` equal to the round.
#[test]
fn a_proposer_restarted_after_voting_in_its_round_does_not_propose_in_it_again() {
    let ks = keys(4);
    let set = ValidatorSet::new(ks.iter().map(KeyPair::public).collect()).unwrap();
    let proposer = proposer_key(&ks, &set, 1, 0);
    let locked = block(1, 0, proposer.public(), 7);
    let records = [
        SafetyState {
            height: 1,
            last_vote: Some((0, VoteKind::Prevote, Some(locked.hash()))),
            locked: None,
        },
        SafetyState {
            height: 1,
            last_vote: Some((0, VoteKind::Precommit, Some(locked.hash()))),
            locked: Some((0, Arc::new(locked.clone()))),
        },
    ];
    for safety in records {
        let mut node = Consensus::new(
            CHAIN.into(),
            set.clone(),
            Some(proposer.clone()),
            timeouts(),
            1,
            safety.clone(),
        );
        let actions = node.start();
        assert!(
            !actions.iter().any(|a| matches!(
                a,
                Action::BuildBlock { .. } | Action::Broadcast(Message::Proposal(_))
            )),
            "{safety:?}: {actions:?}"
        );
        // It sends its last vote again, and moves on when the round times out.
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Broadcast(Message::Vote(v)) if Some((v.data.round, v.data.kind, v.data.block)) == safety.last_vote
        )));
        match safety.last_vote.unwrap().1 {
            // A prevote's timeout brings its nil precommit ...
            VoteKind::Prevote => {
                let after = node.on_timeout(1, 0, Step::Prevote);
                assert!(
                    after.iter().any(|a| matches!(
                        a,
                        Action::Broadcast(Message::Vote(v))
                            if v.data.round == 0 && v.data.kind == VoteKind::Precommit && v.data.block.is_none()
                    )),
                    "{after:?}"
                );
            }
            // ... a precommit's, the next round.
            VoteKind::Precommit => {
                node.on_timeout(1, 0, Step::Precommit);
                assert_eq!(node.round(), 1);
            }
        }
    }
}

/// A proposer saves its vote in the round before its proposal leaves: a
/// crash at any point of the actions restarts it either with nothing sent
/// (it may build and propose again) or with the vote saved (it resumes in
/// that round and proposes no more), never with a proposal out and no
/// record of it, which would let it sign a second one for the round.
#[test]
fn a_proposer_saves_its_vote_before_its_proposal_leaves() {
    let ks = keys(4);
    let set = ValidatorSet::new(ks.iter().map(KeyPair::public).collect()).unwrap();
    let proposer = proposer_key(&ks, &set, 1, 0);
    let start = |safety: SafetyState| {
        let mut node = Consensus::new(
            CHAIN.into(),
            set.clone(),
            Some(proposer.clone()),
            timeouts(),
            1,
            safety,
        );
        let actions = node.start();
        (node, actions)
    };
    let (mut node, actions) = start(SafetyState::fresh(1));
    assert!(actions.contains(&Action::BuildBlock {
        height: 1,
        round: 0
    }));
    let actions = node.on_block_built(block(1, 0, proposer.public(), 5));
    let sent = actions
        .iter()
        .position(|a| matches!(a, Action::Broadcast(Message::Proposal(_))))
        .expect("the proposal is sent");
    // A crash right after the proposal left: what had been saved by then.
    let saved = actions[..sent].iter().rev().find_map(|a| match a {
        Action::PersistSafety(state) => Some(state.clone()),
        _ => None,
    });
    let saved = saved.expect("a vote saved before the proposal is sent");
    assert_eq!(saved.last_vote.map(|(round, ..)| round), Some(0));
    let (_, restarted) = start(saved);
    assert!(
        !restarted.iter().any(|a| matches!(
            a,
            Action::BuildBlock { .. } | Action::Broadcast(Message::Proposal(_))
        )),
        "{restarted:?}"
    );
}

/// The same for a proposer that re-proposes a block it has not judged: its
/// lock after a restart, whose verdict died with its memory. The proposal
/// waits for the driver's verdict and leaves after the prevote it brings is
/// saved, not before (a crash in between would have left it free to propose
/// again in the round).
#[test]
fn a_proposer_saves_its_vote_before_its_unjudged_reproposal_leaves() {
    let ks = keys(4);
    let set = ValidatorSet::new(ks.iter().map(KeyPair::public).collect()).unwrap();
    let round = 1;
    let proposer = proposer_key(&ks, &set, 1, round);
    let locked = Arc::new(block(1, 0, set.proposer(1, 0), 5));
    let hash = locked.hash();
    let mut node = Consensus::new(
        CHAIN.into(),
        set.clone(),
        Some(proposer.clone()),
        timeouts(),
        1,
        SafetyState {
            height: 1,
            last_vote: Some((0, VoteKind::Precommit, Some(hash))),
            locked: Some((0, locked)),
        },
    );
    node.start();
    // Two others (more than a third) are in round 1: the node joins it and,
    // its proposer, re-proposes its lock, which it must judge first.
    let mut joined = Vec::new();
    for key in ks
        .iter()
        .filter(|k| k.public() != proposer.public())
        .take(2)
    {
        let (actions, result) = node.on_message(nil_prevote(key, round));
        assert_eq!(result, Ok(()));
        joined.extend(actions);
    }
    assert_eq!(node.round(), round);
    let is_proposal =
        |a: &Action| matches!(a, Action::Broadcast(Message::Proposal(p)) if p.round == round);
    assert!(
        joined
            .iter()
            .any(|a| matches!(a, Action::ValidateBlock(b) if b.hash() == hash)),
        "{joined:?}"
    );
    assert!(!joined.iter().any(is_proposal), "sent unjudged: {joined:?}");

    let judged = node.on_block_validated(hash, true);
    let sent = judged
        .iter()
        .position(is_proposal)
        .expect("the proposal leaves with the verdict");
    let saved = judged[..sent].iter().find_map(|a| match a {
        Action::PersistSafety(state) => state.last_vote,
        _ => None,
    });
    assert_eq!(saved, Some((round, VoteKind::Prevote, Some(hash))));
}

#[test]
fn a_shared_block_is_encoded_as_the_block_itself() {
    // Proposals on the wire and safety records on disk written before blocks
    // were shared must still decode, and decode to the same values.
    let key = keys(1).remove(0);
    let locked = block(1, 0, key.public(), 3);
    let record = SafetyState {
        height: 1,
        last_vote: Some((0, VoteKind::Precommit, Some(locked.hash()))),
        locked: Some((0, Arc::new(locked.clone()))),
    };
    let as_before = (
        1u64,
        Some((0u64, VoteKind::Precommit, Some(locked.hash()))),
        Some((0u64, locked.clone())),
    );
    assert_eq!(encode(&record), encode(&as_before));
    assert_eq!(
        trellis_types::codec::decode::<SafetyState>(&encode(&as_before)).unwrap(),
        record
    );
}
