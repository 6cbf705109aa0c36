//! What one block costs the store, sled 0.34 against sled 1.0 (alpha),
//! fjall and redb, in the record pattern of a Trellis node's block writer at
//! full load (counted at 3d239df: per transaction one transaction record,
//! ~1.9 piece records, ~1.2 holder-index entries put and ~0.8 removed, a few
//! account/root records),
//! plus a block's few large records (the block in 64 KiB pieces, receipts in
//! groups), one durable commit per block, then the next block's reads (~2.5
//! random state reads per transaction).
//!
//! Each store is used as the node would: sled as the block writer applies a
//! block (key by key after the redo file, one flush, the node's settings),
//! fjall and redb with one atomic batch or write transaction, synced. The
//! reads miss every cache the node keeps in front of its store.
//!
//! usage: store-compare <sled|sled1|sled1-64|fjall|redb|none> <dir, replaced> <preload blocks> <measured blocks> [txs per block, 5000]
//! (`none`: what generating the records and reads costs, to subtract).
//! `RECENT=N`: transfers, splits and reads pick among the newest N live
//! pieces instead of all of them (the load generator acts on pieces soon
//! after they commit, so its reads and rewrites mostly find cached pages).

use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const ADDR: [u8; 32] = [7; 32];

fn state_key(suffix: &[u8]) -> Vec<u8> {
    let mut k = vec![0x06];
    k.extend_from_slice(&ADDR);
    k.push(b'/');
    k.extend_from_slice(suffix);
    k
}
fn piece_key(id: u64) -> Vec<u8> {
    state_key(&[b"p/".as_slice(), &id.to_be_bytes()].concat())
}
fn holder_key(org: u64, id: u64) -> Vec<u8> {
    let org = format!("org-{org:04}");
    let mut k = vec![0x06];
    k.extend_from_slice(b"q/");
    k.extend_from_slice(&ADDR);
    k.extend_from_slice(b"/h/");
    k.extend_from_slice(&(org.len() as u16).to_be_bytes());
    k.extend_from_slice(org.as_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}
fn account_key(n: u64) -> Vec<u8> {
    let mut k = vec![0x06, b'a', b'/'];
    k.extend_from_slice(blake3::hash(&n.to_be_bytes()).as_bytes());
    k
}

/// One block's records: `None` removes.
type Records = Vec<(Vec<u8>, Option<Vec<u8>>)>;

struct Chain {
    rng: Rng,
    height: u64,
    next_piece: u64,
    /// (holder org, piece id) of live pieces, to pick from.
    live: Vec<(u64, u64)>,
    accounts: u64,
    /// Pieces are picked among the newest this many live ones (`None`: all).
    recent: Option<u64>,
}

impl Chain {
    /// A live piece's index in `live`: any, or one of the newest `recent`.
    fn pick(&mut self) -> usize {
        let len = self.live.len() as u64;
        let among = self.recent.map_or(len, |r| r.min(len));
        (len - 1 - self.rng.below(among)) as usize
    }

    fn block(&mut self, txs: usize) -> Records {
        let mut out: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
        let value =
            |rng: &mut Rng, len: usize| -> Vec<u8> { (0..len).map(|_| rng.next() as u8).collect() };
        for i in 0..txs {
            let tx = blake3::hash(&[self.height.to_be_bytes(), (i as u64).to_be_bytes()].concat());
            let mut k = vec![0x05];
            k.extend_from_slice(tx.as_bytes());
            out.insert(k, Some(value(&mut self.rng, 12)));
            let account = self.rng.below(self.accounts);
            out.insert(account_key(account), Some(value(&mut self.rng, 90)));
            // 45 % issue or split (new pieces), 55 % transfer/financing/settle.
            let roll = self.rng.below(100);
            let org = self.rng.below(200);
            if roll < 40 && !self.live.is_empty() {
                // split: the parent rewritten and unlisted, two children listed
                let at = self.pick();
                let (holder, id) = self.live.swap_remove(at);
                out.insert(piece_key(id), Some(value(&mut self.rng, 150)));
                out.insert(holder_key(holder, id), None);
                for owner in [holder, org] {
                    let child = self.next_piece;
                    self.next_piece += 1;
                    out.insert(piece_key(child), Some(value(&mut self.rng, 150)));
                    out.insert(holder_key(owner, child), Some(Vec::new()));
                    self.live.push((owner, child));
                }
            } else if roll < 45 || self.live.is_empty() {
                // issue: a root, a piece
                let id = self.next_piece;
                self.next_piece += 1;
                out.insert(
                    state_key(&[b"r/".as_slice(), &id.to_be_bytes()].concat()),
                    Some(value(&mut self.rng, 120)),
                );
                out.insert(piece_key(id), Some(value(&mut self.rng, 150)));
                out.insert(holder_key(org, id), Some(Vec::new()));
                self.live.push((org, id));
            } else {
                // transfer: the piece rewritten, moved between holders
                let at = self.pick();
                let (holder, id) = self.live[at];
                out.insert(piece_key(id), Some(value(&mut self.rng, 150)));
                out.insert(holder_key(holder, id), None);
                out.insert(holder_key(org, id), Some(Vec::new()));
                self.live[at] = (org, id);
            }
        }
        // The block in 64 KiB pieces (~300 B a transaction), receipts per 32.
        let mut h = vec![0x01];
        h.extend_from_slice(&self.height.to_be_bytes());
        for piece in 0..(txs * 300).div_ceil(65536) as u32 {
            out.insert(
                [h.as_slice(), &piece.to_be_bytes()].concat(),
                Some(value(&mut self.rng, 65536)),
            );
        }
        h[0] = 0x04;
        for group in 0..txs.div_ceil(32) as u32 {
            out.insert(
                [h.as_slice(), &group.to_be_bytes()].concat(),
                Some(value(&mut self.rng, 32 * 90)),
            );
        }
        self.height += 1;
        out.into_iter().collect()
    }

    /// Keys the next block's execution reads.
    fn reads(&mut self, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                if self.rng.below(3) == 0 {
                    account_key(self.rng.below(self.accounts))
                } else {
                    let at = self.pick();
                    piece_key(self.live[at].1)
                }
            })
            .collect()
    }
}

trait Store {
    fn write(&mut self, records: &Records);
    fn get(&self, key: &[u8]) -> bool;
}

struct Sled(sled::Db);
impl Store for Sled {
    // As the node applies a block after its redo file: key by key, then one flush.
    fn write(&mut self, records: &Records) {
        for (k, v) in records {
            match v {
                Some(v) => self.0.insert(k.as_slice(), v.as_slice()).map(drop).unwrap(),
                None => self.0.remove(k.as_slice()).map(drop).unwrap(),
            }
        }
        self.0.flush().unwrap();
    }
    fn get(&self, key: &[u8]) -> bool {
        self.0.get(key).unwrap().is_some()
    }
}

/// sled 1.0 (alpha): leaves of up to `FANOUT` entries (its default 1,024), written whole at a flush.
struct Sled1<const FANOUT: usize>(sled1::Db<FANOUT>);
impl<const FANOUT: usize> Store for Sled1<FANOUT> {
    // One atomic batch, then one flush (which syncs).
    fn write(&mut self, records: &Records) {
        let mut batch = sled1::Batch::default();
        for (k, v) in records {
            match v {
                Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                None => batch.remove(k.as_slice()),
            }
        }
        self.0.apply_batch(batch).unwrap();
        self.0.flush().unwrap();
    }
    fn get(&self, key: &[u8]) -> bool {
        self.0.get(key).unwrap().is_some()
    }
}

struct Fjall(fjall::Database, fjall::Keyspace);
impl Store for Fjall {
    // One atomic batch, then the journal synced.
    fn write(&mut self, records: &Records) {
        let mut batch = self.0.batch();
        for (k, v) in records {
            match v {
                Some(v) => batch.insert(&self.1, k.as_slice(), v.as_slice()),
                None => batch.remove(&self.1, k.as_slice()),
            }
        }
        batch.commit().unwrap();
        self.0.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    fn get(&self, key: &[u8]) -> bool {
        self.1.get(key).unwrap().is_some()
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");
struct Redb(redb::Database);
impl Store for Redb {
    // One write transaction, committed durably.
    fn write(&mut self, records: &Records) {
        let tx = self.0.begin_write().unwrap();
        {
            let mut t = tx.open_table(TABLE).unwrap();
            for (k, v) in records {
                match v {
                    Some(v) => drop(t.insert(k.as_slice(), v.as_slice()).unwrap()),
                    None => drop(t.remove(k.as_slice()).unwrap()),
                }
            }
        }
        tx.commit().unwrap();
    }
    fn get(&self, key: &[u8]) -> bool {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.0.begin_read().unwrap();
        let t = tx.open_table(TABLE).unwrap();
        t.get(key).unwrap().is_some()
    }
}

/// No store: what generating the records and reads costs.
struct Nothing;
impl Store for Nothing {
    fn write(&mut self, _: &Records) {}
    fn get(&self, _: &[u8]) -> bool {
        true
    }
}

/// The same cache and no flusher of its own; zstd level from SLED1_ZSTD (sled's default 3).
fn sled1_config(dir: &std::path::Path) -> sled1::Config {
    sled1::Config::new()
        .path(dir)
        .cache_capacity_bytes(256 << 20)
        .flush_every_ms(None)
        .zstd_compression_level(
            std::env::var("SLED1_ZSTD").map_or(3, |l| l.parse().expect("SLED1_ZSTD: a level")),
        )
}

/// This process's CPU time (all threads: the stores' own ones too).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (kind, dir) = (args[1].as_str(), std::path::Path::new(&args[2]));
    let preload: usize = args[3].parse().unwrap();
    let measured: usize = args[4].parse().unwrap();
    let txs: usize = args.get(5).map_or(5000, |a| a.parse().unwrap());
    let _ = std::fs::remove_dir_all(dir);
    let mut store: Box<dyn Store> = match kind {
        // The node's settings: 8 MiB segments, 256 MiB cache, sled's flusher off.
        "sled" => Box::new(Sled(
            sled::Config::new()
                .path(dir)
                .segment_size(8 << 20)
                .cache_capacity(256 << 20)
                .flush_every_ms(None)
                .open()
                .unwrap(),
        )),
        // The same cache and no flusher of its own; zstd level from SLED1_ZSTD (sled's default 3).
        "sled1" => Box::new(Sled1::<1024>(sled1_config(dir).open().unwrap())),
        "sled1-64" => Box::new(Sled1::<64>(sled1_config(dir).open().unwrap())),
        "fjall" => {
            let db = fjall::Database::builder(dir).open().unwrap();
            let ks = db
                .keyspace("t", fjall::KeyspaceCreateOptions::default)
                .unwrap();
            Box::new(Fjall(db, ks))
        }
        "redb" => {
            std::fs::create_dir_all(dir).unwrap();
            Box::new(Redb(redb::Database::create(dir.join("db")).unwrap()))
        }
        "none" => Box::new(Nothing),
        _ => panic!("sled, sled1, sled1-64, fjall, redb or none"),
    };
    let mut chain = Chain {
        rng: Rng(0x9e3779b97f4a7c15),
        height: 0,
        next_piece: 1,
        live: Vec::new(),
        accounts: 20_000,
        recent: std::env::var("RECENT")
            .ok()
            .map(|n| n.parse().expect("RECENT: a number")),
    };
    let mut records = 0;
    let (mut write_wall, mut read_wall, mut write_cpu) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut span_start = (cpu(), Instant::now());
    for b in 0..preload + measured {
        if b == preload {
            span_start = (cpu(), Instant::now());
        }
        let block = chain.block(txs);
        let reads = chain.reads(txs * 5 / 2);
        let (c0, t0) = (cpu(), Instant::now());
        store.write(&block);
        let (c1, t1) = (cpu(), Instant::now());
        let found = reads.iter().filter(|k| store.get(k)).count();
        if b >= preload {
            assert!(found * 10 > reads.len() * 9, "{found} of {}", reads.len());
            records += block.len();
            write_wall += t1 - t0;
            write_cpu += c1 - c0;
            read_wall += t1.elapsed();
        }
    }
    let (span_cpu, span_wall) = (cpu() - span_start.0, span_start.1.elapsed());
    let per = |d: Duration| d.as_secs_f64() * 1e6 / records as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / measured as f64;
    println!(
        "{kind}: {} records a block ({:.1} a tx), {} live pieces; write {:.1} ms a block ({:.2} µs a record, CPU {:.2} µs), reads {:.1} ms a block ({:.2} µs each); all threads over the measured blocks: {:.1} ms CPU a block ({:.0} % of the wall time); store {} MiB",
        records / measured,
        records as f64 / measured as f64 / txs as f64,
        chain.live.len(),
        ms(write_wall),
        per(write_wall),
        per(write_cpu),
        ms(read_wall),
        read_wall.as_secs_f64() * 1e6 / (measured * txs * 5 / 2) as f64,
        ms(span_cpu),
        100.0 * span_cpu.as_secs_f64() / span_wall.as_secs_f64(),
        dir_size(dir) >> 20
    );
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
