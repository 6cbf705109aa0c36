//! Tendermint consensus as a sans-IO state machine.
//!
//! Inputs are messages, timer expiries and the driver's answers (a block it
//! built, whether a proposed block is valid); outputs are [`Action`]s. There
//! are no sockets, clocks or disk in here, so the same code runs in the node
//! and in a deterministic simulator. The rules are those of Algorithm 1 in
//! "The latest gossip on BFT consensus" (Buchman, Kwon, Milosevic, 2018); the
//! numbered comments below refer to its lines. Safety needs fewer than a third
//! of the validators faulty and holds with any message delay; liveness needs
//! eventual synchrony, which growing per-round timeouts provide.
//!
//! The driver must execute [`Action::PersistSafety`] durably before any later
//! action of the same batch leaves the node: that is what keeps a restarted
//! validator from signing two different votes for one step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use trellis_types::block::VoteKind;
use trellis_types::codec::encode;
pub use trellis_types::validators::{CertificateError, ValidatorSet};
use trellis_types::{
    Block, Domain, DuplicateVote, Hash, KeyPair, PublicKey, QuorumCertificate, Signature, Vote,
    VoteData,
};

/// What a proposer signs: the block and the round whose prevotes justify re-proposing it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProposalData {
    pub chain_id: String,
    pub height: u64,
    pub round: u64,
    pub pol_round: Option<u64>,
    pub block: Hash,
}

impl ProposalData {
    pub fn signing_hash(&self) -> Hash {
        Domain::Proposal.hash(&encode(self))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    /// Shared: the consensus state, its messages and the driver hold the
    /// same block (up to megabytes) without copying it.
    pub block: Arc<Block>,
    pub round: u64,
    /// The round in which a quorum prevoted this block, if it is re-proposed.
    pub pol_round: Option<u64>,
    /// Those prevotes (validator, signature over the prevote for this block
    /// in `pol_round`), so a receiver that missed them can still check the
    /// proof of lock. Each is verified like any vote.
    pub pol_votes: Vec<(PublicKey, Signature)>,
    pub signature: Signature,
}

impl Proposal {
    fn data(&self, chain_id: &str) -> ProposalData {
        ProposalData {
            chain_id: chain_id.to_owned(),
            height: self.block.header.height,
            round: self.round,
            pol_round: self.pol_round,
            block: self.block.hash(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Message {
    Proposal(Box<Proposal>),
    Vote(Vote),
}

impl Message {
    pub fn height(&self) -> u64 {
        match self {
            Message::Proposal(p) => p.block.header.height,
            Message::Vote(v) => v.data.height,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Propose,
    Prevote,
    Precommit,
}

/// What a validator must remember across a crash to never sign conflicting votes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SafetyState {
    pub height: u64,
    /// The last vote this validator signed at `height`: (round, kind, block).
    pub last_vote: Option<(u64, VoteKind, Option<Hash>)>,
    /// The block this validator is locked on at `height`, and the round it
    /// locked in. The whole block, so a restarted validator can still
    /// re-propose it and release others' locks.
    pub locked: Option<(u64, Arc<Block>)>,
}

impl SafetyState {
    /// Nothing signed yet at `height`.
    pub fn fresh(height: u64) -> Self {
        SafetyState {
            height,
            last_vote: None,
            locked: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send to every other validator (and observers).
    Broadcast(Message),
    /// Write durably before executing any later action.
    PersistSafety(SafetyState),
    /// Build a block for `height` on top of the committed head, then call
    /// [`Consensus::on_block_built`]. The driver chooses when (it waits for
    /// transactions or the idle heartbeat).
    BuildBlock { height: u64, round: u64 },
    /// Decide whether `block` is valid (execute it), then call [`Consensus::on_block_validated`].
    ValidateBlock(Arc<Block>),
    /// Call [`Consensus::on_timeout`] with these arguments after `after_ms`.
    ScheduleTimeout {
        height: u64,
        round: u64,
        step: Step,
        after_ms: u64,
    },
    /// `block` is decided; persist it. Consensus has moved on to the next height.
    Commit {
        block: Arc<Block>,
        certificate: QuorumCertificate,
    },
    /// A validator signed two votes for one step: keep the proof.
    RecordEvidence(Box<DuplicateVote>),
}

/// Why a message was not accepted. The driver logs it and counts it; a peer
/// that keeps sending such messages is one to disconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("message for chain {0}")]
    WrongChain(String),
    #[error("message for height {got}, at height {current}")]
    WrongHeight { got: u64, current: u64 },
    #[error("sender {0} is not a validator")]
    NotValidator(PublicKey),
    #[error("proposal from {got}, the round's proposer is {expected}")]
    WrongProposer { got: PublicKey, expected: PublicKey },
    #[error("bad signature")]
    BadSignature,
    #[error("block header says round {header}, proposal says {proposal}")]
    RoundMismatch { header: u64, proposal: u64 },
    #[error("pol_round {pol_round} is not below round {round}")]
    BadPolRound { pol_round: u64, round: u64 },
    #[error("round {0} is too far ahead")]
    RoundTooFar(u64),
    #[error("duplicate")]
    Duplicate,
    #[error("equivocation by {0}: two different votes for one step")]
    Equivocation(PublicKey),
    #[error("the block's body is not its header's: {0}")]
    BodyMismatch(&'static str),
}

impl Rejected {
    /// Stable label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Rejected::WrongChain(_) => "wrong_chain",
            Rejected::WrongHeight { .. } => "wrong_height",
            Rejected::NotValidator(_) => "not_validator",
            Rejected::WrongProposer { .. } => "wrong_proposer",
            Rejected::BadSignature => "bad_signature",
            Rejected::RoundMismatch { .. } => "round_mismatch",
            Rejected::BadPolRound { .. } => "bad_pol_round",
            Rejected::RoundTooFar(_) => "round_too_far",
            Rejected::Duplicate => "duplicate",
            Rejected::Equivocation(_) => "equivocation",
            Rejected::BodyMismatch(_) => "body_mismatch",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub propose_ms: u64,
    pub prevote_ms: u64,
    pub precommit_ms: u64,
    /// Added to each timeout per round, so that rounds lengthen until the network keeps up.
    pub delta_ms: u64,
    /// Extra wait for the first proposal of a height, while the proposer waits for transactions.
    pub idle_block_ms: u64,
}

/// Rounds beyond the current one that we still keep votes for.
const MAX_ROUND_AHEAD: u64 = 64;
/// Messages for the next height are kept until we get there (others may
/// decide a moment before us), but only for its first rounds and only signed
/// ones, one per signer and step, so a peer cannot fill memory with them.
const FUTURE_ROUNDS: u64 = 4;
/// Heights below ours whose equivocation proofs peers may still pass on
/// (`evidence_is_recent`): enough for a proof's one trip to every node.
pub const EVIDENCE_HEIGHTS: u64 = 100;

#[derive(Default)]
struct RoundVotes {
    /// voter → (block or nil, signature); one vote per voter and kind.
    prevotes: BTreeMap<PublicKey, (Option<Hash>, Signature)>,
    precommits: BTreeMap<PublicKey, (Option<Hash>, Signature)>,
    proposal: Option<Proposal>,
}

impl RoundVotes {
    fn of(&self, kind: VoteKind) -> &BTreeMap<PublicKey, (Option<Hash>, Signature)> {
        match kind {
            VoteKind::Prevote => &self.prevotes,
            VoteKind::Precommit => &self.precommits,
        }
    }

    fn count(&self, kind: VoteKind, block: Option<Hash>) -> usize {
        self.of(kind).values().filter(|(b, _)| *b == block).count()
    }

    fn senders(&self) -> impl Iterator<Item = &PublicKey> {
        self.prevotes.keys().chain(self.precommits.keys())
    }
}

pub struct Consensus {
    chain_id: String,
    validators: ValidatorSet,
    /// None for an observer: it follows votes but never signs.
    key: Option<KeyPair>,
    timeouts: Timeouts,

    height: u64,
    round: u64,
    step: Step,
    locked: Option<(u64, Arc<Block>)>,
    valid: Option<(u64, Arc<Block>)>,
    safety: SafetyState,
    rounds: BTreeMap<u64, RoundVotes>,
    /// Blocks the driver judged, by hash.
    validity: BTreeMap<Hash, bool>,
    /// One-shot rules already fired this round (lines 34, 36, 47).
    prevote_timeout_armed: bool,
    precommit_timeout_armed: bool,
    polka_seen: bool,
    /// A block the driver was asked to build for (height, round) and has not delivered.
    building: Option<u64>,
    /// We proposed in this round and the proposal has not left: it waits
    /// for our prevote in the round to be saved (`send_own_proposal`).
    proposal_unsent: bool,
    /// Messages for `height + 1`, replayed on entering it.
    future: Vec<Message>,
    /// The highest height each validator has sent a validly signed message
    /// for, when above ours: what [`Consensus::sync_target`] reads.
    heights_ahead: BTreeMap<PublicKey, u64>,
    /// (round, block) pairs with a quorum of prevotes proven by a proposal's
    /// carried signatures, which count even where a signer equivocated.
    proven_polkas: BTreeSet<(u64, Hash)>,
    /// A persisted record from a height above the one we started at: storage
    /// lost blocks this validator had already voted past. Until consensus
    /// reaches that height again it signs nothing (votes it cast at the lost
    /// heights are not on record, so it cannot know what they were); there it
    /// resumes from the record.
    signed_ahead: Option<SafetyState>,
}

impl Consensus {
    /// Starts consensus at `height` (the committed head + 1). `safety` is what was
    /// persisted before a restart; votes it records are never contradicted.
    pub fn new(
        chain_id: String,
        validators: ValidatorSet,
        key: Option<KeyPair>,
        timeouts: Timeouts,
        height: u64,
        safety: SafetyState,
    ) -> Self {
        let key = key.filter(|k| validators.contains(&k.public()));
        let (safety, signed_ahead) = match safety.height.cmp(&height) {
            std::cmp::Ordering::Equal => (safety, None),
            std::cmp::Ordering::Greater => (SafetyState::fresh(height), Some(safety)),
            std::cmp::Ordering::Less => (SafetyState::fresh(height), None),
        };
        Consensus {
            chain_id,
            validators,
            key,
            timeouts,
            height,
            round: 0,
            step: Step::Propose,
            locked: safety.locked.clone(),
            valid: safety.locked.clone(),
            safety,
            rounds: BTreeMap::new(),
            validity: BTreeMap::new(),
            prevote_timeout_armed: false,
            precommit_timeout_armed: false,
            polka_seen: false,
            building: None,
            proposal_unsent: false,
            future: Vec::new(),
            heights_ahead: BTreeMap::new(),
            proven_polkas: BTreeSet::new(),
            signed_ahead,
        }
    }

    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn round(&self) -> u64 {
        self.round
    }

    /// The committed height the chain has reached as far as this node can
    /// tell: f+1 validators have signed messages for the height after it, so
    /// at least one honest validator has, and the byzantine ones alone cannot
    /// raise it. Never below this node's own committed height.
    pub fn sync_target(&self) -> u64 {
        let mut heights: Vec<u64> = self.heights_ahead.values().copied().collect();
        heights.sort_unstable_by(|a, b| b.cmp(a));
        let vouched = heights
            .get(self.validators.one_third_plus() - 1)
            .copied()
            .unwrap_or(self.height);
        vouched.max(self.height) - 1
    }

    /// Whether a validator has sent a validly signed message for a height
    /// above ours: the chain has committed ours, and block sync can fetch
    /// it. One validator's word is enough to ask (a synced block carries
    /// its own certificate), unlike [`Consensus::sync_target`]'s f+1.
    pub fn is_behind(&self) -> bool {
        self.heights_ahead.values().any(|&h| h > self.height)
    }

    /// Records the height of a validly signed message from ahead of us. The
    /// signature is checked only when the message would raise its signer's
    /// record, so a validator costs at most one check per height; a message
    /// found forged then is refused, and its sender struck like any other's.
    /// Returns whether it checked the message.
    fn note_height_ahead(&mut self, message: &Message) -> Result<bool, Rejected> {
        let height = message.height();
        let signer = match message {
            Message::Proposal(p) => self.validators.proposer(height, p.round),
            Message::Vote(v) => v.voter,
        };
        if height <= self.height || self.heights_ahead.get(&signer) >= Some(&height) {
            return Ok(false);
        }
        self.check_signed_ahead(message)?;
        self.heights_ahead.insert(signer, height);
        Ok(true)
    }

    /// Why a message from a later height is not what it claims: another
    /// chain's, a stranger's vote, a forged signature, or (a proposal) a body
    /// that is not its header's.
    fn check_signed_ahead(&self, message: &Message) -> Result<(), Rejected> {
        match message {
            Message::Proposal(p) => {
                let proposer = self.validators.proposer(message.height(), p.round);
                proposer
                    .verify(&p.data(&self.chain_id).signing_hash(), &p.signature)
                    .map_err(|_| Rejected::BadSignature)?;
                match p.block.mismatched_body(&p.block.tx_hashes()) {
                    Some(part) => Err(Rejected::BodyMismatch(part)),
                    None => Ok(()),
                }
            }
            Message::Vote(v) => {
                if v.data.chain_id != self.chain_id {
                    return Err(Rejected::WrongChain(v.data.chain_id.clone()));
                }
                if !self.validators.contains(&v.voter) {
                    return Err(Rejected::NotValidator(v.voter));
                }
                v.voter
                    .verify(&v.data.signing_hash(), &v.signature)
                    .map_err(|_| Rejected::BadSignature)
            }
        }
    }

    pub fn step(&self) -> Step {
        self.step
    }

    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    pub fn is_validator(&self) -> bool {
        self.key.is_some()
    }

    /// The height of a persisted vote above the current height, if any: this
    /// validator signs nothing until it gets there (see `signed_ahead`).
    pub fn signing_suspended_until(&self) -> Option<u64> {
        self.signed_ahead
            .as_ref()
            .map(|record| record.height)
            .filter(|&h| h > self.height)
    }

    /// The key to sign with, unless this is an observer or signing is suspended.
    fn signer(&self) -> Option<KeyPair> {
        if self.signing_suspended_until().is_some() {
            return None;
        }
        self.key.clone()
    }

    /// Enters the first round of the current height. Call once after [`Consensus::new`].
    pub fn start(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.resume(&mut out);
        self.recheck(&mut out);
        out
    }

    /// Starts the current height from the safety record: in round 0, or after
    /// a restart in the round of its last vote.
    fn resume(&mut self, out: &mut Vec<Action>) {
        match self.safety.last_vote {
            // After a crash, resume in the round of our last vote and send that
            // vote again (the same vote, so no equivocation): the others may
            // never have received it, and without it the round may not reach
            // a quorum. But no proposal in that round: having voted in it, we
            // are past its propose step, and a second signed proposal for it
            // (a new block, or our lock with `pol_round` = this round, which
            // everyone refuses) would be double signing, which CometBFT's
            // signer refuses too. The round's timeouts move it on.
            Some((round, kind, block)) => {
                self.enter_round(round);
                if let Some(key) = self.signer() {
                    let data = VoteData {
                        chain_id: self.chain_id.clone(),
                        height: self.height,
                        round,
                        kind,
                        block,
                    };
                    let vote = data.sign(&key);
                    out.push(Action::Broadcast(Message::Vote(vote.clone())));
                    let _ = self.accept_vote(vote, out);
                }
                self.enter_step(
                    match kind {
                        VoteKind::Prevote => Step::Prevote,
                        VoteKind::Precommit => Step::Precommit,
                    },
                    out,
                );
            }
            None => self.start_round(0, out),
        }
        // A locked block may be decided by the votes alone (see `apply_rules`);
        // judge it now, as no proposal may bring it again.
        if let Some((_, block)) = &self.locked
            && self.is_valid(block).is_none()
        {
            out.push(Action::ValidateBlock(block.clone()));
        }
    }

    /// Moves to the prevote or precommit step and arms that step's timeout.
    ///
    /// The paper arms these timeouts only once a quorum of votes of any kind
    /// arrived (lines 34 and 47). Arming them on entering the step as well is
    /// safe (a timeout only ever yields a nil vote or a later round) and keeps
    /// a round from stalling when votes were lost, for instance while a peer
    /// was disconnected or restarting.
    fn enter_step(&mut self, step: Step, out: &mut Vec<Action>) {
        self.step = step;
        match step {
            Step::Propose => {}
            Step::Prevote => out.push(self.timeout(Step::Prevote, self.timeouts.prevote_ms)),
            Step::Precommit => out.push(self.timeout(Step::Precommit, self.timeouts.precommit_ms)),
        }
    }

    /// Line 11: StartRound.
    fn start_round(&mut self, round: u64, out: &mut Vec<Action>) {
        self.enter_round(round);
        let me = self.signer().as_ref().map(KeyPair::public);
        if me.is_some() && me == Some(self.validators.proposer(self.height, round)) {
            match self.valid.clone() {
                Some((valid_round, block)) => self.propose(block, Some(valid_round), out),
                None => {
                    self.building = Some(round);
                    out.push(Action::BuildBlock {
                        height: self.height,
                        round,
                    });
                }
            }
        }
        let idle = if round == 0 {
            self.timeouts.idle_block_ms
        } else {
            0
        };
        out.push(self.timeout(Step::Propose, self.timeouts.propose_ms + idle));
    }

    /// Round `round`, at its propose step, with nothing of it done yet.
    fn enter_round(&mut self, round: u64) {
        self.round = round;
        self.step = Step::Propose;
        self.prevote_timeout_armed = false;
        self.precommit_timeout_armed = false;
        self.polka_seen = false;
        self.building = None;
        self.proposal_unsent = false;
    }

    fn timeout(&self, step: Step, base_ms: u64) -> Action {
        Action::ScheduleTimeout {
            height: self.height,
            round: self.round,
            step,
            after_ms: base_ms.saturating_add(self.timeouts.delta_ms.saturating_mul(self.round)),
        }
    }

    /// The driver's answer to [`Action::BuildBlock`].
    pub fn on_block_built(&mut self, block: Block) -> Vec<Action> {
        let mut out = Vec::new();
        if self.building != Some(self.round)
            || block.header.height != self.height
            || block.header.round != self.round
            || self.step != Step::Propose
        {
            return out;
        }
        self.building = None;
        // We built it on committed state and executed it: it is valid.
        self.validity.insert(block.hash(), true);
        self.propose(Arc::new(block), None, &mut out);
        self.recheck(&mut out);
        out
    }

    fn propose(&mut self, block: Arc<Block>, pol_round: Option<u64>, out: &mut Vec<Action>) {
        let Some(key) = self.signer() else { return };
        let hash = block.hash();
        let pol_votes = pol_round
            .and_then(|r| self.rounds.get(&r))
            .map(|votes| {
                votes
                    .prevotes
                    .iter()
                    .filter(|(_, (b, _))| *b == Some(hash))
                    .map(|(k, (_, s))| (*k, *s))
                    .collect()
            })
            .unwrap_or_default();
        let mut proposal = Proposal {
            block,
            round: self.round,
            pol_round,
            pol_votes,
            signature: Signature([0; 64]),
        };
        proposal.signature = key.sign(&proposal.data(&self.chain_id).signing_hash());
        self.proposal_unsent = true;
        let _ = self.accept_proposal(proposal, out);
    }

    /// Whether a proof of equivocation a peer passed on is of a height near
    /// ours, the only ones taken. A proof is sent on once, when a node first
    /// keeps it, so older ones are owed to no one, and a validator signing
    /// conflicting votes for every height cannot fill its peers' disks.
    pub fn evidence_is_recent(&self, proof: &DuplicateVote) -> bool {
        let height = proof.second.data.height;
        height <= self.height + 1 && height.saturating_add(EVIDENCE_HEIGHTS) >= self.height
    }

    /// Why a proof of equivocation a peer passed on proves nothing against a
    /// validator of this chain, if it does not.
    pub fn check_evidence(&self, proof: &DuplicateVote) -> Result<(), &'static str> {
        if proof.second.data.chain_id != self.chain_id {
            return Err("the votes are another chain's");
        }
        if !self.validators.contains(&proof.second.voter) {
            return Err("the voter is not a validator");
        }
        proof.check()
    }

    /// A message from the network.
    pub fn on_message(&mut self, message: Message) -> (Vec<Action>, Result<(), Rejected>) {
        let mut out = Vec::new();
        let height = message.height();
        let checked = match self.note_height_ahead(&message) {
            Ok(checked) => checked,
            Err(e) => return (out, Err(e)),
        };
        if height == self.height + 1 {
            match self.buffer_next_height(message, checked) {
                Err(e) => return (out, Err(e)),
                // Kept, so signed by its round's proposer: its parent's
                // certificate is worth comparing with the votes held.
                Ok(true) => {
                    if let Some(Message::Proposal(p)) = self.future.last() {
                        out.extend(self.evidence_in(&p.block.parent_commit));
                    }
                }
                Ok(false) => {}
            }
            // Still reported, so the driver can check whether it fell behind.
            return (
                out,
                Err(Rejected::WrongHeight {
                    got: height,
                    current: self.height,
                }),
            );
        }
        let result = match message {
            Message::Proposal(p) => self.accept_proposal(*p, &mut out),
            Message::Vote(v) => self.accept_vote(v, &mut out),
        };
        if result.is_ok() {
            self.recheck(&mut out);
        }
        (out, result)
    }

    /// Keeps a validly signed message of the next height's first rounds,
    /// unless its signer already has one for that round and step; returns
    /// whether it was kept. A proposal whose body is not its header's must
    /// not take the real one's place, as in `accept_proposal`. `checked`:
    /// [`Consensus::check_signed_ahead`] already passed it.
    fn buffer_next_height(&mut self, message: Message, checked: bool) -> Result<bool, Rejected> {
        let slot = |m: &Message| match m {
            Message::Proposal(p) => (p.round, None, None),
            Message::Vote(v) => (v.data.round, Some(v.data.kind), Some(v.voter)),
        };
        let (round, kind, voter) = slot(&message);
        if round >= FUTURE_ROUNDS || self.future.iter().any(|m| slot(m) == (round, kind, voter)) {
            return Ok(false);
        }
        if !checked {
            self.check_signed_ahead(&message)?;
        }
        self.future.push(message);
        Ok(true)
    }

    /// Refuses a message for another chain, another height or a round too far ahead.
    fn check_envelope(&self, chain_id: &str, height: u64, round: u64) -> Result<(), Rejected> {
        if chain_id != self.chain_id {
            return Err(Rejected::WrongChain(chain_id.to_owned()));
        }
        if height != self.height {
            return Err(Rejected::WrongHeight {
                got: height,
                current: self.height,
            });
        }
        if round > self.round + MAX_ROUND_AHEAD {
            return Err(Rejected::RoundTooFar(round));
        }
        Ok(())
    }

    fn accept_proposal(&mut self, p: Proposal, out: &mut Vec<Action>) -> Result<(), Rejected> {
        let header = &p.block.header;
        self.check_envelope(&header.chain_id, header.height, p.round)?;
        if let Some(pol) = p.pol_round
            && pol >= p.round
        {
            return Err(Rejected::BadPolRound {
                pol_round: pol,
                round: p.round,
            });
        }
        // A fresh block was built in this round by this round's proposer; a
        // re-proposed one keeps the header it was built with, in its
        // proof-of-lock round or earlier, by that round's proposer.
        let built_by_round = match p.pol_round {
            None if header.round != p.round => {
                return Err(Rejected::RoundMismatch {
                    header: header.round,
                    proposal: p.round,
                });
            }
            None => p.round,
            Some(pol) if header.round > pol => {
                return Err(Rejected::RoundMismatch {
                    header: header.round,
                    proposal: p.round,
                });
            }
            Some(_) => header.round,
        };
        let builder = self.validators.proposer(self.height, built_by_round);
        if header.proposer != builder {
            return Err(Rejected::WrongProposer {
                got: header.proposer,
                expected: builder,
            });
        }
        if p.pol_votes.len() > self.validators.len() {
            return Err(Rejected::BadPolRound {
                pol_round: p.pol_round.unwrap_or(0),
                round: p.round,
            });
        }
        let expected = self.validators.proposer(self.height, p.round);
        let round = self.rounds.entry(p.round).or_default();
        if round.proposal.is_some() {
            return Err(Rejected::Duplicate);
        }
        expected
            .verify(&p.data(&self.chain_id).signing_hash(), &p.signature)
            .map_err(|_| Rejected::BadSignature)?;
        // The signature covers the header alone. A body that is not the
        // header's must not take the round's place, nor have the header
        // judged invalid: the header may be honest, the body spoiled on the
        // way, and the real one still to come.
        if let Some(mismatch) = p.block.mismatched_body(&p.block.tx_hashes()) {
            return Err(Rejected::BodyMismatch(mismatch));
        }
        let hash = p.block.hash();
        if let Some(pol) = p.pol_round
            && self.proves_polka(pol, hash, &p.pol_votes)
        {
            self.proven_polkas.insert((pol, hash));
        }
        let needs_validation = !self.validity.contains_key(&hash);
        let block = p.block.clone();
        let round = p.round;
        self.rounds.entry(round).or_default().proposal = Some(p);
        if needs_validation {
            out.push(Action::ValidateBlock(block));
        }
        Ok(())
    }

    /// The driver's answer to [`Action::ValidateBlock`].
    pub fn on_block_validated(&mut self, block: Hash, valid: bool) -> Vec<Action> {
        let mut out = Vec::new();
        self.validity.insert(block, valid);
        self.recheck(&mut out);
        out
    }

    /// True when `votes` holds valid prevotes of a quorum of distinct
    /// validators for `block` in `round`: a proof of lock on its own. A
    /// validator that also voted otherwise (equivocated) still counts here,
    /// as its signature for this block is real.
    fn proves_polka(&self, round: u64, block: Hash, votes: &[(PublicKey, Signature)]) -> bool {
        let message = VoteData {
            chain_id: self.chain_id.clone(),
            height: self.height,
            round,
            kind: VoteKind::Prevote,
            block: Some(block),
        }
        .signing_hash();
        let signers: BTreeSet<&PublicKey> = votes
            .iter()
            .filter(|(voter, signature)| {
                self.validators.contains(voter) && voter.verify(&message, signature).is_ok()
            })
            .map(|(voter, _)| voter)
            .collect();
        signers.len() >= self.validators.quorum()
    }

    /// Records a vote; the caller re-evaluates the rules afterwards. A
    /// validly signed vote that conflicts with one held is refused, and the
    /// two are kept as evidence.
    fn accept_vote(&mut self, vote: Vote, out: &mut Vec<Action>) -> Result<(), Rejected> {
        let d = &vote.data;
        self.check_envelope(&d.chain_id, d.height, d.round)?;
        if !self.validators.contains(&vote.voter) {
            return Err(Rejected::NotValidator(vote.voter));
        }
        let existing = self
            .rounds
            .get(&d.round)
            .and_then(|r| r.of(d.kind).get(&vote.voter))
            .copied();
        if existing.is_some_and(|(block, _)| block == d.block) {
            return Err(Rejected::Duplicate);
        }
        vote.voter
            .verify(&d.signing_hash(), &vote.signature)
            .map_err(|_| Rejected::BadSignature)?;
        // Checked after the signature: a forged conflicting vote is its
        // sender's doing, not the named voter's equivocation.
        if let Some((block, signature)) = existing {
            let voter = vote.voter;
            let first = Vote {
                data: VoteData { block, ..d.clone() },
                voter,
                signature,
            };
            out.push(Action::RecordEvidence(Box::new(DuplicateVote {
                first,
                second: vote,
            })));
            return Err(Rejected::Equivocation(voter));
        }
        let round = self.rounds.entry(d.round).or_default();
        let votes = match d.kind {
            VoteKind::Prevote => &mut round.prevotes,
            VoteKind::Precommit => &mut round.precommits,
        };
        votes.insert(vote.voter, (d.block, vote.signature));
        Ok(())
    }

    /// A timer set by [`Action::ScheduleTimeout`] fired.
    pub fn on_timeout(&mut self, height: u64, round: u64, step: Step) -> Vec<Action> {
        let mut out = Vec::new();
        if height != self.height || round != self.round {
            return out;
        }
        self.resend_own(&mut out);
        match step {
            // Line 57.
            Step::Propose if self.step == Step::Propose => {
                self.building = None;
                self.vote(VoteKind::Prevote, None, &mut out);
                self.enter_step(Step::Prevote, &mut out);
            }
            // Line 61.
            Step::Prevote if self.step == Step::Prevote => {
                self.vote(VoteKind::Precommit, None, &mut out);
                self.enter_step(Step::Precommit, &mut out);
            }
            // Line 65.
            Step::Precommit => self.start_round(round + 1, &mut out),
            _ => {}
        }
        self.recheck(&mut out);
        out
    }

    /// Sends again what we said in the current round. Messages can be lost,
    /// and a round whose votes never arrive cannot end; receivers drop
    /// duplicates.
    fn resend_own(&self, out: &mut Vec<Action>) {
        let Some(key) = &self.key else { return };
        let me = key.public();
        let Some(votes) = self.rounds.get(&self.round) else {
            return;
        };
        if let Some(p) = &votes.proposal
            && self.validators.proposer(self.height, self.round) == me
            && !self.proposal_unsent
        {
            out.push(Action::Broadcast(Message::Proposal(Box::new(p.clone()))));
        }
        for (kind, map) in [
            (VoteKind::Prevote, &votes.prevotes),
            (VoteKind::Precommit, &votes.precommits),
        ] {
            if let Some((block, signature)) = map.get(&me) {
                let data = VoteData {
                    chain_id: self.chain_id.clone(),
                    height: self.height,
                    round: self.round,
                    kind,
                    block: *block,
                };
                out.push(Action::Broadcast(Message::Vote(Vote {
                    data,
                    voter: me,
                    signature: *signature,
                })));
            }
        }
    }

    /// Signs, records and broadcasts our vote, persisting it first. Refuses to
    /// sign anything that contradicts the persisted last vote.
    fn vote(&mut self, kind: VoteKind, block: Option<Hash>, out: &mut Vec<Action>) {
        let Some(key) = self.signer() else { return };
        if let Some((r, k, b)) = self.safety.last_vote
            && ((r, k) > (self.round, kind) || ((r, k) == (self.round, kind) && b != block))
        {
            return;
        }
        self.safety.last_vote = Some((self.round, kind, block));
        self.safety.locked = self.locked.clone();
        out.push(Action::PersistSafety(self.safety.clone()));
        let data = VoteData {
            chain_id: self.chain_id.clone(),
            height: self.height,
            round: self.round,
            kind,
            block,
        };
        let vote = data.sign(&key);
        out.push(Action::Broadcast(Message::Vote(vote.clone())));
        // Our own freshly signed vote cannot be a duplicate or equivocation:
        // the check against `last_vote` above rules both out.
        let _ = self.accept_vote(vote, out);
    }

    fn is_valid(&self, block: &Block) -> Option<bool> {
        self.validity.get(&block.hash()).copied()
    }

    /// May the lock let us prevote for `hash`, given a proof of lock from `pol_round`?
    fn lock_allows(&self, hash: Hash, pol_round: Option<u64>) -> bool {
        match (self.locked.as_ref().map(|(r, b)| (*r, b.hash())), pol_round) {
            (None, _) => true,
            (Some((_, locked)), _) if locked == hash => true,
            (Some((locked_round, _)), Some(pol)) => locked_round <= pol,
            (Some(_), None) => false,
        }
    }

    /// Applies every rule whose condition now holds, until none does. Each rule
    /// changes the height, round or step or arms a one-shot flag, so this ends.
    fn recheck(&mut self, out: &mut Vec<Action>) {
        loop {
            let before = (
                self.height,
                self.round,
                self.step,
                self.prevote_timeout_armed,
                self.precommit_timeout_armed,
                self.polka_seen,
            );
            self.apply_rules(out);
            let after = (
                self.height,
                self.round,
                self.step,
                self.prevote_timeout_armed,
                self.precommit_timeout_armed,
                self.polka_seen,
            );
            if before == after {
                break;
            }
        }
        self.send_own_proposal(out);
    }

    /// Sends our proposal of this round once our prevote in it is saved: the
    /// vote's [`Action::PersistSafety`] precedes this in `out`, or an earlier
    /// batch saved it. A crash before then leaves nothing sent, and one after
    /// it resumes in the round, where a proposer proposes no more (`resume`):
    /// no restart signs a second proposal for a round whose first went out.
    /// A block we just built is judged, so its prevote and the proposal go in
    /// one batch; a block we re-propose unjudged (our `valid` block after a
    /// restart) leaves once the driver's verdict brings our prevote.
    fn send_own_proposal(&mut self, out: &mut Vec<Action>) {
        let Some(me) = self.key.as_ref().map(KeyPair::public) else {
            return;
        };
        let Some(votes) = self.rounds.get(&self.round) else {
            return;
        };
        if !self.proposal_unsent || !votes.prevotes.contains_key(&me) {
            return;
        }
        if let Some(p) = &votes.proposal {
            out.push(Action::Broadcast(Message::Proposal(Box::new(p.clone()))));
        }
        self.proposal_unsent = false;
    }

    fn apply_rules(&mut self, out: &mut Vec<Action>) {
        let quorum = self.validators.quorum();

        // Line 49: a proposal with a quorum of precommits in any round decides.
        // The block we are locked on counts as well: after a restart it may be
        // the only copy of a block this validator precommitted (and decided,
        // then lost before writing it).
        let locked = self.locked.as_ref().map(|(_, block)| block);
        let decided = self.rounds.iter().find_map(|(&r, votes)| {
            let proposal = votes.proposal.as_ref().map(|p| &p.block);
            let block = proposal
                .into_iter()
                .chain(locked)
                .find(|block| votes.count(VoteKind::Precommit, Some(block.hash())) >= quorum)?;
            Some((r, block.clone()))
        });
        if let Some((r, block)) = decided
            && self.is_valid(&block) == Some(true)
        {
            self.decide(r, block, out);
            return;
        }

        // Line 55: more than a third of the validators are in a later round: join it.
        let ahead = self.rounds.iter().rev().find_map(|(&r, votes)| {
            let mut senders: Vec<PublicKey> = votes.senders().copied().collect();
            // A proposal speaks for the round's proposer, who signed it, not
            // for the builder its header names: a re-proposal carries the
            // block of an earlier round's proposer.
            if votes.proposal.is_some() {
                senders.push(self.validators.proposer(self.height, r));
            }
            senders.sort();
            senders.dedup();
            (r > self.round && senders.len() >= self.validators.one_third_plus()).then_some(r)
        });
        if let Some(r) = ahead {
            self.start_round(r, out);
            return;
        }

        let round = self.round;
        let Some(current) = self.rounds.get(&round) else {
            return;
        };
        let proposal = current.proposal.clone();

        // Line 22 (a fresh proposal) and line 28 (a re-proposal with a quorum
        // of prevotes from its proof-of-lock round).
        if self.step == Step::Propose
            && let Some(p) = &proposal
            && let Some(valid) = self.is_valid(&p.block)
        {
            let hash = p.block.hash();
            let justified = match p.pol_round {
                None => true,
                Some(pol) => {
                    self.proven_polkas.contains(&(pol, hash))
                        || self
                            .rounds
                            .get(&pol)
                            .is_some_and(|v| v.count(VoteKind::Prevote, Some(hash)) >= quorum)
                }
            };
            // A re-proposal whose proof of lock we cannot see (its prevotes
            // lost, in a restart say) is still judged as line 22 judges a
            // fresh one: prevoting a block while unlocked or locked on it is
            // safe whatever the proposal claims. Only a validator locked on
            // another block waits for the proof, which alone may release it.
            let as_fresh = self.lock_allows(hash, None);
            if justified || as_fresh {
                let pol_round = if justified { p.pol_round } else { None };
                let ok = valid && self.lock_allows(hash, pol_round);
                self.vote(VoteKind::Prevote, ok.then_some(hash), out);
                self.enter_step(Step::Prevote, out);
            }
        }

        let Some(current) = self.rounds.get(&round) else {
            return;
        };
        // Line 34: any quorum of prevotes arms the prevote timeout once.
        if self.step == Step::Prevote
            && !self.prevote_timeout_armed
            && current.prevotes.len() >= quorum
        {
            self.prevote_timeout_armed = true;
            out.push(self.timeout(Step::Prevote, self.timeouts.prevote_ms));
        }

        // Line 36: a valid proposal with a quorum of prevotes: lock and precommit.
        if let Some(p) = &proposal {
            let hash = p.block.hash();
            if self.step >= Step::Prevote
                && !self.polka_seen
                && current.count(VoteKind::Prevote, Some(hash)) >= quorum
                && self.is_valid(&p.block) == Some(true)
            {
                self.polka_seen = true;
                if self.step == Step::Prevote {
                    self.locked = Some((round, p.block.clone()));
                    self.vote(VoteKind::Precommit, Some(hash), out);
                    self.enter_step(Step::Precommit, out);
                }
                self.valid = Some((round, p.block.clone()));
            }
        }

        let Some(current) = self.rounds.get(&round) else {
            return;
        };
        // Line 44: a quorum of nil prevotes.
        if self.step == Step::Prevote && current.count(VoteKind::Prevote, None) >= quorum {
            self.vote(VoteKind::Precommit, None, out);
            self.enter_step(Step::Precommit, out);
        }

        let Some(current) = self.rounds.get(&round) else {
            return;
        };
        // Line 47: any quorum of precommits arms the precommit timeout once.
        if !self.precommit_timeout_armed && current.precommits.len() >= quorum {
            self.precommit_timeout_armed = true;
            out.push(self.timeout(Step::Precommit, self.timeouts.precommit_ms));
        }
    }

    fn decide(&mut self, round: u64, block: Arc<Block>, out: &mut Vec<Action>) {
        let hash = block.hash();
        let votes = &self.rounds[&round].precommits;
        let certificate = QuorumCertificate {
            height: self.height,
            round,
            block: hash,
            votes: votes
                .iter()
                .filter(|(_, (b, _))| *b == Some(hash))
                .map(|(k, (_, s))| (*k, *s))
                .collect(),
        };
        out.push(Action::Commit { block, certificate });
        self.enter_height(self.height + 1, out);
    }

    /// Drops the state of the current height and starts round 0 of `height`.
    fn enter_height(&mut self, height: u64, out: &mut Vec<Action>) {
        self.height = height;
        self.rounds.clear();
        self.validity.clear();
        self.proven_polkas.clear();
        self.heights_ahead.retain(|_, h| *h > height);
        self.safety = match self.signed_ahead.take() {
            Some(record) if record.height == height => record,
            Some(record) if record.height > height => {
                self.signed_ahead = Some(record);
                SafetyState::fresh(height)
            }
            _ => SafetyState::fresh(height),
        };
        self.locked = self.safety.locked.clone();
        self.valid = self.safety.locked.clone();
        self.resume(out);
        for message in std::mem::take(&mut self.future) {
            if message.height() == height {
                // Replayed as if it arrived now; what fails to apply is dropped.
                let _ = match message {
                    Message::Proposal(p) => self.accept_proposal(*p, out),
                    Message::Vote(v) => self.accept_vote(v, out),
                };
            }
        }
    }

    /// Evidence in a certificate for the current height: a precommit in it by
    /// a validator whose precommit for that round this node holds for another
    /// block (or nil). An equivocator sends each side one vote; the side that
    /// did not decide meets the other in the certificate that the next
    /// height's proposal, or block sync, brings. At most one signature check
    /// per validator whose vote is held, whatever the certificate holds.
    pub fn evidence_in(&self, certificate: &QuorumCertificate) -> Vec<Action> {
        let held = match self.rounds.get(&certificate.round) {
            Some(round) if certificate.height == self.height => &round.precommits,
            _ => return Vec::new(),
        };
        // Sorted by validator, one each, as a valid certificate is.
        if !certificate.votes.is_sorted_by(|a, b| a.0 < b.0) {
            return Vec::new();
        }
        let data = certificate.vote_data(&self.chain_id);
        held.iter()
            .filter(|(_, (block, _))| *block != data.block)
            .filter_map(|(&voter, &(block, held_signature))| {
                let at = certificate
                    .votes
                    .binary_search_by(|(v, _)| v.cmp(&voter))
                    .ok()?;
                let signature = certificate.votes[at].1;
                // A forged vote in the certificate proves nothing (the held
                // one was checked on arrival).
                voter.verify(&data.signing_hash(), &signature).ok()?;
                let first = Vote {
                    data: VoteData {
                        block,
                        ..data.clone()
                    },
                    voter,
                    signature: held_signature,
                };
                let second = Vote {
                    data: data.clone(),
                    voter,
                    signature,
                };
                Some(Action::RecordEvidence(Box::new(DuplicateVote {
                    first,
                    second,
                })))
            })
            .collect()
    }

    /// Moves to `height` after the driver committed the blocks below it by
    /// block sync. Never moves backwards.
    pub fn catch_up(&mut self, height: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if height > self.height {
            self.enter_height(height, &mut out);
            self.recheck(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests;
