//! The transport over real libp2p on loopback: who may connect, what a bad
//! peer gets, and that good traffic reaches the driver.

use super::*;
use crate::chain;
use crate::priority::Priority;
use crate::vm::Vm;
use libp2p::swarm::Swarm;
use trellis_genesis::{Genesis, NetworkSpec, NodeKeys};
use trellis_types::VoteData;
use trellis_types::block::VoteKind;

const DEADLINE: Duration = Duration::from_secs(20);

struct Node {
    /// Stops the admission thread, which holds the store, before the directory goes.
    _admission: crate::mempool::Worker,
    _dir: tempfile::TempDir,
    storage: Storage,
    mempool: Arc<Mempool>,
    handle: NetworkHandle,
    inbound: mpsc::Receiver<Inbound>,
    metrics: Arc<Metrics>,
    addr: Multiaddr,
}

fn network() -> (Genesis, Vec<NodeKeys>) {
    network_of(2)
}

fn network_of(validators: usize) -> (Genesis, Vec<NodeKeys>) {
    network_with(validators, 0)
}

/// Keys of the validators first, then of the observers.
fn network_with(validators: usize, observers: usize) -> (Genesis, Vec<NodeKeys>) {
    trellis_genesis::build(&NetworkSpec {
        chain_id: "trellis-net-test".into(),
        seed: "net-test".into(),
        validators,
        observers,
        genesis_time_ms: trellis_genesis::DEV_GENESIS_TIME_MS,
    })
    .expect("a valid test network")
}

fn free_addr() -> Multiaddr {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

/// A node of the network, listening on loopback, with a chain at genesis.
async fn start_node(genesis: &Genesis, keys: &NodeKeys, max_frame_bytes: usize) -> Node {
    start_node_dialing(genesis, keys, max_frame_bytes, vec![]).await
}

async fn start_node_dialing(
    genesis: &Genesis,
    keys: &NodeKeys,
    max_frame_bytes: usize,
    dial: Vec<Multiaddr>,
) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&dir.path().join("chain")).unwrap();
    chain::initialise(&storage, genesis, &Vm::new()).unwrap();
    let mempool =
        Arc::new(Mempool::new(genesis.chain_id.clone(), genesis.params.clone()).with_forwarding());
    let metrics = Arc::new(Metrics::new());
    let addr = free_addr();
    let config = NetworkConfig {
        listen: addr.clone(),
        dial,
        identity: identity_from_seed(keys.node.seed()),
        members: genesis.node_keys(),
        validators: genesis.validators.iter().map(|v| v.node_key).collect(),
        max_frame_bytes,
    };
    let (admission, admission_worker) = Batcher::start(
        mempool.clone(),
        storage.clone(),
        1_024,
        crate::node::now_ms,
        Priority::Normal,
    );
    let (handle, inbound) = spawn(
        config,
        storage.clone(),
        mempool.clone(),
        admission,
        metrics.clone(),
    )
    .unwrap();
    Node {
        _admission: admission_worker,
        _dir: dir,
        storage,
        mempool,
        handle,
        inbound,
        metrics,
        addr,
    }
}

/// A bare client speaking raw frames on the Trellis protocol, with any
/// identity. A stalling one writes its bytes and then never finishes; a
/// serving one takes requests (whole, as raw bytes) and answers nothing.
#[derive(Clone, Default)]
struct RawCodec {
    stall: bool,
    serve: bool,
}

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: libp2p::futures::AsyncRead + Unpin + Send,
    {
        if !self.serve {
            return Err(io::Error::other("the test client serves nothing"));
        }
        let mut len = [0; 4];
        io.read_exact(&mut len).await?;
        let mut out = vec![0; u32::from_be_bytes(len) as usize];
        io.read_exact(&mut out).await?;
        Ok(out)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: libp2p::futures::AsyncRead + Unpin + Send,
    {
        let mut out = Vec::new();
        io.read_to_end(&mut out).await?;
        Ok(out)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: libp2p::futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        if self.stall {
            io.flush().await?;
            std::future::pending::<()>().await;
        }
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: libp2p::futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await?;
        io.close().await
    }
}

fn client(identity: identity::Keypair) -> Swarm<request_response::Behaviour<RawCodec>> {
    client_with(identity, RawCodec::default())
}

fn client_with(
    identity: identity::Keypair,
    codec: RawCodec,
) -> Swarm<request_response::Behaviour<RawCodec>> {
    let support = if codec.serve {
        ProtocolSupport::Full
    } else {
        ProtocolSupport::Outbound
    };
    test_swarm(
        identity,
        request_response::Behaviour::with_codec(
            codec,
            [(PROTOCOL, support)],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(60))
                // More than a node sends at once, so the node's bound is what binds.
                .with_max_concurrent_streams(2 * STREAMS_PER_CONNECTION),
        ),
    )
}

/// A swarm with `identity` and `behaviour` over TCP, noise and yamux, as a node's.
fn test_swarm<B: libp2p::swarm::NetworkBehaviour>(
    identity: identity::Keypair,
    behaviour: B,
) -> Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// Drives the client until `done` says so for an event, or the deadline passes.
async fn until<F>(swarm: &mut Swarm<request_response::Behaviour<RawCodec>>, mut done: F) -> bool
where
    F: FnMut(&SwarmEvent<request_response::Event<Vec<u8>, Vec<u8>>>) -> bool,
{
    tokio::time::timeout(DEADLINE, async {
        loop {
            let event = swarm.select_next_some().await;
            if done(&event) {
                return;
            }
        }
    })
    .await
    .is_ok()
}

/// The node's response an event carries, decoded, if it carries one.
fn response(e: &SwarmEvent<request_response::Event<Vec<u8>, Vec<u8>>>) -> Option<Response> {
    match e {
        SwarmEvent::Behaviour(request_response::Event::Message {
            message: request_response::Message::Response { response, .. },
            ..
        }) => decode(&response[4..]).ok(),
        _ => None,
    }
}

/// A client with member `keys`' identity, connected to `node`.
async fn connected_member(
    keys: &NodeKeys,
    node: &Node,
) -> Swarm<request_response::Behaviour<RawCodec>> {
    connected_member_with(keys, node, RawCodec::default()).await
}

async fn connected_member_with(
    keys: &NodeKeys,
    node: &Node,
    codec: RawCodec,
) -> Swarm<request_response::Behaviour<RawCodec>> {
    let mut peer = client_with(identity_from_seed(keys.node.seed()), codec);
    peer.dial(node.addr.clone()).unwrap();
    assert!(
        until(&mut peer, |e| matches!(
            e,
            SwarmEvent::ConnectionEstablished { .. }
        ))
        .await
    );
    peer
}

/// Drives the client until `done` holds, or the deadline passes (false).
async fn drive_until(
    peer: &mut Swarm<request_response::Behaviour<RawCodec>>,
    mut done: impl FnMut() -> bool,
) -> bool {
    tokio::time::timeout(DEADLINE, async {
        while !done() {
            tokio::select! {
                _ = peer.select_next_some() => {}
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Has `node` send `message` to every peer.
async fn broadcast(node: &Node, message: Message) {
    let sent = node.handle.outbound.send(Outbound::Broadcast(message));
    sent.await.expect("the network task runs");
}

fn vote(genesis: &Genesis, keys: &NodeKeys) -> Message {
    vote_at(genesis, keys, 1)
}

fn vote_at(genesis: &Genesis, keys: &NodeKeys, height: u64) -> Message {
    let key = keys.consensus.clone().expect("a validator");
    let data = VoteData {
        chain_id: genesis.chain_id.clone(),
        height,
        round: 0,
        kind: VoteKind::Prevote,
        block: None,
    };
    Message::Vote(data.sign(&key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_reaches_the_driver_and_can_sync_blocks() {
    let (genesis, keys) = network();
    let mut node = start_node(&genesis, &keys[0], 1 << 20).await;
    let mut peer = connected_member(&keys[1], &node).await;
    let target = node.handle.local_peer_id;

    let message = vote(&genesis, &keys[1]);
    let body = encode(&Request::Consensus(message.clone()));
    peer.behaviour_mut().send_request(&target, frame(&body));
    let got = tokio::time::timeout(DEADLINE, async {
        loop {
            tokio::select! {
                inbound = node.inbound.recv() => if let Some(inbound @ Inbound::Consensus { .. }) = inbound { return inbound },
                _ = peer.select_next_some() => {}
            }
        }
    })
    .await
    .expect("the vote reaches the driver");
    let Inbound::Consensus {
        message: got_message,
        ..
    } = &got
    else {
        unreachable!()
    };
    assert_eq!(*got_message, message);
    assert_eq!(
        node.metrics.network_frame_bytes.get(),
        body.len() as i64,
        "the message holds its frame's bytes until the driver drops it"
    );
    drop(got);
    assert_eq!(node.metrics.network_frame_bytes.get(), 0);

    peer.behaviour_mut()
        .send_request(&target, frame(&encode(&Request::Sync { from: 0, max: 10 })));
    let mut blocks = None;
    assert!(
        until(&mut peer, |e| match response(e) {
            Some(Response::Blocks(b)) => {
                blocks = Some(b);
                true
            }
            _ => false,
        })
        .await
    );
    let blocks = blocks.expect("a sync response");
    assert_eq!(blocks.len(), 1, "only the genesis block is committed");
    assert_eq!(blocks[0].0.header.height, 0);
}

/// A sync response holds its frame's bytes of the requesting node's budget
/// until the driver drops the blocks, as a request's message does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_blocks_hold_their_frame_until_the_driver_drops_them() {
    let (genesis, keys) = network();
    let server = start_node(&genesis, &keys[1], 1 << 20).await;
    let mut node = start_node_dialing(&genesis, &keys[0], 1 << 20, vec![server.addr.clone()]).await;
    let server_id = server.handle.local_peer_id;
    let got = tokio::time::timeout(DEADLINE, async {
        loop {
            match node.inbound.recv().await.expect("the network runs") {
                Inbound::Peers(1) => node
                    .handle
                    .outbound
                    .send(Outbound::Sync {
                        peer: Some(server_id),
                        from: 0,
                    })
                    .await
                    .unwrap(),
                blocks @ Inbound::Blocks { .. } => return blocks,
                _ => {}
            }
        }
    })
    .await
    .expect("the server's blocks reach the driver");
    let Inbound::Blocks { from, blocks, .. } = &got else {
        unreachable!()
    };
    assert_eq!(*from, server_id);
    assert_eq!(blocks.len(), 1, "only the genesis block is committed");
    let frame = encode(&Response::Blocks(blocks.clone())).len();
    assert_eq!(node.metrics.network_frame_bytes.get(), frame as i64);
    drop(got);
    assert_eq!(node.metrics.network_frame_bytes.get(), 0);
}

/// An observer's node may connect and sync, but it never votes: a
/// consensus message from it is refused and counted against it, even one a
/// validator signed, and only the validators' own reach the driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consensus_messages_are_taken_from_validators_nodes_only() {
    let (genesis, keys) = network_with(2, 1);
    let mut node = start_node(&genesis, &keys[0], 1 << 20).await;
    let target = node.handle.local_peer_id;
    let request = frame(&encode(&Request::Consensus(vote(&genesis, &keys[1]))));

    let mut observer = connected_member(&keys[2], &node).await;
    observer
        .behaviour_mut()
        .send_request(&target, request.clone());
    let mut refusal = None;
    assert!(
        until(&mut observer, |e| {
            refusal = response(e);
            refusal.is_some()
        })
        .await
    );
    assert!(
        matches!(&refusal, Some(Response::Refused(why)) if why.contains("only validators")),
        "{refusal:?}"
    );
    assert_eq!(node.metrics.network_strikes.get(), 1);

    // Had the observer's vote been taken, it would be first in the queue.
    let mut validator = connected_member(&keys[1], &node).await;
    validator.behaviour_mut().send_request(&target, request);
    let from = tokio::time::timeout(DEADLINE, async {
        loop {
            tokio::select! {
                inbound = node.inbound.recv() => if let Some(Inbound::Consensus { from, .. }) = inbound { return from },
                _ = validator.select_next_some() => {}
            }
        }
    })
    .await
    .expect("the validator's vote reaches the driver");
    assert_eq!(from, *validator.local_peer_id());
}

/// A remark by the genesis account `core-acme/ops`, signed.
fn remark(genesis: &Genesis, nonce: u64) -> trellis_types::SignedTransaction {
    remark_of(genesis, nonce, 1)
}

/// A remark carrying `size` bytes.
fn remark_of(genesis: &Genesis, nonce: u64, size: usize) -> trellis_types::SignedTransaction {
    let key = trellis_genesis::dev_account("core-acme/ops");
    trellis_types::Transaction {
        chain_id: genesis.chain_id.clone(),
        sender: key.public(),
        nonce,
        expires_at_ms: crate::node::now_ms() + 60_000,
        payload: trellis_types::Payload::System(trellis_types::SystemOp::Remark {
            data: Bytes(vec![nonce as u8; size]),
        }),
    }
    .sign(&key)
}

/// Sends `txs` to `node` as a peer forwards them.
fn forward(
    peer: &mut Swarm<request_response::Behaviour<RawCodec>>,
    node: &Node,
    txs: &[&trellis_types::SignedTransaction],
) {
    let batch = txs.iter().map(|tx| Bytes(encode(*tx))).collect();
    peer.behaviour_mut().send_request(
        &node.handle.local_peer_id,
        frame(&encode(&Request::Transactions(TxBatch(batch)))),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_transactions_are_admitted_but_not_forwarded_again() {
    let (genesis, keys) = network();
    let node = start_node(&genesis, &keys[0], 1 << 20).await;
    let mut peer = connected_member(&keys[1], &node).await;
    let (first, second) = (remark(&genesis, 0), remark(&genesis, 1));
    forward(&mut peer, &node, &[&first, &second]);
    assert!(
        drive_until(&mut peer, || node.mempool.len() == 2).await,
        "both are admitted"
    );
    assert!(node.mempool.contains(&first.hash()) && node.mempool.contains(&second.hash()));
    assert!(
        node.mempool.take_outbox().is_empty(),
        "a peer's transactions are not forwarded again"
    );
    assert_eq!(node.metrics.network_strikes.get(), 0);
}

/// A peer forwards only what it admitted, under the same rules, so a batch
/// with a signature that does not verify is refused whole, found by one batch
/// check (never one check per signature), and its sender struck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_batch_with_a_bad_signature_is_refused_whole_and_its_sender_struck() {
    let (genesis, keys) = network();
    let node = start_node(&genesis, &keys[0], 1 << 20).await;
    let mut peer = connected_member(&keys[1], &node).await;
    let good = remark(&genesis, 0);
    let mut mis_signed = remark(&genesis, 1);
    mis_signed.signature = good.signature;
    forward(&mut peer, &node, &[&good, &mis_signed]);
    assert!(
        drive_until(&mut peer, || node.metrics.network_strikes.get() == 1).await,
        "the peer is struck"
    );
    assert_eq!(node.mempool.len(), 0, "nothing of the batch is admitted");
}

/// Waits until `node` has a peer.
async fn connected(node: &mut Node) {
    let connected = tokio::time::timeout(DEADLINE, async {
        while !matches!(node.inbound.recv().await, Some(Inbound::Peers(1))) {}
    })
    .await;
    assert!(connected.is_ok(), "the node connects to its peer");
}

/// What this node's API admits between two forwards may be more than one
/// frame holds: it goes to the other members as several requests, not as
/// one too large to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_a_frame_is_forwarded_in_several_batches() {
    const FRAME: usize = 16 << 10;
    let (genesis, keys) = network();
    let receiver = start_node(&genesis, &keys[1], FRAME).await;
    let mut sender =
        start_node_dialing(&genesis, &keys[0], FRAME, vec![receiver.addr.clone()]).await;
    connected(&mut sender).await;

    let txs: Vec<Vec<u8>> = (0..200)
        .map(|n| encode(&remark_of(&genesis, n, 200)))
        .collect();
    assert!(txs.iter().map(Vec::len).sum::<usize>() > 3 * FRAME);
    let items: Vec<&[u8]> = txs.iter().map(Vec::as_slice).collect();
    let admitted = sender
        .mempool
        .admit_batch(&items, &sender.storage, crate::node::now_ms());
    assert!(admitted.iter().all(Result::is_ok), "{admitted:?}");

    let forwarded = tokio::time::timeout(DEADLINE, async {
        while receiver.mempool.len() < txs.len() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        forwarded.is_ok(),
        "{} of {} forwarded",
        receiver.mempool.len(),
        txs.len()
    );
}

/// Admits `tx` as the node's API does, so that the node forwards it.
fn admit_here(node: &Node, tx: &trellis_types::SignedTransaction) {
    let admitted = node
        .mempool
        .admit(&encode(tx), &node.storage, crate::node::now_ms());
    assert!(admitted.is_ok(), "{admitted:?}");
}

/// An observer's node keeps what its API admitted until a validator's node
/// is connected (it never proposes it, and peers do not forward it again);
/// a validator's node forwards to whoever is connected, observers included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_forwards_what_it_admitted_once_a_validator_connects() {
    let (genesis, keys) = network_with(1, 1);
    let observer = start_node(&genesis, &keys[1], 1 << 20).await;
    let before = remark(&genesis, 0);
    admit_here(&observer, &before);
    // Several forwarding rounds pass with no validator's node connected.
    tokio::time::sleep(4 * FORWARD_INTERVAL).await;

    let mut validator =
        start_node_dialing(&genesis, &keys[0], 1 << 20, vec![observer.addr.clone()]).await;
    connected(&mut validator).await;
    let after = remark(&genesis, 1);
    admit_here(&validator, &after);
    let both = tokio::time::timeout(DEADLINE, async {
        while !(validator.mempool.contains(&before.hash())
            && observer.mempool.contains(&after.hash()))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        both.is_ok(),
        "the validator has the observer's: {}; the observer has the validator's: {}",
        validator.mempool.contains(&before.hash()),
        observer.mempool.contains(&after.hash())
    );
}

#[test]
fn forwarded_batches_keep_every_transaction_in_order_within_the_budget() {
    const BUDGET: usize = 1_000;
    let mut txs: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 96 + i * 23]).collect();
    txs.insert(17, vec![0xee; 3 * BUDGET]);
    let batches = forward_batches(txs.clone(), BUDGET);

    let flat: Vec<Vec<u8>> = batches
        .iter()
        .flat_map(|batch| batch.0.iter().map(|tx| tx.0.clone()))
        .collect();
    assert_eq!(flat, txs, "every transaction once, in order");
    let size = |batch: &[Bytes]| encode(&Request::Transactions(TxBatch(batch.to_vec()))).len();
    for batch in &batches {
        assert!(
            size(&batch.0) <= BUDGET || batch.0.len() == 1,
            "a batch over the budget holds one transaction alone"
        );
    }
    for pair in batches.windows(2) {
        let merged = [pair[0].0.clone(), vec![pair[1].0[0].clone()]].concat();
        assert!(
            size(&merged) > BUDGET - 10 * merged.len(),
            "no batch is cut early"
        );
    }
    assert!(forward_batches(Vec::new(), BUDGET).is_empty());
}

#[test]
fn forwarded_batches_hold_at_most_what_a_peer_accepts() {
    let txs: Vec<Vec<u8>> = (0..2 * MAX_FORWARDED_TXS + 5)
        .map(|i| (i as u32).to_be_bytes().repeat(MIN_TX_BYTES / 4))
        .collect();
    let batches = forward_batches(txs.clone(), usize::MAX);
    let counts: Vec<usize> = batches.iter().map(|b| b.0.len()).collect();
    assert_eq!(counts, [MAX_FORWARDED_TXS, MAX_FORWARDED_TXS, 5]);
    let flat: Vec<Vec<u8>> = batches.into_iter().flat_map(|b| b.0).map(|t| t.0).collect();
    assert_eq!(flat, txs, "every transaction once, in order");
}

/// Queues far more copies of a costly batch than there are places to check
/// them (the copies arrive far faster than they can be checked): one good
/// transaction and 199 mis-signed ones, so every copy checked costs the node
/// a batch equation of 200 signatures, refuses all of it and strikes the
/// peer.
fn flood(
    peer: &mut Swarm<request_response::Behaviour<RawCodec>>,
    target: PeerId,
    genesis: &Genesis,
) -> Vec<u8> {
    let stranger = trellis_types::KeyPair::insecure_from_label("stranger");
    let mut batch = vec![Bytes(encode(&remark(genesis, 0)))];
    batch.extend((1..200).map(|n| {
        let mut tx = remark(genesis, n);
        tx.signature = stranger.sign(&tx.hash());
        Bytes(encode(&tx))
    }));
    let request = frame(&encode(&Request::Transactions(TxBatch(batch))));
    for _ in 0..3 * PEER_BATCHES_IN_FLIGHT {
        peer.behaviour_mut().send_request(&target, request.clone());
    }
    request
}

/// The node's count of forwarded transactions dropped for want of a place.
fn dropped(node: &Node) -> Option<String> {
    node.metrics
        .encode()
        .lines()
        .find(|l| l.contains("code=\"peer_admission_busy\""))
        .map(str::to_owned)
}

/// A member that floods the node with transaction batches faster than they
/// can be checked gets the excess dropped and counted, not queued without
/// bound; the node goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forwarded_batches_is_dropped_beyond_the_places_for_them() {
    let (genesis, keys) = network();
    // Frames large enough that the connection's budget holds every copy
    // below (about 50 KB each): the places for checking are what is tested.
    let node = start_node(&genesis, &keys[0], 4 << 20).await;
    let mut peer = connected_member(&keys[1], &node).await;
    let target = node.handle.local_peer_id;
    flood(&mut peer, target, &genesis);
    let strikes = || node.metrics.network_strikes.get();
    let done = drive_until(&mut peer, || dropped(&node).is_some() && strikes() > 0).await;
    assert!(done, "dropped: {:?}, strikes {}", dropped(&node), strikes());
    assert!(
        node.mempool.is_empty(),
        "nothing of a bad batch is admitted"
    );
    // Still answering (on another connection: the flooding one waits behind
    // its own frames).
    let mut other = connected_member(&keys[1], &node).await;
    other
        .behaviour_mut()
        .send_request(&target, frame(&encode(&Request::Sync { from: 0, max: 1 })));
    assert!(
        until(&mut other, |e| matches!(
            response(e),
            Some(Response::Blocks(_))
        ))
        .await
    );
}

/// Frames that claim their length and then never arrive: the node takes
/// each one's bytes from its connection's budget before reading it, so
/// however many streams a member opens, the connection holds no more than the
/// budget, and other connections go on; all of it comes back when the
/// connection goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_make_the_node_hold_more_than_the_frame_budget() {
    let (genesis, keys) = network();
    let max_frame = 64 << 10;
    let mut node = start_node(&genesis, &keys[0], max_frame).await;
    let mut peer = connected_member_with(
        &keys[1],
        &node,
        RawCodec {
            stall: true,
            ..RawCodec::default()
        },
    )
    .await;
    let target = node.handle.local_peer_id;
    let claimed = 60 << 10;
    let mut request = (claimed as u32).to_be_bytes().to_vec();
    request.extend_from_slice(&[0; 1024]);
    for _ in 0..20 {
        peer.behaviour_mut().send_request(&target, request.clone());
    }
    // The budget holds four largest frames: four claims fit, a fifth does not.
    let fitting = (FRAME_BUDGET_FRAMES * max_frame / claimed * claimed) as i64;
    let held = || node.metrics.network_frame_bytes.get();
    assert!(
        drive_until(&mut peer, || held() == fitting).await,
        "held {} of {fitting}",
        held()
    );
    let settle = tokio::time::sleep(Duration::from_millis(500));
    tokio::pin!(settle);
    loop {
        tokio::select! {
            _ = &mut settle => break,
            _ = peer.select_next_some() => {}
        }
        assert_eq!(held(), fitting, "never more than fits the budget");
    }
    assert_eq!(held(), fitting, "the other sixteen claims wait");

    // Another connection is not held up by the stalled one's budget.
    let mut other = connected_member(&keys[1], &node).await;
    let body = encode(&Request::Consensus(vote(&genesis, &keys[1])));
    other.behaviour_mut().send_request(&target, frame(&body));
    let reached = tokio::time::timeout(DEADLINE, async {
        loop {
            tokio::select! {
                inbound = node.inbound.recv() => if let Some(Inbound::Consensus { .. }) = inbound { return },
                _ = other.select_next_some() => {}
                _ = peer.select_next_some() => {}
            }
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "the other connection's vote reaches the driver"
    );

    drop(peer);
    let deadline = Instant::now() + DEADLINE;
    while held() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        held(),
        0,
        "a closed connection gives its frames' bytes back"
    );
}

/// Both sides dialling at once needs two connections; a member opening more
/// is refused beyond that, so it cannot multiply its streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_gets_at_most_two_connections() {
    use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
    let (genesis, keys) = network();
    let node = start_node(&genesis, &keys[0], 1 << 20).await;
    let mut peer = client(identity_from_seed(keys[1].node.seed()));
    let target = node.handle.local_peer_id;
    for _ in 0..4 {
        peer.dial(
            DialOpts::peer_id(target)
                .addresses(vec![node.addr.clone()])
                .condition(PeerCondition::Always)
                .build(),
        )
        .unwrap();
    }
    let mut refused = 0;
    let mut count = |e: &SwarmEvent<_>| {
        if matches!(
            e,
            SwarmEvent::ConnectionClosed { .. } | SwarmEvent::OutgoingConnectionError { .. }
        ) {
            refused += 1;
        }
        refused == 2
    };
    assert!(
        until(&mut peer, &mut count).await,
        "two of four connections refused"
    );
    // And no more: the two left stay.
    let more = until(&mut peer, |e| {
        count(e);
        false
    });
    let _ = tokio::time::timeout(Duration::from_millis(500), more).await;
    assert_eq!(refused, 2);
    assert_eq!(
        peer.network_info().connection_counters().num_established(),
        2
    );
}

/// A flooding member takes at most its own share of the places for checking
/// batches: another member's batch, sent while the flood goes on (a new copy
/// for every answer), is still checked and admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_member_leaves_places_for_the_others_batches() {
    let (genesis, keys) = network_of(3);
    let node = start_node(&genesis, &keys[0], 4 << 20).await;
    let mut flooder = connected_member(&keys[1], &node).await;
    let mut other = connected_member(&keys[2], &node).await;
    let target = node.handle.local_peer_id;
    let copy = flood(&mut flooder, target, &genesis);
    assert!(drive_until(&mut flooder, || dropped(&node).is_some()).await);

    let good = remark(&genesis, 1);
    let batch = Request::Transactions(TxBatch(vec![Bytes(encode(&good))]));
    other
        .behaviour_mut()
        .send_request(&target, frame(&encode(&batch)));
    let admitted = tokio::time::timeout(DEADLINE, async {
        while !node.mempool.contains(&good.hash()) {
            tokio::select! {
                event = flooder.select_next_some() => {
                    if matches!(event, SwarmEvent::Behaviour(_)) {
                        flooder.behaviour_mut().send_request(&target, copy.clone());
                    }
                }
                _ = other.select_next_some() => {}
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    })
    .await;
    assert!(admitted.is_ok(), "dropped: {:?}", dropped(&node));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_the_genesis_cannot_connect() {
    let (genesis, keys) = network();
    let mut node = start_node(&genesis, &keys[0], 1 << 20).await;
    let mut stranger = client(identity::Keypair::generate_ed25519());
    stranger.dial(node.addr.clone()).unwrap();
    let target = node.handle.local_peer_id;
    stranger.behaviour_mut().send_request(
        &target,
        frame(&encode(&Request::Consensus(vote(&genesis, &keys[1])))),
    );
    let failed = until(&mut stranger, |e| {
        matches!(
            e,
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. })
                | SwarmEvent::OutgoingConnectionError { .. }
        )
    })
    .await;
    assert!(failed, "the stranger's request must fail");
    assert!(
        node.inbound.try_recv().is_err(),
        "nothing from a stranger reaches the driver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_keeps_sending_garbage_is_disconnected() {
    let (genesis, keys) = network();
    let node = start_node(&genesis, &keys[0], 1 << 20).await;
    let mut peer = connected_member(&keys[1], &node).await;
    let target = node.handle.local_peer_id;
    for i in 0..(STRIKES + 10) {
        peer.behaviour_mut()
            .send_request(&target, frame(&[0xde, 0xad, i as u8]));
    }
    let closed = until(&mut peer, |e| {
        matches!(
            e,
            SwarmEvent::ConnectionClosed {
                num_established: 0,
                ..
            }
        )
    })
    .await;
    assert!(closed, "the node disconnects a peer past {STRIKES} strikes");
    assert!(node.metrics.network_strikes.get() >= u64::from(STRIKES));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_without_reading_it() {
    let (genesis, keys) = network();
    let node = start_node(&genesis, &keys[0], 4096).await;
    let mut peer = connected_member(&keys[1], &node).await;
    let target = node.handle.local_peer_id;
    // Claims 1 GiB; the node must refuse on the length alone.
    let mut request = (1u32 << 30).to_be_bytes().to_vec();
    request.extend_from_slice(&[0; 64]);
    peer.behaviour_mut().send_request(&target, request);
    let deadline = Instant::now() + DEADLINE;
    while node.metrics.network_strikes.get() == 0 && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(100), peer.select_next_some()).await;
    }
    assert_eq!(
        node.metrics.network_strikes.get(),
        1,
        "the oversized frame counts against the peer"
    );
}

/// Sends a forwarded batch of `entries` made from a remark of `genesis`,
/// which must be refused undecoded: the peer struck, nothing admitted.
async fn assert_batch_refused(entries: impl FnOnce(Bytes) -> Vec<Bytes>) {
    let (genesis, keys) = network();
    let node = start_node(&genesis, &keys[0], 1 << 20).await;
    let mut peer = connected_member(&keys[1], &node).await;
    let batch = Request::Transactions(TxBatch(entries(Bytes(encode(&remark(&genesis, 0))))));
    let request = encode(&batch);
    assert!(decode::<Request>(&request).is_err());
    peer.behaviour_mut()
        .send_request(&node.handle.local_peer_id, frame(&request));
    assert!(
        drive_until(&mut peer, || node.metrics.network_strikes.get() == 1).await,
        "the batch counts against the peer"
    );
    assert!(node.mempool.is_empty(), "nothing of it is admitted");
}

/// An empty entry is one byte on the wire and 24 in memory: a batch of them
/// would decode to many times its frame. No transaction is that short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_an_entry_shorter_than_any_transaction_is_refused() {
    assert_batch_refused(|good| vec![good, Bytes(vec![0; MIN_TX_BYTES - 1])]).await;
}

/// A batch is checked with one batch equation: a member may not make that
/// equation as large as its frame allows (tens of thousands of signatures
/// for one strike). One more than a batch holds is refused unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_more_transactions_than_a_batch_holds_is_refused() {
    assert_batch_refused(|good| vec![good; MAX_FORWARDED_TXS + 1]).await;
    let full = TxBatch(vec![Bytes(vec![1; MIN_TX_BYTES]); MAX_FORWARDED_TXS]);
    let request = Request::Transactions(full);
    assert_eq!(decode::<Request>(&encode(&request)).ok(), Some(request));
}

#[test]
fn strikes_add_up_to_a_disconnect_only_within_one_window() {
    let mut budget = PeerBudget::new();
    let start = Instant::now();
    for _ in 1..STRIKES {
        assert!(!budget.strike(start));
    }
    // Past the window, the old strikes are forgiven and counting starts over.
    let later = start + STRIKE_WINDOW + Duration::from_secs(1);
    for _ in 1..STRIKES {
        assert!(!budget.strike(later));
    }
    assert!(
        budget.strike(later),
        "the {STRIKES}th strike within one window disconnects"
    );
}

// Push streams: what needs no answer, on one long-lived stream per peer.

/// A member's client that opens push streams to `node` and writes raw bytes
/// on them; its swarm runs in a task of its own until the test ends.
async fn push_client(keys: &NodeKeys, node: &Node) -> libp2p_stream::Control {
    let identity = identity_from_seed(keys.node.seed());
    let mut swarm = test_swarm(identity, libp2p_stream::Behaviour::new());
    swarm.dial(node.addr.clone()).unwrap();
    let connected = tokio::time::timeout(DEADLINE, async {
        while !matches!(
            swarm.select_next_some().await,
            SwarmEvent::ConnectionEstablished { .. }
        ) {}
    })
    .await;
    assert!(connected.is_ok(), "the client connects");
    let control = swarm.behaviour().new_control();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    control
}

async fn open_push(control: &mut libp2p_stream::Control, node: &Node) -> libp2p::Stream {
    tokio::time::timeout(
        DEADLINE,
        control.open_stream(node.handle.local_peer_id, push::PROTOCOL),
    )
    .await
    .expect("in time")
    .expect("the node takes push streams")
}

/// The next consensus message the driver gets, with what it holds.
async fn next_consensus(node: &mut Node) -> (Message, Inbound) {
    let inbound = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(inbound @ Inbound::Consensus { .. }) = node.inbound.recv().await {
                return inbound;
            }
        }
    })
    .await
    .expect("a consensus message reaches the driver");
    let Inbound::Consensus { message, .. } = &inbound else {
        unreachable!()
    };
    (message.clone(), inbound)
}

/// Several frames in one write arrive in order, each holding its bytes of
/// the peer's budget until handled, and forwarded transactions are admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_stream_carries_a_member_s_messages_in_order() {
    let (genesis, keys) = network();
    let mut node = start_node(&genesis, &keys[0], 1 << 20).await;
    let mut control = push_client(&keys[1], &node).await;
    let mut stream = open_push(&mut control, &node).await;
    let tx = remark(&genesis, 0);
    let votes: Vec<Message> = (1..=3).map(|h| vote_at(&genesis, &keys[1], h)).collect();
    let mut bytes = frame(&encode(&Request::Transactions(TxBatch(vec![Bytes(
        encode(&tx),
    )]))));
    for vote in &votes {
        bytes.extend(frame(&encode(&Request::Consensus(vote.clone()))));
    }
    stream.write_all(&bytes).await.unwrap();
    stream.flush().await.unwrap();

    let mut held = Vec::new();
    for expected in &votes {
        let (got, inbound) = next_consensus(&mut node).await;
        assert_eq!(&got, expected, "in the order written");
        held.push(inbound);
    }
    let vote_bytes: usize = votes
        .iter()
        .map(|v| encode(&Request::Consensus(v.clone())).len())
        .sum();
    let deadline = Instant::now() + DEADLINE;
    while !node.mempool.contains(&tx.hash()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        node.mempool.contains(&tx.hash()),
        "the transaction is admitted"
    );
    assert_eq!(
        node.metrics.network_frame_bytes.get(),
        vote_bytes as i64,
        "the votes hold their frames until the driver drops them"
    );
    drop(held);
    assert_eq!(node.metrics.network_frame_bytes.get(), 0);
}

/// An oversized frame is refused on its length and ends the stream (what
/// follows it is never read); a sync request, which needs an answer, is
/// refused on a push stream. Both count against the peer, which may open
/// another stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_push_stream_may_not_carry_counts_against_the_peer() {
    let (genesis, keys) = network();
    let max_frame = 16 << 10;
    let mut node = start_node(&genesis, &keys[0], max_frame).await;
    let mut control = push_client(&keys[1], &node).await;
    let strikes = |node: &Node| node.metrics.network_strikes.get();

    let mut first = open_push(&mut control, &node).await;
    let mut bytes = ((max_frame + 1) as u32).to_be_bytes().to_vec();
    bytes.extend(frame(&encode(&Request::Consensus(vote_at(
        &genesis, &keys[1], 1,
    )))));
    first.write_all(&bytes).await.unwrap();
    first.flush().await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    while strikes(&node) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(strikes(&node), 1, "the oversized frame counts");

    let mut second = open_push(&mut control, &node).await;
    let after = vote_at(&genesis, &keys[1], 2);
    let mut bytes = frame(&encode(&Request::Sync { from: 0, max: 1 }));
    bytes.extend(frame(&encode(&Request::Consensus(after.clone()))));
    second.write_all(&bytes).await.unwrap();
    second.flush().await.unwrap();
    let (got, _) = next_consensus(&mut node).await;
    assert_eq!(
        got, after,
        "the vote behind the oversized frame was never read"
    );
    assert_eq!(strikes(&node), 2, "the sync request counts too");
}

/// However many push streams a member opens, its frames held in memory stay
/// within one budget: a newer stream replaces the older, and the budget is
/// the peer's, not the stream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_s_push_streams_share_one_budget() {
    let (genesis, keys) = network();
    let max_frame = 1024;
    let mut node = start_node(&genesis, &keys[0], max_frame).await;
    let mut control = push_client(&keys[1], &node).await;
    let budget = (FRAME_BUDGET_FRAMES * max_frame) as i64;
    let held = |node: &Node| node.metrics.network_frame_bytes.get();
    let votes = |from: u64| -> Vec<u8> {
        (from..from + 40)
            .flat_map(|h| frame(&encode(&Request::Consensus(vote_at(&genesis, &keys[1], h)))))
            .collect()
    };
    let vote_bytes = encode(&Request::Consensus(vote_at(&genesis, &keys[1], 1))).len() as i64;
    assert!(
        40 * vote_bytes > budget,
        "forty votes are more than the budget"
    );

    // The driver reads nothing yet: the votes it was handed hold their bytes.
    for from in [1, 100, 200] {
        let mut stream = open_push(&mut control, &node).await;
        stream.write_all(&votes(from)).await.unwrap();
        stream.flush().await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            assert!(held(&node) <= budget, "held {} of {budget}", held(&node));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(
        held(&node) > budget - vote_bytes,
        "the budget is spent: {} of {budget}",
        held(&node)
    );

    // Once the driver handles them, the newest stream's votes come through.
    let newest = vote_at(&genesis, &keys[1], 239);
    let reached = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(Inbound::Consensus { message, .. }) = node.inbound.recv().await
                && message == newest
            {
                return;
            }
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "the last vote of the newest stream arrives"
    );
}

/// A sync request for no peer in particular goes to the connected peers in
/// turn, so that one with nothing to give is not the only one asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_requests_for_no_peer_in_particular_take_the_peers_in_turn() {
    let (genesis, keys) = network_of(3);
    let mut node = start_node(&genesis, &keys[0], 1 << 20).await;
    let serving = || RawCodec {
        serve: true,
        ..RawCodec::default()
    };
    let mut a = connected_member_with(&keys[1], &node, serving()).await;
    let mut b = connected_member_with(&keys[2], &node, serving()).await;
    let both = tokio::time::timeout(DEADLINE, async {
        while !matches!(node.inbound.recv().await, Some(Inbound::Peers(2))) {}
    });
    assert!(both.await.is_ok(), "the node connects to both");
    for _ in 0..2 {
        let sync = Outbound::Sync {
            peer: None,
            from: 1,
        };
        node.handle.outbound.send(sync).await.unwrap();
    }
    let asked = |e: &SwarmEvent<request_response::Event<Vec<u8>, Vec<u8>>>| {
        matches!(e, SwarmEvent::Behaviour(request_response::Event::Message {
            message: request_response::Message::Request { request, .. },
            ..
        }) if matches!(decode(request), Ok(Request::Sync { from: 1, .. })))
    };
    let (mut a_asked, mut b_asked) = (false, false);
    let each = tokio::time::timeout(DEADLINE, async {
        while !(a_asked && b_asked) {
            tokio::select! {
                e = a.select_next_some() => a_asked |= asked(&e),
                e = b.select_next_some() => b_asked |= asked(&e),
            }
        }
    });
    assert!(each.await.is_ok(), "asked: {a_asked}, {b_asked}");
}

/// Validator 0's node, connected to a member that takes requests but does
/// not speak the push protocol (as an older node), so it is sent requests.
async fn node_and_request_only_peer(
    genesis: &Genesis,
    keys: &[NodeKeys],
) -> (Node, Swarm<request_response::Behaviour<RawCodec>>) {
    let mut node = start_node(genesis, &keys[0], 1 << 20).await;
    let serving = RawCodec {
        serve: true,
        ..RawCodec::default()
    };
    let peer = connected_member_with(&keys[1], &node, serving).await;
    connected(&mut node).await;
    (node, peer)
}

/// Blocks answer only this node's sync requests: a peer that answers
/// anything else with blocks is struck, and the driver never sees them
/// (they would have it wait on its block writes for nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_that_answer_no_sync_request_are_struck() {
    let (genesis, keys) = network();
    let (mut node, mut peer) = node_and_request_only_peer(&genesis, &keys).await;
    broadcast(&node, vote_at(&genesis, &keys[0], 1)).await;
    let answered = tokio::time::timeout(DEADLINE, async {
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            }) = peer.select_next_some().await
            {
                let blocks = frame(&encode(&Response::Blocks(Vec::new())));
                return peer.behaviour_mut().send_response(channel, blocks);
            }
        }
    })
    .await;
    assert!(matches!(answered, Ok(Ok(()))), "the peer answers the vote");
    assert!(
        drive_until(&mut peer, || node.metrics.network_strikes.get() == 1).await,
        "the peer is struck"
    );
    while let Ok(inbound) = node.inbound.try_recv() {
        assert!(
            !matches!(inbound, Inbound::Blocks { .. }),
            "blocks reached the driver"
        );
    }
}

/// A peer that does not speak the push protocol (an older node) is sent
/// requests instead, starting with what waited for its stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_push_streams_is_sent_requests() {
    let (genesis, keys) = network();
    let (node, mut peer) = node_and_request_only_peer(&genesis, &keys).await;
    let votes: Vec<Message> = (1..=2).map(|h| vote_at(&genesis, &keys[0], h)).collect();
    for vote in &votes {
        node.handle
            .outbound
            .send(Outbound::Broadcast(vote.clone()))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    let received = until(&mut peer, |e| {
        if let SwarmEvent::Behaviour(request_response::Event::Message {
            message: request_response::Message::Request { request, .. },
            ..
        }) = e
            && let Ok(Request::Consensus(message)) = decode(request)
        {
            got.push(message);
        }
        got.len() == votes.len()
    })
    .await;
    assert!(received, "both votes arrive as requests: {got:?}");
    got.sort_by_key(|m| match m {
        Message::Vote(v) => v.data.height,
        _ => 0,
    });
    assert_eq!(got, votes);
}

/// Drives `peer`, keeping the channel of every request it takes (so none is
/// answered or refused), until `until` holds of how many it keeps.
async fn take_requests(
    peer: &mut Swarm<request_response::Behaviour<RawCodec>>,
    held: &mut Vec<request_response::ResponseChannel<Vec<u8>>>,
    until: impl Fn(usize) -> bool,
) -> bool {
    tokio::time::timeout(DEADLINE, async {
        while !until(held.len()) {
            tokio::select! {
                e = peer.select_next_some() => {
                    if let SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    }) = e
                    {
                        held.push(channel);
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A peer without push streams that takes our requests and answers none
/// holds at most [`STREAMS_PER_CONNECTION`] of them, as a push queue would
/// hold its frames: what comes past them is dropped and counted, and each
/// answer makes room for one more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_no_request_holds_at_most_a_connection_s_streams_of_them() {
    let (genesis, keys) = network();
    let (node, mut peer) = node_and_request_only_peer(&genesis, &keys).await;
    let past = 50;
    let broadcast = |height: u64| {
        let vote = vote_at(&genesis, &keys[0], height);
        node.handle.outbound.send(Outbound::Broadcast(vote))
    };
    for height in 1..=(STREAMS_PER_CONNECTION + past) as u64 {
        broadcast(height).await.unwrap();
    }
    let mut held = Vec::new();
    let dropped = || node.metrics.network_push_dropped.get();
    let full = |n: usize| n >= STREAMS_PER_CONNECTION && dropped() >= past as u64;
    assert!(
        take_requests(&mut peer, &mut held, full).await,
        "{} requests held, {} dropped",
        held.len(),
        dropped()
    );
    assert_eq!(held.len(), STREAMS_PER_CONNECTION);
    assert_eq!(dropped(), past as u64);

    // One answer, one more place: once the node has the answer (it may
    // drop what it sends before), its next message goes out.
    let ack = frame(&encode(&Response::Ack));
    let channel = held.pop().expect("a held request");
    peer.behaviour_mut().send_response(channel, ack).unwrap();
    let refilled = |n: usize| n == STREAMS_PER_CONNECTION;
    let mut tries = 0;
    while tries < 100 && !refilled(held.len()) {
        broadcast(10_000 + tries).await.unwrap();
        let wait = Duration::from_millis(100);
        let _ = tokio::time::timeout(wait, take_requests(&mut peer, &mut held, refilled)).await;
        tries += 1;
    }
    assert!(refilled(held.len()), "no request sent after the answer");
    assert_eq!(dropped(), past as u64 + tries - 1);
}

/// A validator's consensus messages hold at most its share of the driver's
/// queue: past it they are dropped and counted, and another validator's
/// message still gets a place, however long the driver is busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_fills_no_more_than_its_share_of_the_driver_s_queue() {
    let (genesis, keys) = network_of(4);
    let mut node = start_node(&genesis, &keys[0], 1 << 20).await;
    let share = DRIVER_QUEUE / 2 / 4;
    let over = 100;
    assert!(
        (share + over) as f64 <= RATE_BURST,
        "the flood stays within the rate limit"
    );
    let mut flooder = push_client(&keys[1], &node).await;
    let mut stream = open_push(&mut flooder, &node).await;
    let vote = frame(&encode(&Request::Consensus(vote_at(&genesis, &keys[1], 1))));
    stream.write_all(&vote.repeat(share + over)).await.unwrap();
    stream.flush().await.unwrap();
    let dropped = |node: &Node| node.metrics.network_consensus_dropped.get();
    let deadline = Instant::now() + DEADLINE;
    while dropped(&node) < over as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dropped(&node), over as u64, "what is past the share");

    // The driver has read nothing; another validator's vote gets a place.
    let mut other = push_client(&keys[2], &node).await;
    let mut stream = open_push(&mut other, &node).await;
    let theirs = vote_at(&genesis, &keys[2], 1);
    stream
        .write_all(&frame(&encode(&Request::Consensus(theirs.clone()))))
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let mut from_flooder = 0;
    let arrived = tokio::time::timeout(DEADLINE, async {
        loop {
            match node.inbound.recv().await {
                Some(Inbound::Consensus { message, .. }) if message == theirs => return,
                Some(Inbound::Consensus { .. }) => from_flooder += 1,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        arrived.is_ok(),
        "the other validator's vote reaches the driver"
    );
    assert_eq!(from_flooder, share, "the flooder's share, no more");
    assert_eq!(dropped(&node), over as u64);
}

/// A member that takes our push stream and stops reading holds no more of
/// ours than its byte allowance: past it frames are dropped, and a write it
/// does not take is given up with its stream, so that what waited goes out
/// on a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_holds_no_more_than_its_allowance() {
    let (genesis, keys) = network();
    // An allowance above a stream's window (256 KiB) plus a write (64 KiB),
    // so that frames still wait when the writer stalls, whenever the stream opens.
    let max_frame = 128 << 10;
    let allowance = FRAME_BUDGET_FRAMES * max_frame;
    let mut node = start_node(&genesis, &keys[0], max_frame).await;
    let mut peer = push_client(&keys[1], &node).await;
    let mut incoming = peer.accept(push::PROTOCOL).unwrap();
    connected(&mut node).await;

    // Far more than the stream's window and the allowance together.
    let vote = vote_at(&genesis, &keys[0], 1);
    let vote_bytes = frame(&encode(&Request::Consensus(vote.clone()))).len();
    let votes = 4 * (allowance + (256 << 10)) / vote_bytes;
    for _ in 0..votes {
        node.handle
            .outbound
            .send(Outbound::Broadcast(vote.clone()))
            .await
            .unwrap();
    }
    let (_, unread) = tokio::time::timeout(DEADLINE, incoming.next())
        .await
        .expect("the node opens a push stream")
        .unwrap();
    let (_, mut fresh) = tokio::time::timeout(push::WRITE_TIMEOUT + DEADLINE, incoming.next())
        .await
        .expect("the stalled stream is given up and another opened")
        .unwrap();
    assert!(node.metrics.network_push_dropped.get() > 0);

    // What waited for the peer comes on the fresh stream: at most its allowance.
    let mut received = Vec::new();
    let mut chunk = vec![0; 64 << 10];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(500), fresh.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
    }
    assert!(
        !received.is_empty() && received.len() <= allowance,
        "{} bytes waited, allowance {allowance}",
        received.len()
    );
    assert_eq!(received.len() % vote_bytes, 0, "whole frames");
    drop(unread);
}

/// What a peer sent before it was banned and had not been handled yet is
/// not handled after: a ban does not give it a fresh budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_peer_s_waiting_messages_are_not_handled() {
    let (genesis, keys) = network();
    let mut node = start_node(&genesis, &keys[0], 1 << 20).await;
    let mut control = push_client(&keys[1], &node).await;
    let mut stream = open_push(&mut control, &node).await;
    // Some votes, then what a push stream may not carry, each struck (the
    // last banning the peer), then votes that come after the ban.
    let vote_frame = |h| frame(&encode(&Request::Consensus(vote_at(&genesis, &keys[1], h))));
    let after_ban = 1_000;
    let mut bytes: Vec<u8> = (1..=10).flat_map(vote_frame).collect();
    for _ in 0..STRIKES {
        bytes.extend(frame(&encode(&Request::Sync { from: 0, max: 1 })));
    }
    bytes.extend((after_ban..after_ban + 50).flat_map(vote_frame));
    stream.write_all(&bytes).await.unwrap();
    stream.flush().await.unwrap();

    let mut handled = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while node.metrics.network_strikes.get() < u64::from(STRIKES) && Instant::now() < deadline {
        while let Ok(inbound) = node.inbound.try_recv() {
            handled.push(inbound);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        node.metrics.network_strikes.get() >= u64::from(STRIKES),
        "banned"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(inbound) = node.inbound.try_recv() {
        handled.push(inbound);
    }
    let heights: Vec<u64> = handled
        .iter()
        .filter_map(|inbound| match inbound {
            Inbound::Consensus {
                message: Message::Vote(vote),
                ..
            } => Some(vote.data.height),
            _ => None,
        })
        .collect();
    assert_eq!(
        heights,
        (1..=10).collect::<Vec<_>>(),
        "those before the ban are handled"
    );
    assert!(
        heights.iter().all(|&h| h < after_ban),
        "{} handled after the ban",
        heights.iter().filter(|&&h| h >= after_ban).count()
    );
}

/// The next request on a push stream the node opened to a test peer.
async fn next_pushed(stream: &mut libp2p::Stream) -> Request {
    let mut len = [0; 4];
    stream.read_exact(&mut len).await.unwrap();
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await.unwrap();
    decode(&body).unwrap()
}

/// What an observer's API admitted and is still waiting is sent to the
/// validators again: it never proposes it, and a validator that dropped the
/// first batch would never see it otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_sends_again_what_still_waits() {
    let (genesis, keys) = network_with(1, 1);
    let mut observer = start_node(&genesis, &keys[1], 1 << 20).await;
    // A validator's node that reads what it is sent and admits none of it.
    let mut validator = push_client(&keys[0], &observer).await;
    let mut incoming = validator.accept(push::PROTOCOL).unwrap();
    connected(&mut observer).await;
    let tx = remark(&genesis, 0);
    admit_here(&observer, &tx);

    let (_, mut stream) = tokio::time::timeout(DEADLINE, incoming.next())
        .await
        .expect("the observer opens a push stream")
        .unwrap();
    let mut times_sent = 0;
    let sent_twice = tokio::time::timeout(RESEND_AFTER + DEADLINE, async {
        while times_sent < 2 {
            if let Request::Transactions(TxBatch(txs)) = next_pushed(&mut stream).await {
                times_sent += txs.iter().filter(|t| t.0 == encode(&tx)).count();
            }
        }
    })
    .await;
    assert!(sent_twice.is_ok(), "sent {times_sent} times");
    assert_eq!(observer.metrics.network_resent.get(), 1);
}

/// A validator's two conflicting precommits at height 1.
fn equivocation(genesis: &Genesis, keys: &NodeKeys) -> DuplicateVote {
    let key = keys.consensus.clone().expect("a validator");
    let vote = |block| {
        VoteData {
            chain_id: genesis.chain_id.clone(),
            height: 1,
            round: 0,
            kind: VoteKind::Precommit,
            block,
        }
        .sign(&key)
    };
    DuplicateVote {
        first: vote(None),
        second: vote(Some(Hash([7; 32]))),
    }
}

/// Evidence goes both ways between member nodes: what an observer's node
/// passes on reaches the driver (observers find evidence in certificates
/// too), and what the driver sends reaches every peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_reaches_the_driver_from_any_member_and_every_peer_from_the_driver() {
    let (genesis, keys) = network_with(2, 1);
    let proof = equivocation(&genesis, &keys[1]);
    let mut node = start_node(&genesis, &keys[0], 1 << 20).await;
    let target = node.handle.local_peer_id;
    let mut observer = connected_member(&keys[2], &node).await;
    let request = frame(&encode(&Request::Evidence(Box::new(proof.clone()))));
    observer.behaviour_mut().send_request(&target, request);
    let (from, got) = tokio::time::timeout(DEADLINE, async {
        loop {
            tokio::select! {
                inbound = node.inbound.recv() => if let Some(Inbound::Evidence { from, proof, .. }) = inbound { return (from, proof) },
                _ = observer.select_next_some() => {}
            }
        }
    })
    .await
    .expect("the observer's evidence reaches the driver");
    assert_eq!((from, *got), (*observer.local_peer_id(), proof.clone()));

    let (node, mut peer) = node_and_request_only_peer(&genesis, &keys).await;
    node.handle
        .outbound
        .send(Outbound::Evidence(Box::new(proof.clone())))
        .await
        .unwrap();
    let mut sent = None;
    let received = until(&mut peer, |e| {
        if let SwarmEvent::Behaviour(request_response::Event::Message {
            message: request_response::Message::Request { request, .. },
            ..
        }) = e
            && let Ok(Request::Evidence(proof)) = decode(request)
        {
            sent = Some(*proof);
        }
        sent.is_some()
    })
    .await;
    assert!(received, "the driver's evidence reaches its peer");
    assert_eq!(sent, Some(proof));
}

/// A member's node of another release (another wire version) exchanges
/// nothing with this one: its requests are refused by protocol negotiation,
/// before a byte is read, and what this node sends it fails as another
/// version's and is counted; neither side is struck, and the node serves
/// its other peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_wire_version_exchanges_nothing_and_is_not_struck() {
    let (genesis, keys) = network_of(3);
    let node = start_node(&genesis, &keys[0], 1 << 20).await;
    let target = node.handle.local_peer_id;
    let previous = StreamProtocol::new("/trellis/1");
    let codec = RawCodec {
        serve: true,
        ..RawCodec::default()
    };
    let mut older = test_swarm(
        identity_from_seed(keys[1].node.seed()),
        request_response::Behaviour::with_codec(
            codec,
            [(previous, ProtocolSupport::Full)],
            request_response::Config::default(),
        ),
    );
    older.dial(node.addr.clone()).unwrap();
    assert!(
        until(&mut older, |e| matches!(
            e,
            SwarmEvent::ConnectionEstablished { .. }
        ))
        .await
    );
    let request = frame(&encode(&Request::Sync { from: 0, max: 1 }));
    older.behaviour_mut().send_request(&target, request);
    assert!(
        until(&mut older, |e| matches!(
            e,
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                error: request_response::OutboundFailure::UnsupportedProtocols,
                ..
            })
        ))
        .await,
        "the older node's request is refused for its protocol"
    );

    broadcast(&node, vote_at(&genesis, &keys[0], 1)).await;
    let mut received = false;
    let counted = tokio::time::timeout(DEADLINE, async {
        while node.metrics.network_other_version.get() == 0 {
            tokio::select! {
                event = older.select_next_some() => {
                    received |= matches!(
                        event,
                        SwarmEvent::Behaviour(request_response::Event::Message { .. })
                    );
                }
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    })
    .await;
    assert!(
        counted.is_ok(),
        "the node's message to it fails as another version's"
    );
    assert!(!received, "the older node received nothing");
    assert_eq!(node.metrics.network_strikes.get(), 0);

    // The node goes on with a peer of its own version.
    let mut peer = connected_member(&keys[2], &node).await;
    peer.behaviour_mut()
        .send_request(&target, frame(&encode(&Request::Sync { from: 0, max: 1 })));
    assert!(
        until(&mut peer, |e| matches!(
            response(e),
            Some(Response::Blocks(_))
        ))
        .await,
        "a peer of this version is answered"
    );
}

/// Every kind of message that crosses the wire, encoded as it is sent,
/// pinned beside the wire version the protocol names carry: a change to any
/// of them (a field, a variant, a type they carry) changes the digest, and
/// must raise the version in [`PROTOCOL`] and [`push::PROTOCOL`] (see their
/// comment) before the digest here is updated. Without it, nodes of two
/// releases would take each other's streams and strike each other's bytes.
#[test]
fn the_wire_version_pins_the_encoding_of_every_message() {
    use crate::consensus::Proposal;
    use trellis_types::{Header, KeyPair, Payload, Signature, SystemOp, Transaction, Vote};
    let key = KeyPair::insecure_from_label("wire");
    let tx = Transaction {
        chain_id: "wire".into(),
        sender: key.public(),
        nonce: 7,
        expires_at_ms: 1_000,
        payload: Payload::System(SystemOp::Remark {
            data: vec![1, 2, 3].into(),
        }),
    }
    .sign(&key);
    // Governance's operations replaced `upgrade_contract` in `SystemOp` (wire version 3).
    let approval = Transaction {
        nonce: 8,
        payload: Payload::System(SystemOp::Approve {
            proposal: Hash([9; 32]),
        }),
        ..tx.tx.clone()
    }
    .sign(&key);
    let parent_commit = QuorumCertificate::genesis(Hash([1; 32]));
    let block = Block {
        header: Header {
            chain_id: "wire".into(),
            height: 2,
            round: 1,
            parent: Hash([2; 32]),
            tx_root: trellis_types::block::tx_root(std::slice::from_ref(&tx)),
            parent_commit_hash: parent_commit.hash(),
            receipts_root: Hash([3; 32]),
            state_root: Hash([4; 32]),
            timestamp_ms: 5,
            proposer: key.public(),
        },
        parent_commit,
        txs: vec![tx.clone()],
    };
    let vote = |block| {
        let data = VoteData {
            chain_id: "wire".into(),
            height: 2,
            round: 1,
            kind: VoteKind::Precommit,
            block,
        };
        Vote {
            signature: key.sign(&data.signing_hash()),
            voter: key.public(),
            data,
        }
    };
    let proposal = Proposal {
        block: Arc::new(block.clone()),
        round: 1,
        pol_round: Some(0),
        pol_votes: vec![(key.public(), Signature([6; 64]))],
        signature: Signature([8; 64]),
    };
    let certificate = QuorumCertificate {
        height: 2,
        round: 1,
        block: block.hash(),
        votes: vec![(key.public(), Signature([7; 64]))],
    };
    let requests = [
        Request::Consensus(Message::Proposal(Box::new(proposal))),
        Request::Consensus(Message::Vote(vote(Some(block.hash())))),
        Request::Transactions(TxBatch(vec![Bytes(encode(&tx)), Bytes(encode(&approval))])),
        Request::Sync { from: 2, max: 64 },
        Request::Evidence(Box::new(DuplicateVote {
            first: vote(None),
            second: vote(Some(block.hash())),
        })),
    ];
    let responses = [
        Response::Ack,
        Response::Blocks(vec![(block, certificate)]),
        Response::Refused("busy".into()),
    ];
    let mut wire = blake3::Hasher::new();
    for request in &requests {
        wire.update(&encode(request));
    }
    for response in &responses {
        wire.update(&encode(response));
    }
    assert_eq!(
        (
            PROTOCOL.as_ref(),
            push::PROTOCOL.as_ref(),
            wire.finalize().to_hex().to_string()
        ),
        (
            "/trellis/3",
            "/trellis/push/3",
            "c75f574f00068dba086fa6e729043ce3a7acd3fb059a0c1bbc55715ca4f716f7".to_string()
        )
    );
}
