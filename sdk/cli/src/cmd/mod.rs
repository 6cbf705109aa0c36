//! One module per command group.

pub mod chain;
pub mod events;
pub mod governance;
pub mod keys;
pub mod receivable;
