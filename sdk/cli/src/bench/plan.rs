//! The planner: which transaction to sign next, on what, and by whom.
//!
//! It holds what the generator knows of the chain — its accounts and their
//! nonces, the pieces it may act on, the receivables and their maturities —
//! learned from committed transactions only, and picks each next operation so
//! that the signed mix follows the target shares. A piece is acted on only in
//! a state the generator saw committed, and never by two transactions at
//! once. Pure logic: the caller passes the time, signs, sends and feeds back
//! commits, so tests drive it with a fake chain.

use foldhash::{HashMap, HashMapExt};
use std::collections::{BTreeSet, VecDeque};
use trellis_receivables::{
    AcceptFinancing, Issue, PieceId, PieceRef, RequestFinancing, Settle, Split, Terms, Transfer,
};
use trellis_types::api::CommittedTx;
use trellis_types::{
    Address, Bytes, EventSource, Hash, KeyPair, Payload, ReceiptStatus, SystemOp, Transaction,
};

/// What the mix is made of: the five kinds of receivables operations of the
/// issue's target mix, or remarks alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Issue,
    Transfer,
    Split,
    Financing,
    Settle,
    Remark,
}

impl Kind {
    pub const RECEIVABLES: [Kind; 5] = [
        Kind::Issue,
        Kind::Transfer,
        Kind::Split,
        Kind::Financing,
        Kind::Settle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Issue => "issue",
            Kind::Transfer => "transfer",
            Kind::Split => "split",
            Kind::Financing => "financing",
            Kind::Settle => "settle",
            Kind::Remark => "remark",
        }
    }

    /// The target share of all transactions, in thousandths.
    pub fn target_permille(self) -> u32 {
        Method::ALL
            .iter()
            .filter(|m| m.kind() == self)
            .map(|m| m.target_permille())
            .sum()
    }
}

/// One signed transaction's method. Each is one operation; the issue's
/// acceptance and the financing's acceptance count under their kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Issue,
    Accept,
    Transfer,
    Split,
    RequestFinancing,
    AcceptFinancing,
    Settle,
    Remark,
}

impl Method {
    pub const ALL: [Method; 8] = [
        Method::Issue,
        Method::Accept,
        Method::Transfer,
        Method::Split,
        Method::RequestFinancing,
        Method::AcceptFinancing,
        Method::Settle,
        Method::Remark,
    ];

    /// The methods the planner starts of its own accord (the others answer a commit).
    const INITIATORS: [Method; 5] = [
        Method::Issue,
        Method::Transfer,
        Method::Split,
        Method::RequestFinancing,
        Method::Settle,
    ];

    pub fn kind(self) -> Kind {
        match self {
            Method::Issue | Method::Accept => Kind::Issue,
            Method::Transfer => Kind::Transfer,
            Method::Split => Kind::Split,
            Method::RequestFinancing | Method::AcceptFinancing => Kind::Financing,
            Method::Settle => Kind::Settle,
            Method::Remark => Kind::Remark,
        }
    }

    /// The contract method's name (or `remark`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Issue => "issue",
            Method::Accept => "accept",
            Method::Transfer => "transfer",
            Method::Split => "split",
            Method::RequestFinancing => "request_financing",
            Method::AcceptFinancing => "accept_financing",
            Method::Settle => "settle",
            Method::Remark => "remark",
        }
    }

    /// Target share of all transactions of the receivables mix, in
    /// thousandths: issue 5 % (issue 2.5 + accept 2.5), transfer 40 %,
    /// split 40 %, financing 10 % (request 5 + accept 5), settle 5 %.
    pub fn target_permille(self) -> u32 {
        match self {
            Method::Issue | Method::Accept => 25,
            Method::Transfer | Method::Split => 400,
            Method::RequestFinancing | Method::AcceptFinancing | Method::Settle => 50,
            Method::Remark => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    Receivables,
    Remark,
}

/// What the planner does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing new (waiting, draining).
    Idle,
    /// Issue and accept the setup's receivables.
    Setup,
    /// The measured mix.
    Run,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mix: Mix,
    pub chain_id: String,
    pub contract: Address,
    /// The core enterprise that issues and settles.
    pub issuer: String,
    /// Who holds, moves, splits and asks for financing.
    pub suppliers: Vec<String>,
    /// Who finances.
    pub bank: String,
    /// The contract's `min_piece_amount`, `max_depth` and `acceptance_window_ms`.
    pub min_piece: u128,
    pub max_depth: u8,
    pub acceptance_window_ms: u64,
    /// Face value of every receivable issued.
    pub root_amount: u128,
    pub currency: String,
    /// Most transactions one account has signed and not yet seen committed.
    pub account_cap: u32,
    /// How long a signed transaction stays valid.
    pub tx_ttl_ms: u64,
    /// No piece is moved, split or financed this close to its maturity (plus
    /// twice the longest recent wait from signing to a block), so nothing
    /// signed fails for having matured on its way to a block.
    pub move_margin_ms: u64,
    /// Receivables issued during the run mature this long after the
    /// acceptance window ends.
    pub run_maturity_after_window_ms: u64,
    /// How much more the issuer may have outstanding than when the bench began.
    pub credit_headroom: u128,
    /// Makes invoice hashes and remarks unique to this run.
    pub run_tag: u64,
}

/// An account the planner may sign with.
#[derive(Debug, Clone)]
pub struct AccountSpec {
    pub key: KeyPair,
    pub org: String,
    /// The next nonce, as read from the chain.
    pub nonce: u64,
}

/// A transaction to sign, and what it is for; hand `ticket` back with the
/// signed hash to [`Planner::bind`].
pub struct Planned {
    pub tx: Transaction,
    pub account: usize,
    pub ticket: Ticket,
}

/// What the planner remembers of a transaction it planned.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub method: Method,
    /// Planned in the run phase: it counts in the results.
    pub measured: bool,
    account: usize,
    nonce: u64,
    target: Target,
    planned_ms: u64,
}

#[derive(Debug, Clone)]
enum Target {
    None,
    Issue {
        amount: u128,
        maturity_ms: u64,
        to: usize,
    },
    Piece(PieceId),
    Root(PieceId),
    Financing(PieceId, Terms),
}

/// What became of a transaction of the planner's: returned for the results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub method: Method,
    pub measured: bool,
    /// The contract's (or the node's) code of a failed execution.
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Active,
    Offered,
    Financed,
}

#[derive(Debug, Clone)]
struct Piece {
    root: PieceId,
    holder: usize,
    amount: u128,
    depth: u8,
    state: State,
    busy: bool,
}

#[derive(Debug, Clone)]
struct Root {
    maturity_ms: u64,
    amount: u128,
    /// Transactions in flight on its pieces (a settle waits for none).
    busy: u32,
    /// Settled, or never accepted: nothing more to do with it.
    done: bool,
}

#[derive(Debug, Clone)]
enum Reaction {
    Accept(PieceId),
    AcceptFinancing(PieceId, Terms),
}

#[derive(Debug)]
struct Acct {
    key: KeyPair,
    nonce: u64,
    in_flight: u32,
}

#[derive(Debug)]
struct Org {
    name: String,
    accounts: Vec<usize>,
    next: usize,
}

/// How far one method may fall behind its share before it stops gaining
/// priority: an operation that cannot happen for a while (a settle before
/// anything matured) then comes back at its share, not in a burst.
const MAX_DEFICIT: f64 = 32.0;

/// Annual discount rate of every financing request: 3.5 %.
const FINANCING_RATE_BPS: u32 = 350;
/// A financing request stays open this long at most.
const OFFER_TTL_MS: u64 = 120_000;

pub struct Planner {
    cfg: Config,
    accounts: Vec<Acct>,
    orgs: Vec<Org>,
    issuer: usize,
    suppliers: Vec<usize>,
    bank: usize,
    next_supplier: usize,
    next_account: usize,
    pieces: HashMap<PieceId, Piece>,
    roots: HashMap<PieceId, Root>,
    /// Idle active pieces that can still be split, and the others.
    splittable: VecDeque<PieceId>,
    leaves: VecDeque<PieceId>,
    /// Accepted, unsettled receivables by maturity; then those matured.
    maturing: BTreeSet<(u64, PieceId)>,
    matured: VecDeque<PieceId>,
    reactions: VecDeque<Reaction>,
    /// Nonces of refused transactions, to fill with a remark so the
    /// account's later transactions are not stuck behind the gap.
    fillers: VecDeque<(usize, u64)>,
    setup_roots: VecDeque<u64>,
    phase: Phase,
    pending: HashMap<Hash, Ticket>,
    /// Transactions planned in the run phase, per method, for the mix.
    planned: HashMap<Method, u64>,
    chain_time_ms: u64,
    /// The longest recent wait from planning to a block's timestamp, decaying.
    delay_ms: u64,
    /// Issued since the bench began and not yet settled (or failed).
    credit_used: u128,
    seq: u64,
    /// The highest piece id seen made.
    newest_piece: PieceId,
}

impl Planner {
    pub fn new(cfg: Config, accounts: Vec<AccountSpec>) -> Planner {
        let mut orgs: Vec<Org> = Vec::new();
        let org_index = |name: &str, orgs: &mut Vec<Org>| -> usize {
            match orgs.iter().position(|o| o.name == name) {
                Some(i) => i,
                None => {
                    orgs.push(Org {
                        name: name.to_owned(),
                        accounts: Vec::new(),
                        next: 0,
                    });
                    orgs.len() - 1
                }
            }
        };
        let issuer = org_index(&cfg.issuer, &mut orgs);
        let suppliers = cfg
            .suppliers
            .iter()
            .map(|s| org_index(s, &mut orgs))
            .collect();
        let bank = org_index(&cfg.bank, &mut orgs);
        let mut accts = Vec::with_capacity(accounts.len());
        for spec in accounts {
            let org = org_index(&spec.org, &mut orgs);
            orgs[org].accounts.push(accts.len());
            accts.push(Acct {
                key: spec.key,
                nonce: spec.nonce,
                in_flight: 0,
            });
        }
        Planner {
            cfg,
            accounts: accts,
            orgs,
            issuer,
            suppliers,
            bank,
            next_supplier: 0,
            next_account: 0,
            pieces: HashMap::new(),
            roots: HashMap::new(),
            splittable: VecDeque::new(),
            leaves: VecDeque::new(),
            maturing: BTreeSet::new(),
            matured: VecDeque::new(),
            reactions: VecDeque::new(),
            fillers: VecDeque::new(),
            setup_roots: VecDeque::new(),
            phase: Phase::Idle,
            pending: HashMap::new(),
            planned: HashMap::new(),
            chain_time_ms: 0,
            delay_ms: 0,
            credit_used: 0,
            seq: 0,
            newest_piece: 0,
        }
    }

    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    /// Receivables for the setup to issue (and accept), with these maturities.
    pub fn add_setup_roots(&mut self, maturities: impl IntoIterator<Item = u64>) {
        self.setup_roots.extend(maturities);
    }

    /// The setup's receivables are all issued and answered (accepted or failed).
    pub fn setup_done(&self) -> bool {
        self.setup_roots.is_empty() && self.reactions.is_empty() && self.pending.is_empty()
    }

    /// Transactions planned and not yet seen committed or given up on.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// The key that signs for account `index`.
    pub fn key(&self, index: usize) -> &KeyPair {
        &self.accounts[index].key
    }

    /// The latest committed block time seen.
    pub fn chain_time_ms(&self) -> u64 {
        self.chain_time_ms
    }

    /// The highest piece id seen made (0 before any).
    pub fn newest_piece(&self) -> PieceId {
        self.newest_piece
    }

    /// Pieces ready to act on, and receivables accepted and not yet settled.
    pub fn pool(&self) -> (usize, usize) {
        (
            self.splittable.len() + self.leaves.len(),
            self.maturing.len() + self.matured.len(),
        )
    }

    /// Records the hash `ticket`'s transaction was signed to.
    pub fn bind(&mut self, hash: Hash, ticket: Ticket) {
        self.pending.insert(hash, ticket);
    }

    /// Whether the planner is waiting for this transaction.
    pub fn is_pending(&self, hash: &Hash) -> bool {
        self.pending.contains_key(hash)
    }

    /// The next transaction to sign, if one can be made now (wall clock `now_ms`).
    pub fn next(&mut self, now_ms: u64) -> Option<Planned> {
        if let Some((account, nonce)) = self.fillers.pop_front() {
            let data = self.remark_data();
            return Some(self.plan_with_nonce(
                account,
                nonce,
                Method::Remark,
                Target::None,
                Payload::System(SystemOp::Remark { data }),
                now_ms,
            ));
        }
        match (self.phase, self.cfg.mix) {
            (Phase::Idle, _) => None,
            (Phase::Run, Mix::Remark) => self.remark(now_ms),
            (Phase::Setup, _) => self.reaction(now_ms).or_else(|| self.setup_issue(now_ms)),
            (Phase::Run, Mix::Receivables) => {
                self.promote_matured();
                if let Some(p) = self.reaction(now_ms) {
                    return Some(p);
                }
                let order = self.priorities();
                order
                    .into_iter()
                    .find_map(|method| self.initiate(method, now_ms))
            }
        }
    }

    /// A committed transaction (anyone's): updates the chain time, and for
    /// one of ours, what it changed. `None` when it is not ours.
    pub fn on_commit(&mut self, tx: &CommittedTx) -> Option<Outcome> {
        self.chain_time_ms = self.chain_time_ms.max(tx.block_time_ms);
        let ticket = self.pending.remove(&tx.tx_hash)?;
        self.accounts[ticket.account].in_flight -= 1;
        let delay = tx.block_time_ms.saturating_sub(ticket.planned_ms);
        self.delay_ms = delay.max(self.delay_ms - self.delay_ms / 1_000);
        let ok = tx.status == ReceiptStatus::Success;
        if ok {
            self.applied(&ticket, tx);
        } else {
            self.failed(&ticket);
        }
        Some(Outcome {
            method: ticket.method,
            measured: ticket.measured,
            failure: if ok {
                None
            } else {
                Some(
                    tx.error
                        .as_ref()
                        .map_or_else(|| "unknown".to_owned(), |e| e.code.clone()),
                )
            },
        })
    }

    /// A transaction the node refused for good (`code`): it never ran, so
    /// what it was about is as it was. Its nonce is filled with a remark
    /// unless the refusal says the nonce is used already.
    pub fn on_refused(&mut self, hash: &Hash, code: &str) -> Option<Outcome> {
        let ticket = self.pending.remove(hash)?;
        self.accounts[ticket.account].in_flight -= 1;
        if code != "nonce_replayed" {
            self.fillers.push_back((ticket.account, ticket.nonce));
        }
        match &ticket.target {
            Target::None => {}
            Target::Issue {
                amount,
                maturity_ms,
                ..
            } => {
                self.credit_used = self.credit_used.saturating_sub(*amount);
                if !ticket.measured {
                    self.setup_roots.push_back(*maturity_ms);
                }
            }
            Target::Piece(id) | Target::Financing(id, _) => {
                let id = *id;
                match ticket.method {
                    Method::Accept => self.reactions.push_back(Reaction::Accept(id)),
                    Method::AcceptFinancing => {
                        if let Target::Financing(_, terms) = &ticket.target {
                            self.reactions
                                .push_back(Reaction::AcceptFinancing(id, terms.clone()));
                        }
                    }
                    _ => {
                        self.set_busy(id, false);
                        self.enqueue(id);
                    }
                }
            }
            Target::Root(root) => {
                if let Some(r) = self.roots.get_mut(root) {
                    r.busy -= 1;
                    self.matured.push_back(*root);
                }
            }
        }
        Some(Outcome {
            method: ticket.method,
            measured: ticket.measured,
            failure: None,
        })
    }

    // ---- choosing ----

    /// The initiating methods that may go next, most behind their share
    /// first. Shares are of initiating transactions: the acceptances answer
    /// issues and financing requests one for one, later, so counting them
    /// would hold the initiators back by what is in flight. Settlements need
    /// receivables that matured, which a run does not have at every moment:
    /// their share is of all initiators, the others' shares are of the rest,
    /// so a lack of settlements neither stalls the others nor is made up by
    /// them. The others may run ahead of their share by a little only: when
    /// pieces run short the planner waits for commits rather than fill in
    /// with whatever is possible.
    fn priorities(&self) -> Vec<Method> {
        let count = |m: Method| *self.planned.get(&m).unwrap_or(&0) as f64;
        let share = |m: Method| f64::from(m.target_permille());
        let initiators: f64 = Method::INITIATORS.iter().map(|&m| count(m)).sum::<f64>() + 1.0;
        let all_shares: f64 = Method::INITIATORS.iter().map(|&m| share(m)).sum();
        let rest = initiators - count(Method::Settle);
        let rest_shares = all_shares - share(Method::Settle);
        let mut order: Vec<(f64, Method)> = Method::INITIATORS
            .iter()
            .filter_map(|&m| {
                let (expected, allowance) = if m == Method::Settle {
                    (share(m) / all_shares * initiators, f64::INFINITY)
                } else {
                    let expected = share(m) / rest_shares * rest;
                    (expected, 4.0 + 0.01 * expected)
                };
                let deficit = expected - count(m);
                (deficit > -allowance).then_some((deficit.min(MAX_DEFICIT), m))
            })
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0));
        order.into_iter().map(|(_, m)| m).collect()
    }

    fn initiate(&mut self, method: Method, now_ms: u64) -> Option<Planned> {
        match method {
            Method::Issue => self.issue(now_ms, None),
            Method::Transfer => self.transfer(now_ms),
            Method::Split => self.split(now_ms),
            Method::RequestFinancing => self.request_financing(now_ms),
            Method::Settle => self.settle(now_ms),
            _ => None,
        }
    }

    fn reaction(&mut self, now_ms: u64) -> Option<Planned> {
        let reaction = self.reactions.pop_front()?;
        let (org, method, target, args) = match &reaction {
            Reaction::Accept(id) => {
                let holder = self.pieces.get(id)?.holder;
                let args = trellis_types::encode(&PieceRef { piece: *id });
                (holder, Method::Accept, Target::Piece(*id), args)
            }
            Reaction::AcceptFinancing(id, terms) => {
                let args = trellis_types::encode(&AcceptFinancing {
                    piece: *id,
                    bank: self.orgs[self.bank].name.clone(),
                    terms: terms.clone(),
                    payment_ref: format!("BENCH-FIN-{}", self.seq),
                });
                (
                    self.bank,
                    Method::AcceptFinancing,
                    Target::Financing(*id, terms.clone()),
                    args,
                )
            }
        };
        let Some(account) = self.account_of(org) else {
            self.reactions.push_front(reaction);
            return None;
        };
        Some(self.plan(account, method, target, self.call(method, args), now_ms))
    }

    fn setup_issue(&mut self, now_ms: u64) -> Option<Planned> {
        let maturity = *self.setup_roots.front()?;
        let planned = self.issue(now_ms, Some(maturity))?;
        self.setup_roots.pop_front();
        Some(planned)
    }

    fn issue(&mut self, now_ms: u64, maturity_ms: Option<u64>) -> Option<Planned> {
        let amount = self.cfg.root_amount;
        if self.credit_used.saturating_add(amount) > self.cfg.credit_headroom {
            return None;
        }
        let account = self.account_of(self.issuer)?;
        let earliest =
            now_ms + self.cfg.acceptance_window_ms + self.cfg.run_maturity_after_window_ms;
        let maturity_ms = maturity_ms.unwrap_or(earliest);
        let to = self.next_supplier();
        let invoice = format!("trellis-bench/{}/{}", self.cfg.run_tag, self.seq);
        let args = trellis_types::encode(&Issue {
            to: self.orgs[to].name.clone(),
            amount,
            currency: self.cfg.currency.clone(),
            maturity_ms,
            invoice_hash: trellis_sdk::invoice_hash(invoice.as_bytes()),
            terms: String::new(),
        });
        self.credit_used += amount;
        let target = Target::Issue {
            amount,
            maturity_ms,
            to,
        };
        Some(self.plan(
            account,
            Method::Issue,
            target,
            self.call(Method::Issue, args),
            now_ms,
        ))
    }

    fn transfer(&mut self, now_ms: u64) -> Option<Planned> {
        let (id, account) = self.take_piece(now_ms, false, false)?;
        let holder = self.pieces[&id].holder;
        let to = self.other_supplier(holder);
        let args = trellis_types::encode(&Transfer {
            piece: id,
            to: self.orgs[to].name.clone(),
        });
        Some(self.plan(
            account,
            Method::Transfer,
            Target::Piece(id),
            self.call(Method::Transfer, args),
            now_ms,
        ))
    }

    fn split(&mut self, now_ms: u64) -> Option<Planned> {
        let (id, account) = self.take_piece(now_ms, true, false)?;
        let (holder, amount) = {
            let p = &self.pieces[&id];
            (p.holder, p.amount)
        };
        let to = self.other_supplier(holder);
        let part = split_part(amount, self.cfg.min_piece, self.seq);
        let args = trellis_types::encode(&Split {
            piece: id,
            parts: vec![(self.orgs[to].name.clone(), part)],
        });
        Some(self.plan(
            account,
            Method::Split,
            Target::Piece(id),
            self.call(Method::Split, args),
            now_ms,
        ))
    }

    fn request_financing(&mut self, now_ms: u64) -> Option<Planned> {
        let (id, account) = self.take_piece(now_ms, false, true)?;
        let maturity = self.roots[&self.pieces[&id].root].maturity_ms;
        let terms = Terms {
            price: None,
            annual_rate_bps: Some(FINANCING_RATE_BPS),
            expires_ms: (now_ms + OFFER_TTL_MS).min(maturity - 1),
        };
        let args = trellis_types::encode(&RequestFinancing {
            piece: id,
            bank: self.orgs[self.bank].name.clone(),
            terms: terms.clone(),
        });
        Some(self.plan(
            account,
            Method::RequestFinancing,
            Target::Financing(id, terms),
            self.call(Method::RequestFinancing, args),
            now_ms,
        ))
    }

    fn settle(&mut self, now_ms: u64) -> Option<Planned> {
        let mut root = None;
        for _ in 0..self.matured.len() {
            let Some(id) = self.matured.pop_front() else {
                break;
            };
            match self.roots.get(&id) {
                Some(r) if r.done => {}
                Some(r) if r.busy > 0 => self.matured.push_back(id),
                Some(_) => {
                    root = Some(id);
                    break;
                }
                None => {}
            }
        }
        let root = root?;
        let Some(account) = self.account_of(self.issuer) else {
            self.matured.push_front(root);
            return None;
        };
        if let Some(r) = self.roots.get_mut(&root) {
            r.busy += 1;
        }
        let args = trellis_types::encode(&Settle {
            root,
            payment_ref: format!("BENCH-PAY-{}", self.seq),
        });
        Some(self.plan(
            account,
            Method::Settle,
            Target::Root(root),
            self.call(Method::Settle, args),
            now_ms,
        ))
    }

    fn remark(&mut self, now_ms: u64) -> Option<Planned> {
        let n = self.accounts.len();
        let account = (0..n)
            .map(|i| (self.next_account + i) % n)
            .find(|&a| self.accounts[a].in_flight < self.cfg.account_cap)?;
        self.next_account = (account + 1) % n;
        let data = self.remark_data();
        Some(self.plan(
            account,
            Method::Remark,
            Target::None,
            Payload::System(SystemOp::Remark { data }),
            now_ms,
        ))
    }

    /// An idle piece to act on, reserved, with an account of its holder
    /// that may sign. Stale queue entries (moved, settled, close to
    /// maturity) are dropped on the way. A financing is two transactions in
    /// a row, so it needs twice the time to maturity; a piece with time
    /// for a move but not for that goes back to the queue.
    fn take_piece(
        &mut self,
        now_ms: u64,
        splittable: bool,
        financing: bool,
    ) -> Option<(PieceId, usize)> {
        let mut put_back = Vec::new();
        let taken = loop {
            let id = if splittable {
                self.splittable.pop_front()
            } else {
                self.leaves
                    .pop_front()
                    .or_else(|| self.splittable.pop_front())
            };
            let Some(id) = id else {
                break None;
            };
            let Some(p) = self.pieces.get(&id) else {
                continue;
            };
            if p.busy || p.state != State::Active {
                continue;
            }
            let Some(root) = self.roots.get(&p.root) else {
                self.pieces.remove(&id);
                continue;
            };
            if root.done {
                self.pieces.remove(&id);
                continue;
            }
            let left = root.maturity_ms.saturating_sub(now_ms);
            if left <= self.margin_ms() {
                continue; // Left for the settlement.
            }
            if financing && left <= 2 * self.margin_ms() {
                put_back.push(id);
                if put_back.len() >= 64 {
                    break None;
                }
                continue;
            }
            let holder = p.holder;
            let Some(account) = self.account_of(holder) else {
                put_back.push(id);
                break None;
            };
            self.set_busy(id, true);
            break Some((id, account));
        };
        for id in put_back {
            self.enqueue(id);
        }
        taken
    }

    fn margin_ms(&self) -> u64 {
        self.cfg.move_margin_ms + 2 * self.delay_ms
    }

    fn can_split(&self, id: &PieceId) -> bool {
        self.pieces
            .get(id)
            .is_some_and(|p| p.depth < self.cfg.max_depth && p.amount >= 2 * self.cfg.min_piece)
    }

    fn enqueue(&mut self, id: PieceId) {
        if self.can_split(&id) {
            self.splittable.push_back(id);
        } else {
            self.leaves.push_back(id);
        }
    }

    fn set_busy(&mut self, id: PieceId, busy: bool) {
        let Some(p) = self.pieces.get_mut(&id) else {
            return;
        };
        if p.busy == busy {
            return;
        }
        p.busy = busy;
        if let Some(r) = self.roots.get_mut(&p.root) {
            if busy {
                r.busy += 1;
            } else {
                r.busy -= 1;
            }
        }
    }

    fn promote_matured(&mut self) {
        while let Some(&(maturity, root)) = self.maturing.first() {
            if maturity > self.chain_time_ms {
                break;
            }
            self.maturing.pop_first();
            self.matured.push_back(root);
        }
    }

    /// An account of `org` that may sign one more, in turn.
    fn account_of(&mut self, org: usize) -> Option<usize> {
        let o = &mut self.orgs[org];
        let n = o.accounts.len();
        for i in 0..n {
            let a = o.accounts[(o.next + i) % n];
            if self.accounts[a].in_flight < self.cfg.account_cap {
                o.next = (o.next + i + 1) % n;
                return Some(a);
            }
        }
        None
    }

    fn next_supplier(&mut self) -> usize {
        let s = self.suppliers[self.next_supplier % self.suppliers.len()];
        self.next_supplier += 1;
        s
    }

    fn other_supplier(&mut self, holder: usize) -> usize {
        for _ in 0..self.suppliers.len() {
            let s = self.next_supplier();
            if s != holder {
                return s;
            }
        }
        self.next_supplier()
    }

    fn remark_data(&self) -> Bytes {
        let mut data = Vec::with_capacity(32);
        data.extend_from_slice(&self.cfg.run_tag.to_be_bytes());
        data.extend_from_slice(&self.seq.to_be_bytes());
        data.resize(32, 0);
        Bytes(data)
    }

    fn call(&self, method: Method, args: Vec<u8>) -> Payload {
        Payload::Call {
            contract: self.cfg.contract,
            method: method.name().to_owned(),
            args: Bytes(args),
        }
    }

    fn plan(
        &mut self,
        account: usize,
        method: Method,
        target: Target,
        payload: Payload,
        now_ms: u64,
    ) -> Planned {
        let nonce = self.accounts[account].nonce;
        self.accounts[account].nonce += 1;
        self.plan_with_nonce(account, nonce, method, target, payload, now_ms)
    }

    fn plan_with_nonce(
        &mut self,
        account: usize,
        nonce: u64,
        method: Method,
        target: Target,
        payload: Payload,
        now_ms: u64,
    ) -> Planned {
        self.seq += 1;
        self.accounts[account].in_flight += 1;
        let measured = self.phase == Phase::Run;
        if measured {
            *self.planned.entry(method).or_default() += 1;
        }
        Planned {
            tx: Transaction {
                chain_id: self.cfg.chain_id.clone(),
                sender: self.accounts[account].key.public(),
                nonce,
                expires_at_ms: now_ms + self.cfg.tx_ttl_ms,
                payload,
            },
            account,
            ticket: Ticket {
                method,
                measured,
                account,
                nonce,
                target,
                planned_ms: now_ms,
            },
        }
    }

    // ---- learning from commits ----

    fn applied(&mut self, ticket: &Ticket, tx: &CommittedTx) {
        match (&ticket.target, ticket.method) {
            (Target::None, _) => {}
            (
                Target::Issue {
                    amount,
                    maturity_ms,
                    to,
                },
                _,
            ) => {
                let Some(id) = self
                    .attribute(tx, "issued", "piece")
                    .and_then(|v| v.parse::<PieceId>().ok())
                else {
                    return;
                };
                self.newest_piece = self.newest_piece.max(id);
                self.roots.insert(
                    id,
                    Root {
                        maturity_ms: *maturity_ms,
                        amount: *amount,
                        busy: 0,
                        done: false,
                    },
                );
                self.pieces.insert(
                    id,
                    Piece {
                        root: id,
                        holder: *to,
                        amount: *amount,
                        depth: 0,
                        state: State::Pending,
                        busy: false,
                    },
                );
                self.set_busy(id, true);
                self.reactions.push_back(Reaction::Accept(id));
            }
            (Target::Piece(id), Method::Accept) => {
                let id = *id;
                let Some(p) = self.pieces.get_mut(&id) else {
                    return;
                };
                p.state = State::Active;
                if let Some(r) = self.roots.get(&id) {
                    self.maturing.insert((r.maturity_ms, id));
                }
                self.set_busy(id, false);
                self.enqueue(id);
            }
            (Target::Piece(id), Method::Transfer) => {
                let id = *id;
                let to = self.transferred_to(tx);
                if let (Some(p), Some(to)) = (self.pieces.get_mut(&id), to) {
                    p.holder = to;
                }
                self.set_busy(id, false);
                self.enqueue(id);
            }
            (Target::Piece(id), Method::Split) => self.split_applied(*id, tx),
            (Target::Financing(id, terms), Method::RequestFinancing) => {
                if let Some(p) = self.pieces.get_mut(id) {
                    p.state = State::Offered;
                }
                self.reactions
                    .push_back(Reaction::AcceptFinancing(*id, terms.clone()));
            }
            (Target::Financing(id, _), Method::AcceptFinancing) => {
                let id = *id;
                let bank = self.bank;
                if let Some(p) = self.pieces.get_mut(&id) {
                    p.state = State::Financed;
                    p.holder = bank;
                }
                self.set_busy(id, false);
            }
            (Target::Root(root), _) => {
                if let Some(r) = self.roots.get_mut(root) {
                    r.busy -= 1;
                    r.done = true;
                    self.credit_used = self.credit_used.saturating_sub(r.amount);
                }
            }
            _ => {}
        }
    }

    fn split_applied(&mut self, id: PieceId, tx: &CommittedTx) {
        self.set_busy(id, false);
        let Some(parent) = self.pieces.remove(&id) else {
            return;
        };
        let children: Vec<(PieceId, usize, u128)> = tx
            .events
            .iter()
            .filter(|e| e.kind == "split" && e.source == EventSource::Contract(self.cfg.contract))
            .flat_map(|e| e.attributes.iter())
            .filter(|(k, _)| k == "child")
            .filter_map(|(_, v)| self.parse_child(v))
            .collect();
        for (child, holder, amount) in children {
            self.newest_piece = self.newest_piece.max(child);
            self.pieces.insert(
                child,
                Piece {
                    root: parent.root,
                    holder,
                    amount,
                    depth: parent.depth + 1,
                    state: State::Active,
                    busy: false,
                },
            );
            self.enqueue(child);
        }
    }

    /// A split's `child` attribute: `id:org:amount`.
    fn parse_child(&self, value: &str) -> Option<(PieceId, usize, u128)> {
        let (id, rest) = value.split_once(':')?;
        let (org, amount) = rest.rsplit_once(':')?;
        let holder = self.orgs.iter().position(|o| o.name == org)?;
        Some((id.parse().ok()?, holder, amount.parse().ok()?))
    }

    fn transferred_to(&self, tx: &CommittedTx) -> Option<usize> {
        let to = self.attribute(tx, "transferred", "to")?;
        self.orgs.iter().position(|o| o.name == to)
    }

    fn attribute<'a>(&self, tx: &'a CommittedTx, kind: &str, key: &str) -> Option<&'a str> {
        tx.events
            .iter()
            .filter(|e| e.kind == kind && e.source == EventSource::Contract(self.cfg.contract))
            .flat_map(|e| e.attributes.iter())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn failed(&mut self, ticket: &Ticket) {
        match &ticket.target {
            Target::None => {}
            Target::Issue { amount, .. } => {
                self.credit_used = self.credit_used.saturating_sub(*amount);
            }
            Target::Piece(id) | Target::Financing(id, _) => {
                // What the chain holds now is not what we thought: leave the piece alone.
                let id = *id;
                self.set_busy(id, false);
                if ticket.method == Method::Accept
                    && let Some(r) = self.roots.get_mut(&id)
                {
                    r.done = true;
                }
                self.pieces.remove(&id);
            }
            Target::Root(root) => {
                if let Some(r) = self.roots.get_mut(root) {
                    r.busy -= 1;
                    r.done = true;
                }
            }
        }
    }
}

/// The part a split gives away: a half, a third, a quarter or two fifths in
/// turn, so pieces come in many sizes, and both sides at least `min`.
fn split_part(amount: u128, min: u128, seq: u64) -> u128 {
    let (num, den) = [(1, 2), (1, 3), (1, 4), (2, 5)][(seq % 4) as usize];
    let part = (amount / den * num).max(min);
    if amount.saturating_sub(part) < min {
        amount / 2
    } else {
        part
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_types::{Event, ExecError};

    const CONTRACT: Address = Address([7; 32]);

    fn config(mix: Mix) -> Config {
        Config {
            mix,
            chain_id: "test".into(),
            contract: CONTRACT,
            issuer: "core".into(),
            suppliers: vec!["s1".into(), "s2".into(), "s3".into()],
            bank: "bank".into(),
            min_piece: 10_000,
            max_depth: 8,
            acceptance_window_ms: 10_000,
            root_amount: 10_000_000,
            currency: "CNY".into(),
            account_cap: 50,
            tx_ttl_ms: 600_000,
            move_margin_ms: 3_000,
            run_maturity_after_window_ms: 5_000,
            credit_headroom: u128::MAX,
            run_tag: 1,
        }
    }

    fn accounts(per_org: usize) -> Vec<AccountSpec> {
        let mut out = Vec::new();
        for org in ["core", "s1", "s2", "s3", "bank"] {
            for i in 0..per_org {
                out.push(AccountSpec {
                    key: KeyPair::insecure_from_label(&format!("{org}/{i}")),
                    org: org.into(),
                    nonce: 0,
                });
            }
        }
        out
    }

    /// A toy chain: executes what the planner signs with the contract's
    /// rules that matter here (holders, maturity, piece ids from a counter),
    /// and answers with the events the contract emits.
    struct Chain {
        now: u64,
        next_id: u64,
        pieces: HashMap<u64, (String, u128, u64, &'static str)>, // holder, amount, maturity, status
        height: u64,
        nonces: HashMap<trellis_types::PublicKey, u64>,
        issuer_of: HashMap<trellis_types::PublicKey, String>,
    }

    impl Chain {
        fn new(accounts: &[AccountSpec]) -> Chain {
            Chain {
                now: 1_000_000,
                next_id: 1,
                pieces: HashMap::new(),
                height: 0,
                nonces: HashMap::new(),
                issuer_of: accounts
                    .iter()
                    .map(|a| (a.key.public(), a.org.clone()))
                    .collect(),
            }
        }

        fn event(kind: &str, attributes: Vec<(&str, String)>) -> Event {
            Event {
                source: EventSource::Contract(CONTRACT),
                kind: kind.into(),
                attributes: attributes
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            }
        }

        /// Runs one transaction; the events or the failure code.
        fn execute(&mut self, tx: &Transaction) -> Result<Vec<Event>, String> {
            let org = self.issuer_of[&tx.sender].clone();
            let expected = self.nonces.entry(tx.sender).or_default();
            assert_eq!(*expected, tx.nonce, "nonces are used in order");
            *expected += 1;
            let Payload::Call { method, args, .. } = &tx.payload else {
                return Ok(vec![]);
            };
            type Pieces = HashMap<u64, (String, u128, u64, &'static str)>;
            let holder_check =
                |pieces: &Pieces, id: u64| -> Result<(String, u128, u64, &'static str), String> {
                    let p = pieces.get(&id).ok_or("not_found")?;
                    if p.0 != org {
                        return Err("not_holder".to_owned());
                    }
                    Ok(p.clone())
                };
            match method.as_str() {
                "issue" => {
                    let a: Issue = trellis_types::decode(&args.0).unwrap();
                    let id = self.next_id;
                    self.next_id += 1;
                    self.pieces
                        .insert(id, (a.to.clone(), a.amount, a.maturity_ms, "pending"));
                    Ok(vec![Self::event("issued", vec![("piece", id.to_string())])])
                }
                "accept" => {
                    let a: PieceRef = trellis_types::decode(&args.0).unwrap();
                    let p = holder_check(&self.pieces, a.piece)?;
                    assert_eq!(p.3, "pending");
                    self.pieces.get_mut(&a.piece).unwrap().3 = "active";
                    Ok(vec![Self::event("accepted", vec![])])
                }
                "transfer" => {
                    let a: Transfer = trellis_types::decode(&args.0).unwrap();
                    let p = holder_check(&self.pieces, a.piece)?;
                    assert_eq!(p.3, "active", "only active pieces move");
                    assert!(self.now < p.2, "moved after maturity");
                    self.pieces.get_mut(&a.piece).unwrap().0 = a.to.clone();
                    Ok(vec![Self::event("transferred", vec![("to", a.to)])])
                }
                "split" => {
                    let a: Split = trellis_types::decode(&args.0).unwrap();
                    let p = holder_check(&self.pieces, a.piece)?;
                    assert_eq!(p.3, "active");
                    let (to, part) = a.parts[0].clone();
                    assert!(
                        part >= 10_000 && p.1 - part >= 10_000,
                        "split below the minimum"
                    );
                    self.pieces.get_mut(&a.piece).unwrap().3 = "split";
                    let mut attrs = vec![];
                    for (holder, amount) in [(to, part), (p.0.clone(), p.1 - part)] {
                        let id = self.next_id;
                        self.next_id += 1;
                        self.pieces
                            .insert(id, (holder.clone(), amount, p.2, "active"));
                        attrs.push(("child", format!("{id}:{holder}:{amount}")));
                    }
                    Ok(vec![Self::event("split", attrs)])
                }
                "request_financing" => {
                    let a: RequestFinancing = trellis_types::decode(&args.0).unwrap();
                    let p = holder_check(&self.pieces, a.piece)?;
                    assert_eq!(p.3, "active");
                    self.pieces.get_mut(&a.piece).unwrap().3 = "offered";
                    Ok(vec![Self::event("financing_requested", vec![])])
                }
                "accept_financing" => {
                    let a: AcceptFinancing = trellis_types::decode(&args.0).unwrap();
                    assert_eq!((org.as_str(), a.bank.as_str()), ("bank", "bank"));
                    let p = self.pieces.get_mut(&a.piece).unwrap();
                    assert_eq!(p.3, "offered");
                    p.3 = "financed";
                    p.0 = "bank".into();
                    Ok(vec![Self::event("financed", vec![])])
                }
                "settle" => {
                    let a: Settle = trellis_types::decode(&args.0).unwrap();
                    assert_eq!(org, "core");
                    let maturity = self.pieces[&a.root].2;
                    if self.now < maturity {
                        return Err("not_matured".into());
                    }
                    Ok(vec![Self::event("settled", vec![])])
                }
                other => panic!("unexpected method {other}"),
            }
        }

        /// Commits `txs` as one block and feeds the results to the planner.
        fn commit(&mut self, planner: &mut Planner, txs: Vec<(Hash, Transaction)>) -> Vec<Outcome> {
            self.height += 1;
            let mut outcomes = Vec::new();
            for (index, (hash, tx)) in txs.into_iter().enumerate() {
                let (status, error, events) = match self.execute(&tx) {
                    Ok(events) => (ReceiptStatus::Success, None, events),
                    Err(code) => (
                        ReceiptStatus::Failed,
                        Some(ExecError {
                            code,
                            message: String::new(),
                        }),
                        vec![],
                    ),
                };
                let committed = CommittedTx {
                    height: self.height,
                    index: index as u32,
                    tx_hash: hash,
                    sender: tx.sender,
                    status,
                    error,
                    events,
                    fuel_used: 0,
                    block_time_ms: self.now,
                };
                outcomes.extend(planner.on_commit(&committed));
            }
            outcomes
        }
    }

    /// Plans up to `n` transactions and signs them as the engine would.
    fn plan_block(planner: &mut Planner, now: u64, n: usize) -> Vec<(Hash, Transaction)> {
        let mut out = Vec::new();
        while out.len() < n {
            let Some(p) = planner.next(now) else { break };
            let hash = p.tx.hash();
            planner.bind(hash, p.ticket);
            out.push((hash, p.tx));
        }
        out
    }

    #[test]
    fn the_mix_follows_the_target_shares_and_every_transaction_succeeds() {
        let specs = accounts(4);
        let mut chain = Chain::new(&specs);
        let mut planner = Planner::new(config(Mix::Receivables), specs);
        // As the bench sizes it: 60 s of blocks every 100 ms with 20
        // transactions each is 12,000; 5 % of them settle a receivable that
        // matures during the run, so 660 of those, plus 50 maturing far out.
        let first = chain.now + 12_000;
        planner.add_setup_roots((0..660).map(|i| first + i * 90));
        planner.add_setup_roots((0..50).map(|_| first + 3_600_000));
        planner.set_phase(Phase::Setup);
        while !planner.setup_done() {
            let block = plan_block(&mut planner, chain.now, 1000);
            chain.commit(&mut planner, block);
            chain.now += 100;
        }
        chain.now = chain.now.max(first);
        planner.set_phase(Phase::Run);
        let mut outcomes = Vec::new();
        for _ in 0..600 {
            let block = plan_block(&mut planner, chain.now, 20);
            outcomes.extend(chain.commit(&mut planner, block));
            chain.now += 100;
        }
        let measured: Vec<&Outcome> = outcomes.iter().filter(|o| o.measured).collect();
        let failures: Vec<&Outcome> = measured
            .iter()
            .copied()
            .filter(|o| o.failure.is_some())
            .collect();
        assert!(failures.is_empty(), "failed: {failures:?}");
        let total = measured.len() as f64;
        assert!(total > 11_000.0, "only {total} transactions");
        for kind in Kind::RECEIVABLES {
            let n = measured.iter().filter(|o| o.method.kind() == kind).count() as f64;
            let share = n / total * 1000.0;
            let target = f64::from(kind.target_permille());
            assert!(
                (share - target).abs() <= target * 0.1 + 2.0,
                "{}: {share:.1}‰ of {total}, target {target}‰",
                kind.name()
            );
        }
    }

    #[test]
    fn no_piece_is_in_two_transactions_at_once_and_accounts_stay_under_their_cap() {
        let specs = accounts(1);
        let mut chain = Chain::new(&specs);
        let mut planner = Planner::new(config(Mix::Receivables), specs);
        planner.add_setup_roots((0..5).map(|_| chain.now + 3_600_000));
        planner.set_phase(Phase::Setup);
        while !planner.setup_done() {
            let block = plan_block(&mut planner, chain.now, 1000);
            chain.commit(&mut planner, block);
        }
        planner.set_phase(Phase::Run);
        for _ in 0..50 {
            // Plan as much as the planner allows, then commit in a shuffled order.
            let mut block = plan_block(&mut planner, chain.now, usize::MAX);
            let mut touched = std::collections::HashSet::new();
            for (_, tx) in &block {
                if let Payload::Call { method, args, .. } = &tx.payload {
                    let piece = match method.as_str() {
                        "transfer" => trellis_types::decode::<Transfer>(&args.0).unwrap().piece,
                        "split" => trellis_types::decode::<Split>(&args.0).unwrap().piece,
                        "request_financing" => {
                            trellis_types::decode::<RequestFinancing>(&args.0)
                                .unwrap()
                                .piece
                        }
                        _ => continue,
                    };
                    assert!(touched.insert(piece), "piece {piece} twice in flight");
                }
            }
            let per_sender = block.iter().fold(HashMap::new(), |mut m, (_, tx)| {
                *m.entry(tx.sender).or_insert(0u32) += 1;
                m
            });
            assert!(
                per_sender.values().all(|&n| n <= 50),
                "an account over its cap"
            );
            // Different senders' transactions may land in any order.
            block.sort_by_key(|(h, tx)| (tx.nonce, h.0));
            chain.commit(&mut planner, block);
            chain.now += 200;
        }
    }

    #[test]
    fn settles_wait_for_maturity_and_for_the_pieces_in_flight() {
        let specs = accounts(2);
        let mut chain = Chain::new(&specs);
        let mut planner = Planner::new(config(Mix::Receivables), specs);
        planner.add_setup_roots([chain.now + 12_000]);
        planner.set_phase(Phase::Setup);
        while !planner.setup_done() {
            let block = plan_block(&mut planner, chain.now, 10);
            chain.commit(&mut planner, block);
            chain.now += 100;
        }
        planner.set_phase(Phase::Run);
        let mut settled_at = None;
        for _ in 0..200 {
            let block = plan_block(&mut planner, chain.now, 5);
            for outcome in chain.commit(&mut planner, block) {
                assert_eq!(outcome.failure, None, "{outcome:?}");
                if outcome.method == Method::Settle {
                    settled_at = Some(chain.now);
                }
            }
            chain.now += 100;
        }
        assert!(settled_at.is_some_and(|t| t >= 1_000_000 + 12_000));
    }

    #[test]
    fn a_refused_transaction_frees_its_piece_and_its_nonce_is_filled() {
        let specs = accounts(1);
        let mut chain = Chain::new(&specs);
        let mut planner = Planner::new(config(Mix::Receivables), specs);
        planner.add_setup_roots([chain.now + 3_600_000]);
        planner.set_phase(Phase::Setup);
        while !planner.setup_done() {
            let block = plan_block(&mut planner, chain.now, 10);
            chain.commit(&mut planner, block);
        }
        planner.set_phase(Phase::Run);
        let first = plan_block(&mut planner, chain.now, 1);
        let (hash, tx) = first[0].clone();
        let outcome = planner.on_refused(&hash, "expired").expect("ours");
        assert_eq!(outcome.failure, None);
        // The filler takes the refused nonce, then the piece is used again.
        let next = plan_block(&mut planner, chain.now, 2);
        assert_eq!(next[0].1.nonce, tx.nonce);
        assert!(matches!(
            next[0].1.payload,
            Payload::System(SystemOp::Remark { .. })
        ));
        assert_eq!(next.len(), 2, "the piece is free again");
        chain.commit(&mut planner, next);
    }

    #[test]
    fn the_remark_mix_spreads_over_accounts_within_their_cap() {
        let mut planner = Planner::new(config(Mix::Remark), accounts(2));
        planner.set_phase(Phase::Run);
        let block = plan_block(&mut planner, 0, usize::MAX);
        assert_eq!(block.len(), 10 * 50, "ten accounts, fifty each");
        assert!(
            block
                .iter()
                .all(|(_, tx)| matches!(tx.payload, Payload::System(SystemOp::Remark { .. })))
        );
    }

    #[test]
    fn split_parts_respect_the_minimum_on_both_sides() {
        for amount in [20_000u128, 20_001, 25_000, 39_999, 10_000_000, 78_125] {
            for seq in 0..4 {
                let part = split_part(amount, 10_000, seq);
                assert!(
                    part >= 10_000 && amount - part >= 10_000,
                    "{amount} {seq} {part}"
                );
            }
        }
    }
}
