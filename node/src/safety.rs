//! The validator's safety record on disk: what it last voted and what it is locked on.
//!
//! Written and fsync'ed (file and directory) before a vote leaves the node,
//! through a temporary file renamed into place, so a crash leaves either the
//! old record or the new one. The record carries a blake3 checksum: a
//! truncated or altered file is reported, and the node then refuses to vote
//! rather than risk signing two conflicting votes.

use crate::consensus::SafetyState;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use trellis_types::Domain;
use trellis_types::codec::{decode, encode};

#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    #[error("safety record {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("safety record {path} is corrupt ({reason}); refusing to vote")]
    Corrupt { path: PathBuf, reason: String },
}

pub struct SafetyStore {
    path: PathBuf,
}

const CHECKSUM_LEN: usize = 32;

impl SafetyStore {
    /// Opens the record at `path`; a missing file is a fresh validator.
    pub fn open(path: &Path) -> Result<(SafetyStore, SafetyState), SafetyError> {
        let store = SafetyStore {
            path: path.to_owned(),
        };
        let state = match fs::read(path) {
            Ok(bytes) => store.parse(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SafetyState::default(),
            Err(source) => {
                return Err(SafetyError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Ok((store, state))
    }

    fn parse(&self, bytes: &[u8]) -> Result<SafetyState, SafetyError> {
        let corrupt = |reason: String| SafetyError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        if bytes.len() < CHECKSUM_LEN {
            return Err(corrupt(format!("{} bytes is too short", bytes.len())));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Domain::SafetyRecord.hash(body).0 != checksum {
            return Err(corrupt("checksum mismatch".into()));
        }
        decode(body).map_err(|e| corrupt(e.to_string()))
    }

    /// Durably replaces the record. Returns only once it is on disk.
    pub fn save(&self, state: &SafetyState) -> Result<(), SafetyError> {
        let io = |source| SafetyError::Io {
            path: self.path.clone(),
            source,
        };
        let body = encode(state);
        let checksum = Domain::SafetyRecord.hash(&body);
        let tmp = self.path.with_extension("tmp");
        let mut file = fs::File::create(&tmp).map_err(io)?;
        file.write_all(&body).map_err(io)?;
        file.write_all(&checksum.0).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_types::block::VoteKind;

    fn sample() -> SafetyState {
        SafetyState {
            height: 7,
            last_vote: Some((2, VoteKind::Precommit, None)),
            locked: None,
        }
    }

    #[test]
    fn a_saved_record_is_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safety");
        let (store, fresh) = SafetyStore::open(&path).unwrap();
        assert_eq!(fresh, SafetyState::default());
        store.save(&sample()).unwrap();
        assert_eq!(SafetyStore::open(&path).unwrap().1, sample());
    }

    #[test]
    fn a_truncated_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safety");
        SafetyStore::open(&path).unwrap().0.save(&sample()).unwrap();
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(matches!(
            SafetyStore::open(&path),
            Err(SafetyError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_bit_flip_in_the_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safety");
        SafetyStore::open(&path).unwrap().0.save(&sample()).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[3] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            SafetyStore::open(&path),
            Err(SafetyError::Corrupt { .. })
        ));
    }
}
