//! Every refusal the contract can give, each with a stable code.
//!
//! Codes are part of the wire API (receipts, SDK, CLI): never rename one;
//! add a new variant instead.

use alloc::format;
use alloc::string::String;
use trellis_contract::ContractError;

use crate::types::{Org, PieceId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    BadArgs(String),
    UnknownMethod(String),
    NotFound(PieceId),
    NotAdmin,
    AlreadyInitialized,
    /// The caller lacks a role the operation needs, or the counterparty
    /// cannot take part in it (e.g. a regulator cannot hold receivables).
    WrongRole(&'static str),
    NotMember(String),
    NotHolder,
    NotIssuer,
    NotBank(String),
    /// Neither side of the open financing offer.
    NotParty,
    SameParty,
    InvoiceUsed(PieceId),
    CreditLimitExceeded {
        outstanding: u128,
        amount: u128,
        limit: u128,
    },
    LimitBelowOutstanding {
        outstanding: u128,
    },
    MaturityInPast,
    MaturityTooSoon {
        acceptance_deadline_ms: u64,
    },
    NotMatured {
        maturity_ms: u64,
    },
    Matured,
    ZeroAmount,
    BelowMinimum {
        amount: u128,
        min: u128,
    },
    AmountsExceedPiece {
        sum: u128,
        amount: u128,
    },
    TooDeep {
        max_depth: u8,
    },
    TooManyParts {
        max: usize,
    },
    OfferOpen,
    NoOffer,
    OfferExpired,
    TermsMismatch,
    /// The open offer is another bank's (named).
    BankMismatch(Org),
    BadTerms(&'static str),
    AlreadyFinanced,
    Frozen,
    NotFrozen,
    NotActive(&'static str),
    NotPending,
    AcceptanceExpired,
    NotExpired {
        acceptance_deadline_ms: u64,
    },
    NotOverdue {
        overdue_from_ms: u64,
    },
    NothingToDo,
    /// What the caller asked for is not its to see.
    NotVisible(&'static str),
}

pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadArgs(_) => "bad_args",
            Error::UnknownMethod(_) => "unknown_method",
            Error::NotFound(_) => "not_found",
            Error::NotAdmin => "not_admin",
            Error::AlreadyInitialized => "already_initialized",
            Error::WrongRole(_) => "wrong_role",
            Error::NotMember(_) => "not_member",
            Error::NotHolder => "not_holder",
            Error::NotIssuer => "not_issuer",
            Error::NotBank(_) => "not_bank",
            Error::NotParty => "not_party",
            Error::SameParty => "same_party",
            Error::InvoiceUsed(_) => "invoice_used",
            Error::CreditLimitExceeded { .. } => "credit_limit_exceeded",
            Error::LimitBelowOutstanding { .. } => "limit_below_outstanding",
            Error::MaturityInPast => "maturity_in_past",
            Error::MaturityTooSoon { .. } => "maturity_too_soon",
            Error::NotMatured { .. } => "not_matured",
            Error::Matured => "matured",
            Error::ZeroAmount => "zero_amount",
            Error::BelowMinimum { .. } => "below_minimum",
            Error::AmountsExceedPiece { .. } => "amounts_exceed_piece",
            Error::TooDeep { .. } => "too_deep",
            Error::TooManyParts { .. } => "too_many_parts",
            Error::OfferOpen => "offer_open",
            Error::NoOffer => "no_offer",
            Error::OfferExpired => "offer_expired",
            Error::TermsMismatch => "terms_mismatch",
            Error::BankMismatch(_) => "bank_mismatch",
            Error::BadTerms(_) => "bad_terms",
            Error::AlreadyFinanced => "already_financed",
            Error::Frozen => "frozen",
            Error::NotFrozen => "not_frozen",
            Error::NotActive(_) => "not_active",
            Error::NotPending => "not_pending",
            Error::AcceptanceExpired => "acceptance_expired",
            Error::NotExpired { .. } => "not_expired",
            Error::NotOverdue { .. } => "not_overdue",
            Error::NothingToDo => "nothing_to_do",
            Error::NotVisible(_) => "not_visible",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Error::BadArgs(m) => m.clone(),
            Error::UnknownMethod(m) => format!("no method named {m:?}"),
            Error::NotFound(id) => format!("no piece or root {id}"),
            Error::NotAdmin => "only a consortium admin may do this".into(),
            Error::AlreadyInitialized => {
                "the contract is already initialised; use set_params".into()
            }
            Error::WrongRole(why) => (*why).into(),
            Error::NotMember(org) => format!("{org:?} is not a member organisation"),
            Error::NotHolder => "only the piece's holder may do this".into(),
            Error::NotIssuer => "only the receivable's issuer may do this".into(),
            Error::NotBank(org) => format!("{org:?} does not have the bank role"),
            Error::NotParty => "only a party to the financing offer may do this".into(),
            Error::SameParty => "the counterparty is the caller or the holder itself".into(),
            Error::InvoiceUsed(root) => {
                format!("this invoice hash already backs receivable {root}")
            }
            Error::CreditLimitExceeded {
                outstanding,
                amount,
                limit,
            } => {
                format!("outstanding {outstanding} plus {amount} exceeds the credit limit {limit}")
            }
            Error::LimitBelowOutstanding { outstanding } => {
                format!("the limit is below what is outstanding now ({outstanding})")
            }
            Error::MaturityInPast => "maturity must be in the future".into(),
            Error::MaturityTooSoon {
                acceptance_deadline_ms,
            } => {
                format!(
                    "maturity must come after the acceptance deadline ({acceptance_deadline_ms} ms)"
                )
            }
            Error::NotMatured { maturity_ms } => format!("not matured before {maturity_ms} ms"),
            Error::Matured => "the piece has matured: it can only be settled".into(),
            Error::ZeroAmount => "amounts must be greater than zero".into(),
            Error::BelowMinimum { amount, min } => {
                format!("{amount} is below the minimum piece amount {min}")
            }
            Error::AmountsExceedPiece { sum, amount } => {
                format!("parts sum to {sum}, more than the piece's {amount}")
            }
            Error::TooDeep { max_depth } => format!("pieces may not be deeper than {max_depth}"),
            Error::TooManyParts { max } => format!("a split may create at most {max} pieces"),
            Error::OfferOpen => "the piece has an open financing offer".into(),
            Error::NoOffer => "the piece has no open financing offer".into(),
            Error::OfferExpired => "the financing offer has expired".into(),
            Error::TermsMismatch => "the terms differ from the open offer's".into(),
            Error::BankMismatch(bank) => format!("the open offer is {bank}'s"),
            Error::BadTerms(why) => (*why).into(),
            Error::AlreadyFinanced => {
                "the piece is financed: it cannot be split or financed again".into()
            }
            Error::Frozen => "the piece is frozen".into(),
            Error::NotFrozen => "the piece is not frozen".into(),
            Error::NotActive(why) => (*why).into(),
            Error::NotPending => "the piece is not a root waiting for acceptance".into(),
            Error::AcceptanceExpired => {
                "the acceptance deadline has passed; the receivable is returned".into()
            }
            Error::NotExpired {
                acceptance_deadline_ms,
            } => {
                format!("the acceptance deadline ({acceptance_deadline_ms} ms) has not passed")
            }
            Error::NotOverdue { overdue_from_ms } => {
                format!("not overdue before {overdue_from_ms} ms")
            }
            Error::NothingToDo => "nothing to do: no piece is in a state this applies to".into(),
            Error::NotVisible(why) => (*why).into(),
        }
    }
}

impl From<Error> for ContractError {
    fn from(e: Error) -> Self {
        ContractError::new(e.code(), e.message())
    }
}
