use super::*;
use crate::chain::tests::{NOW, certificate, remark, validator};
use crate::storage::retry_while_locked;
use tempfile::TempDir;
use trellis_types::archive::MAGIC;
use trellis_types::{KeyPair, codec};

/// An export's records end with the blake3 hash of their bytes.
const CHECKSUM_LEN: usize = 32;

/// A dev chain of `blocks` blocks, each with remarks by two accounts, in a
/// store of its own; its blocks as built.
fn source_chain(blocks: u64) -> (TempDir, Storage, Vec<Block>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    let (mut chain, mempool) = dev_chain(&storage);
    let senders: Vec<KeyPair> = ["core-acme/ops", "supplier-t1/ops"]
        .map(trellis_genesis::dev_account)
        .into();
    let key = validator();
    let mut built = Vec::new();
    for height in 1..=blocks {
        for sender in &senders {
            for nonce in 2 * (height - 1)..2 * height {
                let bytes = trellis_types::encode(&remark(sender, nonce));
                mempool.admit(&bytes, &storage, NOW).unwrap();
            }
        }
        let block = chain.build(0, &key, NOW + height * 1_000).unwrap();
        assert_eq!(block.txs.len(), 4, "every remark of the height in it");
        chain
            .commit(&Arc::new(block.clone()), &certificate(&block, &key))
            .unwrap();
        built.push(block);
    }
    (dir, storage, built)
}

/// A dev chain in `storage`, and the mempool it builds from.
fn dev_chain(storage: &Storage) -> (Chain, Arc<Mempool>) {
    let genesis = Genesis::dev();
    let vm = Arc::new(Vm::new());
    chain::initialise(storage, &genesis, &vm).unwrap();
    let mempool = Arc::new(Mempool::new(
        genesis.chain_id.clone(),
        genesis.params.clone(),
    ));
    (
        Chain::new(storage.clone(), &genesis, mempool.clone(), vm),
        mempool,
    )
}

fn exported(storage: &Storage) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.export");
    export_chain(storage, &path).unwrap();
    (dir, path)
}

fn import(from: &Path, into: &Storage) -> Result<ImportReport, ArchiveError> {
    Export::open(from, &Genesis::dev())?.import_into(into, &Genesis::dev(), |_| {})
}

fn empty_store() -> (TempDir, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    (dir, storage)
}

/// The records of an export as its bytes lie: the magic, then (start,
/// length) of each framed record's bytes, the header first.
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut at = MAGIC.len();
    let mut found = Vec::new();
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        found.push((at + 4, len));
        at += 4 + len + CHECKSUM_LEN;
    }
    found
}

/// `bytes` with the record at `index` replaced by `record`, framed anew.
fn with_record(bytes: &[u8], index: usize, record: &[u8]) -> Vec<u8> {
    let (start, len) = records(bytes)[index];
    let mut out = bytes[..start - 4].to_vec();
    out.extend_from_slice(&(record.len() as u32).to_be_bytes());
    out.extend_from_slice(record);
    out.extend_from_slice(blake3::hash(record).as_bytes());
    out.extend_from_slice(&bytes[start + len + CHECKSUM_LEN..]);
    out
}

#[test]
fn an_imported_chain_has_the_exported_blocks_receipts_and_state() {
    let (_source_dir, source, built) = source_chain(3);
    let (_export_dir, path) = exported(&source);

    let (_dir, target) = empty_store();
    let mut heard = Vec::new();
    let report = Export::open(&path, &Genesis::dev())
        .unwrap()
        .import_into(&target, &Genesis::dev(), |h| heard.push(h))
        .unwrap();
    assert_eq!(heard, [1, 2, 3]);
    assert_eq!((report.present, report.imported), (0, 3));
    assert_eq!(Some(report.head), source.head());
    for (height, block) in (1..).zip(&built) {
        assert_eq!(target.block(height).unwrap().as_ref(), Some(block));
        assert_eq!(
            target.commit_certificate(height).unwrap(),
            source.commit_certificate(height).unwrap()
        );
        assert_eq!(
            target.receipts(height).unwrap(),
            source.receipts(height).unwrap()
        );
        assert_eq!(
            target.state_root(height).unwrap(),
            Some(block.header.state_root)
        );
    }

    // Again into the same store: every block found there, none written.
    let again = import(&path, &target).unwrap();
    assert_eq!((again.present, again.imported), (3, 0));
    assert_eq!(Some(again.head), source.head());
}

#[test]
fn an_export_is_refused_where_a_file_is_and_leaves_no_partial_file() {
    let (_source_dir, source, _) = source_chain(1);
    let (dir, path) = exported(&source);
    let before = std::fs::read(&path).unwrap();
    let err = export_chain(&source, &path).unwrap_err();
    assert!(matches!(err, ArchiveError::Exists(_)), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the export untouched"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["chain.export"], "no temporary file left beside it");
}

#[test]
fn an_import_cut_short_keeps_what_it_wrote_and_carries_on_when_run_again() {
    let (_source_dir, source, _) = source_chain(3);
    let (export_dir, path) = exported(&source);
    let bytes = std::fs::read(&path).unwrap();
    let (target_dir, target) = empty_store();

    // Cut between the second and the third block's records.
    let (third, _) = records(&bytes)[3];
    let cut = export_dir.path().join("cut");
    std::fs::write(&cut, &bytes[..third - 4]).unwrap();
    let err = import(&cut, &target).unwrap_err();
    assert!(
        matches!(err, ArchiveError::Truncated { after: 2, last: 3 }),
        "{err}"
    );
    assert_eq!(target.head().unwrap().height, 2);

    // Cut inside the third block's record: named as that record's damage.
    std::fs::write(&cut, &bytes[..third + 10]).unwrap();
    let err = import(&cut, &target).unwrap_err();
    assert!(
        err.to_string()
            .contains("height 3 record is damaged: the file ends inside it"),
        "{err}"
    );

    // The whole export, after a reopening: the store carries on from block 2.
    drop(target);
    let target = retry_while_locked(|| Storage::open(target_dir.path())).unwrap();
    let report = import(&path, &target).unwrap();
    assert_eq!((report.present, report.imported), (2, 1));
    assert_eq!(target.head(), source.head());

    // A record past the last height the header names.
    let (third, len) = records(&bytes)[3];
    let mut longer = bytes.clone();
    longer.extend_from_slice(&bytes[third - 4..third + len + CHECKSUM_LEN]);
    std::fs::write(&cut, &longer).unwrap();
    let err = import(&cut, &target).unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::OutOfOrder {
                expected: 4,
                found: 3
            }
        ),
        "{err}"
    );
}

#[test]
fn a_damaged_or_altered_record_is_refused_and_nothing_after_it_is_written() {
    let (_source_dir, source, built) = source_chain(3);
    let (export_dir, path) = exported(&source);
    let bytes = std::fs::read(&path).unwrap();
    let (second, _) = records(&bytes)[2];
    let altered = export_dir.path().join("altered");

    // A flipped bit: the checksum names the record.
    let mut flipped = bytes.clone();
    flipped[second + 40] ^= 1;
    std::fs::write(&altered, &flipped).unwrap();
    let (_dir, target) = empty_store();
    let err = import(&altered, &target).unwrap_err();
    assert!(
        err.to_string()
            .contains("height 2 record is damaged: checksum mismatch"),
        "{err}"
    );
    assert_eq!(
        target.head().unwrap().height,
        1,
        "block 1 written, nothing after"
    );

    // A block changed and framed with a good checksum: its certificate is
    // not for it.
    let mut block = built[1].clone();
    block.header.timestamp_ms += 1;
    let certified = source.commit_certificate(2).unwrap().unwrap();
    let record = codec::encode(&(&block, &certified));
    std::fs::write(&altered, with_record(&bytes, 2, &record)).unwrap();
    let err = import(&altered, &target).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Refused { height: 2, reason } if reason.to_string().contains("certified next block")),
        "{err}"
    );

    // The same block with a transaction dropped, certified by a key the
    // genesis does not name: refused for the certificate.
    let mut block = built[1].clone();
    block.txs.pop();
    block.header.tx_root = trellis_types::block::tx_root(&block.txs);
    let stranger = KeyPair::insecure_from_label("not a validator");
    let record = codec::encode(&(&block, &certificate(&block, &stranger)));
    std::fs::write(&altered, with_record(&bytes, 2, &record)).unwrap();
    let err = import(&altered, &target).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Refused { height: 2, reason } if reason.to_string().contains("commit certificate")),
        "{err}"
    );

    // Height 3's record where height 2's belongs.
    let (third, third_len) = records(&bytes)[3];
    std::fs::write(
        &altered,
        with_record(&bytes, 2, &bytes[third..third + third_len]),
    )
    .unwrap();
    let err = import(&altered, &target).unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::OutOfOrder {
                expected: 2,
                found: 3
            }
        ),
        "{err}"
    );
    assert_eq!(target.head().unwrap().height, 1);
}

#[test]
fn an_export_of_another_chain_or_format_or_no_export_at_all_is_refused_before_any_store_is_touched()
{
    let (_source_dir, source, _) = source_chain(1);
    let (export_dir, path) = exported(&source);
    let mut other_id = Genesis::dev();
    other_id.chain_id = "trellis-other".into();
    let mut other_time = Genesis::dev();
    other_time.genesis_time_ms += 1;
    for genesis in [other_id, other_time] {
        let err = Export::open(&path, &genesis).err().unwrap();
        assert!(matches!(err, ArchiveError::OtherChain { .. }), "{err}");
    }

    let bytes = std::fs::read(&path).unwrap();
    let elsewhere = export_dir.path().join("elsewhere");
    let mut header: ExportHeader = {
        let (start, len) = records(&bytes)[0];
        codec::decode(&bytes[start..start + len]).unwrap()
    };
    header.format = FORMAT + 1;
    std::fs::write(&elsewhere, with_record(&bytes, 0, &codec::encode(&header))).unwrap();
    let err = Export::open(&elsewhere, &Genesis::dev()).err().unwrap();
    assert!(
        matches!(err, ArchiveError::Format { found } if found == FORMAT + 1),
        "{err}"
    );

    std::fs::write(&elsewhere, b"{\"chain_id\": \"trellis-dev\"}").unwrap();
    let err = Export::open(&elsewhere, &Genesis::dev()).err().unwrap();
    assert!(matches!(err, ArchiveError::NotAnExport(_)), "{err}");

    // A length no block of the chain can have is refused before it is read.
    let (start, _) = records(&bytes)[1];
    let mut huge = bytes.clone();
    huge[start - 4..start].copy_from_slice(&u32::MAX.to_be_bytes());
    std::fs::write(&elsewhere, &huge).unwrap();
    let (_dir, target) = empty_store();
    let err = import(&elsewhere, &target).unwrap_err();
    assert!(
        err.to_string()
            .contains("more than a block of this chain may have"),
        "{err}"
    );
}

#[test]
fn a_store_holding_another_block_at_a_height_is_refused_there() {
    let (_source_dir, source, _) = source_chain(2);
    let (_export_dir, path) = exported(&source);
    // Another chain of the same genesis: its first block has other remarks.
    let (_dir, target) = empty_store();
    let (mut chain, mempool) = dev_chain(&target);
    let key = validator();
    let bytes = trellis_types::encode(&remark(&trellis_genesis::dev_account("core-acme/ops"), 0));
    mempool.admit(&bytes, &target, NOW).unwrap();
    let block = chain.build(0, &key, NOW + 1_000).unwrap();
    chain
        .commit(&Arc::new(block.clone()), &certificate(&block, &key))
        .unwrap();

    let err = import(&path, &target).unwrap_err();
    assert!(
        matches!(err, ArchiveError::Diverges { height: 1, stored, .. } if stored == block.hash()),
        "{err}"
    );
    assert_eq!(
        target.head().unwrap().block_hash,
        block.hash(),
        "the store unchanged"
    );
}
