//! The newest committed blocks with their receipts, kept in memory for the
//! readers that follow the chain (event streams): each new block is shared
//! with all of them as it was committed, not read back from sled and decoded
//! once per reader.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use trellis_types::{Block, Receipt};

/// A committed block with its receipts, one per transaction, in block order.
#[derive(Debug)]
pub struct CommittedBlock {
    pub block: Arc<Block>,
    pub receipts: Vec<Receipt>,
    /// Each transaction as the API's event streams send it (JSON), made by
    /// the first stream that sends it and shared by the others.
    pub(crate) stream_json: Vec<OnceLock<String>>,
}

impl CommittedBlock {
    pub fn new(block: Arc<Block>, receipts: Vec<Receipt>) -> CommittedBlock {
        let stream_json = block.txs.iter().map(|_| OnceLock::new()).collect();
        CommittedBlock {
            block,
            receipts,
            stream_json,
        }
    }
}

/// How many of the newest blocks are kept: enough for a stream a few blocks
/// behind the head; a stream further behind reads from sled. Bounded because
/// a full block with its receipts is megabytes.
pub(super) const RECENT_BLOCKS: usize = 4;

/// The newest committed blocks, oldest first, consecutive heights.
#[derive(Default)]
pub(super) struct RecentBlocks(RwLock<VecDeque<Arc<CommittedBlock>>>);

impl RecentBlocks {
    /// Adds the block just committed on top of the others, forgetting the
    /// oldest beyond [`RECENT_BLOCKS`].
    pub(super) fn push(&self, committed: Arc<CommittedBlock>) {
        let mut blocks = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let height = committed.block.header.height;
        // Storage commits in height order; anything else starts afresh, so
        // that the heights kept are always consecutive.
        if blocks
            .back()
            .is_some_and(|last| last.block.header.height + 1 != height)
        {
            blocks.clear();
        }
        let oldest = if blocks.len() == RECENT_BLOCKS {
            blocks.pop_front()
        } else {
            None
        };
        blocks.push_back(committed);
        // Freeing a busy block's thousands of transactions takes a while:
        // not while readers wait for the lock.
        drop(blocks);
        drop(oldest);
    }

    /// The block at `height`, if it is one of those kept.
    pub(super) fn get(&self, height: u64) -> Option<Arc<CommittedBlock>> {
        let blocks = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let first = blocks.front()?.block.header.height;
        let index = usize::try_from(height.checked_sub(first)?).ok()?;
        blocks.get(index).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_types::{Hash, Header, PublicKey, QuorumCertificate};

    fn at(height: u64) -> Arc<CommittedBlock> {
        Arc::new(CommittedBlock::new(
            Arc::new(Block {
                header: Header {
                    chain_id: "test".into(),
                    height,
                    round: 0,
                    parent: Hash::ZERO,
                    tx_root: Hash::ZERO,
                    parent_commit_hash: Hash::ZERO,
                    receipts_root: Hash::ZERO,
                    state_root: Hash::ZERO,
                    timestamp_ms: 0,
                    proposer: PublicKey([0; 32]),
                },
                parent_commit: QuorumCertificate::genesis(Hash::ZERO),
                txs: Vec::new(),
            }),
            Vec::new(),
        ))
    }

    fn heights(recent: &RecentBlocks) -> Vec<u64> {
        (0..20).filter(|h| recent.get(*h).is_some()).collect()
    }

    #[test]
    fn keeps_the_newest_consecutive_blocks_only() {
        let recent = RecentBlocks::default();
        assert!(recent.get(0).is_none());
        for height in 3..=9 {
            recent.push(at(height));
            assert_eq!(recent.get(height).unwrap().block.header.height, height);
        }
        let kept: Vec<u64> = (10 - RECENT_BLOCKS as u64..10).collect();
        assert_eq!(heights(&recent), kept);
        // A gap (which storage never makes) starts afresh rather than
        // answering for the heights in between.
        recent.push(at(12));
        assert_eq!(heights(&recent), vec![12]);
    }
}
