//! The JSON-RPC server of real nodes: four validators of the local chain in one process, an
//! `unsafe` server on alice's node and a `safe` one on bob's, queried with jsonrpsee's HTTP and
//! WebSocket clients. Every method answers; bad params get errors that say what is wrong;
//! subscriptions deliver over a real WebSocket; `safe` refuses unsafe methods; oversized
//! requests and surplus connections are refused while the server keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use drchain_replication::transfer::{TransferRequest, TransferResponse};
use drchain_rpc::RpcMethods;
use drchain_runtime::dev::dev_key;
use drchain_runtime::pallet_service_status;
use drchain_runtime::support::{AccountId, Health, ServiceName, H256};
use drchain_runtime::{RuntimeCall, UncheckedExtrinsic};
use drchain_tests::net::TestNetwork;
use jsonrpsee::core::client::{ClientT, Subscription, SubscriptionClientT};
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use parity_scale_codec::{Decode, Encode};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

fn heartbeat(genesis: &H256, who: &str, service: &str, nonce: u64) -> UncheckedExtrinsic {
    let call = RuntimeCall::ServiceStatus(pallet_service_status::Call::Heartbeat {
        service: ServiceName::new(service).unwrap(),
        epoch_seen: 0,
        health: Health::Healthy,
        applied_checkpoint: None,
    });
    UncheckedExtrinsic::sign(&dev_key(who), genesis, nonce, call)
}

fn account(who: &str) -> AccountId {
    AccountId::from(&dev_key(who))
}

async fn call(client: &HttpClient, method: &str, params: ArrayParams) -> Value {
    client
        .request(method, params)
        .await
        .unwrap_or_else(|e| panic!("{method} failed: {e}"))
}

/// `POST /replication/transfer` with `body`: the status code and the response body.
fn raw_transfer(addr: std::net::SocketAddr, body: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /replication/transfer HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = vec![];
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = response[split + 4..].to_vec();
    if head.to_lowercase().contains("transfer-encoding: chunked") {
        body = unchunk(&body);
    }
    (status, body)
}

/// `GET path` on the RPC port: the status and the whole response, headers lowercased.
fn get_page(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, format!("{}\r\n\r\n{body}", head.to_lowercase()))
}

/// Decodes an HTTP/1.1 chunked body.
fn unchunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[line_end + 2..line_end + 2 + size]);
        body = &body[line_end + 2 + size + 2..];
    }
}

/// The error a call returns; panics if it succeeds.
async fn error(client: &HttpClient, method: &str, params: ArrayParams) -> (i32, String) {
    match client.request::<Value, _>(method, params).await {
        Err(ClientError::Call(e)) => (e.code(), e.message().to_owned()),
        other => panic!("{method} should fail with a call error, got {other:?}"),
    }
}

/// Waits until `f` (a read over RPC) returns `Some`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_answers_over_http_and_websocket() {
    let net = TestNetwork::local_validators().await;
    net.wait_for_height(&[0, 1, 2, 3], 1, WAIT).await;
    let genesis = net.genesis.hash();
    let (addr, _server) = net.serve_rpc(0, RpcMethods::Unsafe, 100).await;
    let http = HttpClientBuilder::default()
        .build(format!("http://{addr}"))
        .unwrap();
    let ws = WsClientBuilder::default()
        .build(format!("ws://{addr}"))
        .await
        .unwrap();

    // system_*
    assert_eq!(
        call(&http, "system_name", rpc_params![]).await,
        json!("alice")
    );
    assert_eq!(
        call(&http, "system_version", rpc_params![]).await,
        json!("test")
    );
    assert_eq!(
        call(&http, "system_chain", rpc_params![]).await,
        json!("Local Testnet")
    );
    let peer_id = net.nodes[0].handle.as_ref().unwrap().peer_id.to_string();
    assert_eq!(
        call(&http, "system_localPeerId", rpc_params![]).await,
        json!(peer_id)
    );
    let health = eventually("three peers", || async {
        let h = call(&http, "system_health", rpc_params![]).await;
        (h["peers"] == json!(3)).then_some(h)
    })
    .await;
    assert_eq!(health["shouldHavePeers"], json!(true));
    let peers = call(&http, "system_peers", rpc_params![]).await;
    let accounts: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["account"].as_str().unwrap())
        .collect();
    for who in ["bob", "charlie", "dave"] {
        assert!(
            accounts.contains(&account(who).to_string().as_str()),
            "{who} in system_peers"
        );
    }
    let methods = call(&http, "rpc_methods", rpc_params![]).await;
    assert!(methods["methods"]
        .as_array()
        .unwrap()
        .contains(&json!("failover_subscribeEvents")));

    assert_eq!(
        call(&http, "system_genesisHash", rpc_params![]).await,
        json!(genesis.to_string())
    );

    // chain_*
    let genesis_hash = call(&http, "chain_getBlockHash", rpc_params![0]).await;
    assert_eq!(genesis_hash, json!(genesis.to_string()));
    assert_eq!(
        call(&http, "chain_getBlockHash", rpc_params!["0x0"]).await,
        json!(genesis.to_string())
    );
    assert_eq!(
        call(&http, "chain_getBlockHash", rpc_params![1_000_000]).await,
        Value::Null
    );
    let head = call(&http, "chain_getFinalizedHead", rpc_params![]).await;
    let header = call(&http, "chain_getHeader", rpc_params![head.clone()]).await;
    assert_eq!(header["hash"], head);
    assert!(header["number"].as_str().unwrap().starts_with("0x"));
    let latest = call(&http, "chain_getHeader", rpc_params![]).await;
    assert!(latest["timestamp"].as_u64().unwrap() >= header["timestamp"].as_u64().unwrap());
    let block1 = call(&http, "chain_getBlockHash", rpc_params![1]).await;
    let signed = call(&http, "chain_getBlock", rpc_params![block1.clone()]).await;
    assert_eq!(signed["block"]["header"]["number"], json!("0x1"));
    assert_eq!(signed["justifications"][0][0], json!("DRBF"));
    let unknown = H256([7; 32]).to_string();
    assert_eq!(
        call(&http, "chain_getBlock", rpc_params![unknown.clone()]).await,
        Value::Null
    );
    assert_eq!(
        call(&http, "chain_getHeader", rpc_params![unknown]).await,
        Value::Null
    );
    let events = call(&http, "chain_getEvents", rpc_params![block1]).await;
    assert_eq!(events["number"], json!(1));

    // Subscriptions over the WebSocket: heads arrive in order.
    let mut heads: Subscription<Value> = ws
        .subscribe(
            "chain_subscribeNewHeads",
            rpc_params![],
            "chain_unsubscribeNewHeads",
        )
        .await
        .unwrap();
    let mut finalized: Subscription<Value> = ws
        .subscribe(
            "chain_subscribeFinalizedHeads",
            rpc_params![],
            "chain_unsubscribeFinalizedHeads",
        )
        .await
        .unwrap();
    let mut failover_events: Subscription<Value> = ws
        .subscribe(
            "failover_subscribeEvents",
            rpc_params!["demo-db"],
            "failover_unsubscribeEvents",
        )
        .await
        .unwrap();
    let number = |h: &Value| {
        u64::from_str_radix(h["number"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    let a = tokio::time::timeout(WAIT, heads.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let b = tokio::time::timeout(WAIT, heads.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(number(&b), number(&a) + 1);
    let f = tokio::time::timeout(WAIT, finalized.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(number(&f) >= number(&a));

    // author_*: a heartbeat of alice for demo-db, watched to finalization.
    let next: u64 = ws
        .request("system_accountNextIndex", rpc_params![account("alice")])
        .await
        .unwrap();
    assert_eq!(next, 0);
    let x = heartbeat(&genesis, "alice", "demo-db", 0);
    let mut updates: Subscription<Value> = ws
        .subscribe(
            "author_submitAndWatchExtrinsic",
            rpc_params![hex0x(&x.encode())],
            "author_unwatchExtrinsic",
        )
        .await
        .unwrap();
    let mut statuses = vec![];
    while let Ok(Some(update)) = tokio::time::timeout(WAIT, updates.next()).await {
        let update = update.unwrap();
        let done = update.get("finalized").is_some();
        statuses.push(update);
        if done {
            break;
        }
    }
    assert_eq!(statuses[0], json!("ready"));
    let included = statuses.last().unwrap()["finalized"].clone();
    assert!(
        statuses.iter().any(|s| s.get("inBlock") == Some(&included)),
        "{statuses:?}"
    );
    let events = call(&http, "chain_getEvents", rpc_params![included.clone()]).await;
    assert!(
        events.to_string().contains("extrinsic_success"),
        "the heartbeat succeeded: {events}"
    );
    // state_getStorage reads alice's nonce (SCALE u64 = 1).
    let nonce_key = drchain_runtime::system::Nonces::key(&account("alice"));
    assert_eq!(
        call(&http, "state_getStorage", rpc_params![hex0x(&nonce_key)]).await,
        json!(hex0x(&1u64.encode()))
    );
    assert_eq!(
        call(&http, "state_getStorage", rpc_params!["0x00"]).await,
        Value::Null
    );
    // state_getReadProof: each value (or absence) with a proof against the head's state root.
    let answer = call(
        &http,
        "state_getReadProof",
        rpc_params![vec![hex0x(&nonce_key), "0x00".to_owned()]],
    )
    .await;
    let header = call(&http, "chain_getHeader", rpc_params![answer["at"].clone()]).await;
    let root: H256 = serde_json::from_value(header["stateRoot"].clone()).unwrap();
    let unhex = |v: &Value| hex::decode(v.as_str().unwrap().trim_start_matches("0x")).unwrap();
    for (entry, expected) in answer["proofs"]
        .as_array()
        .unwrap()
        .iter()
        .zip([Some(1u64.encode()), None])
    {
        let key = unhex(&entry["key"]);
        let value = (!entry["value"].is_null()).then(|| unhex(&entry["value"]));
        assert_eq!(value, expected);
        let proof = drchain_runtime::support::trie_proof::StorageProof::decode(
            &mut &unhex(&entry["proof"])[..],
        )
        .unwrap();
        assert!(drchain_runtime::support::trie_proof::verify_storage_proof(
            &root,
            &key,
            value.as_deref(),
            &proof
        ));
        assert!(!drchain_runtime::support::trie_proof::verify_storage_proof(
            &root,
            &key,
            Some(b"a lie"),
            &proof
        ));
    }
    // The state before the heartbeat's block: alice had no nonce yet, provably.
    let included_header = call(&http, "chain_getHeader", rpc_params![included.clone()]).await;
    let parent = included_header["parentHash"].clone();
    assert_eq!(
        call(
            &http,
            "state_getStorage",
            rpc_params![hex0x(&nonce_key), parent.clone()]
        )
        .await,
        Value::Null
    );
    let past = call(
        &http,
        "state_getReadProof",
        rpc_params![vec![hex0x(&nonce_key)], parent.clone()],
    )
    .await;
    assert_eq!(past["at"], parent);
    assert!(past["proofs"][0]["value"].is_null());
    let parent_header = call(&http, "chain_getHeader", rpc_params![parent]).await;
    let parent_root: H256 = serde_json::from_value(parent_header["stateRoot"].clone()).unwrap();
    let proof = drchain_runtime::support::trie_proof::StorageProof::decode(
        &mut &unhex(&past["proofs"][0]["proof"])[..],
    )
    .unwrap();
    assert!(drchain_runtime::support::trie_proof::verify_storage_proof(
        &parent_root,
        &nonce_key,
        None,
        &proof
    ));
    // author_submitExtrinsic returns the hash; the pool holds it until a block takes it.
    let x = heartbeat(&genesis, "bob", "demo-db", 0);
    let hash = call(
        &http,
        "author_submitExtrinsic",
        rpc_params![hex0x(&x.encode())],
    )
    .await;
    assert_eq!(hash, json!(x.hash().to_string()));
    let pending = call(&http, "author_pendingExtrinsics", rpc_params![]).await;
    assert!(pending.is_array());
    let (code, message) = error(
        &http,
        "author_submitExtrinsic",
        rpc_params![hex0x(&x.encode())],
    )
    .await;
    assert!(
        code == 1010 && (message.contains("already") || message.contains("nonce")),
        "a resubmission is refused: {code} {message}"
    );
    assert_eq!(
        call(
            &http,
            "author_removeExtrinsic",
            rpc_params![vec![H256([9; 32])]]
        )
        .await,
        json!([])
    );

    // failover_*: alice's heartbeat made her eligible, so demo-db elected her.
    let elected = eventually("an election of demo-db", || async {
        let s = call(&http, "failover_service", rpc_params!["demo-db"]).await;
        (s["epoch"].as_u64().unwrap() >= 1).then_some(s)
    })
    .await;
    assert_eq!(elected["name"], json!("demo-db"));
    assert_eq!(
        elected["nodes"][0]["node"],
        json!(account("alice").to_string())
    );
    assert_eq!(elected["nodes"][0]["heartbeat"]["health"], json!("healthy"));
    let services = call(&http, "failover_services", rpc_params![]).await;
    assert_eq!(services.as_array().unwrap().len(), 2);
    let history = call(&http, "failover_history", rpc_params!["demo-db"]).await;
    assert!(
        history["events"].to_string().contains("elected"),
        "history records the election: {history}"
    );
    let limited = call(
        &http,
        "failover_history",
        rpc_params!["demo-db", json!({"from": 0, "limit": 1})],
    )
    .await;
    assert_eq!(limited["events"].as_array().unwrap().len(), 1);
    let timeline = call(&http, "failover_timeline", rpc_params!["demo-db"]).await;
    let first = &timeline["transitions"][0];
    assert_eq!(first["kind"], json!("elected"), "{timeline}");
    assert_eq!(first["to"], json!(account("alice").to_string()));
    assert_eq!(first["reason"], json!("vacancy"));
    let event = tokio::time::timeout(WAIT, failover_events.next())
        .await
        .expect("a failover event arrives")
        .unwrap()
        .unwrap();
    let about = event["event"]
        .as_object()
        .and_then(|o| o.values().next())
        .map(|fields| fields["service"].clone());
    assert_eq!(about, Some(json!("demo-db")), "{event}");

    // status_*
    let heartbeats = call(&http, "status_heartbeats", rpc_params!["demo-db"]).await;
    assert_eq!(heartbeats[0]["heartbeat"]["health"], json!("healthy"));
    let node = call(&http, "status_node", rpc_params![account("alice")]).await;
    assert_eq!(node[0]["service"], json!("demo-db"));

    // config_*
    let params = call(&http, "config_params", rpc_params![]).await;
    assert!(params["max_block_interval_ms"].as_u64().is_some());
    assert!(call(&http, "config_bootnodes", rpc_params![])
        .await
        .is_array());
    let endpoints = call(&http, "config_endpoints", rpc_params!["demo-db"]).await;
    assert_eq!(endpoints[0]["endpoint"], json!("127.0.0.1:15432"));

    // checkpoints_* (none recorded yet)
    assert_eq!(
        call(&http, "checkpoints_latest", rpc_params!["demo-db"]).await,
        Value::Null
    );
    assert_eq!(
        call(&http, "checkpoints_list", rpc_params!["demo-db"]).await,
        json!([])
    );
    assert_eq!(
        call(&http, "checkpoints_acks", rpc_params!["demo-db"]).await,
        json!([])
    );

    // replication_* (unsafe; allowed here): a checkpoint nobody holds is answered as absent
    // by the transfer and is unavailable to a fetch, and a malformed request is refused.
    let root = H256([3; 32]);
    let request = format!(
        "0x{}",
        hex::encode(TransferRequest::Manifest { root }.encode())
    );
    let answer = call(&http, "replication_transfer", rpc_params![request]).await;
    let bytes = hex::decode(answer.as_str().unwrap().trim_start_matches("0x")).unwrap();
    assert_eq!(
        TransferResponse::decode_bounded(&bytes).unwrap(),
        TransferResponse::Manifest { bytes: None }
    );
    let (code, message) = error(&http, "replication_fetch", rpc_params![root, 200]).await;
    assert_eq!(code, -32005, "{message}");
    assert!(message.contains("unavailable"), "{message}");
    let (code, message) = error(&http, "replication_transfer", rpc_params!["0x07"]).await;
    assert_eq!(code, -32602, "{message}");
    assert!(message.contains("transfer request"), "{message}");
    // The same transfer raw, as `drchain restore` reads it: SCALE in, SCALE out.
    let request = TransferRequest::Manifest { root }.encode();
    let (status, body) = tokio::task::spawn_blocking(move || raw_transfer(addr, &request))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        TransferResponse::decode_bounded(&body).unwrap(),
        TransferResponse::Manifest { bytes: None }
    );
    let (status, body) = tokio::task::spawn_blocking(move || raw_transfer(addr, &[7]))
        .await
        .unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("transfer request"));

    // membership_*
    let members = call(&http, "membership_members", rpc_params![]).await;
    assert_eq!(members.as_array().unwrap().len(), 5);
    let alice = call(&http, "membership_member", rpc_params![account("alice")]).await;
    assert_eq!(alice["validator"], json!(true));
    assert_eq!(alice["admitted"], json!(true));
    let validators = call(&http, "membership_validators", rpc_params![]).await;
    assert_eq!(validators["current"].as_array().unwrap().len(), 4);
    let activity = call(&http, "membership_validatorActivity", rpc_params![]).await;
    let activity = activity.as_array().unwrap();
    assert_eq!(activity.len(), 4);
    // Three precommits decide a height: at least three validators signed recently.
    let online = activity
        .iter()
        .filter(|v| v["online"] == json!(true))
        .count();
    assert!(online >= 3, "{activity:?}");
    assert!(activity.iter().any(|v| v["name"] == json!("alice")));
    // The dashboard is a plain GET on the same port, beside the WebSocket on `/`.
    let (status, page) = tokio::task::spawn_blocking(move || get_page(addr, "/"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains("content-security-policy: default-src 'none'"),
        "{page}"
    );
    assert!(page.contains("<script src=\"/dashboard.js\""), "{page}");
    let (status, script) = tokio::task::spawn_blocking(move || get_page(addr, "/dashboard.js"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(script.contains("failover_subscribeEvents"));
    let admins = call(&http, "membership_admins", rpc_params![]).await;
    assert!(admins["threshold"].as_u64().unwrap() >= 1);
    let anchors = call(&http, "membership_trustAnchors", rpc_params![]).await;
    assert!(!anchors.as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_safe_mode_and_limits_are_refused_cleanly() {
    let net = TestNetwork::local_validators().await;
    net.wait_for_height(&[0, 1, 2, 3], 1, WAIT).await;
    let (addr, _server) = net.serve_rpc(1, RpcMethods::Safe, 3).await;
    let url = format!("http://{addr}");
    let http = HttpClientBuilder::default().build(&url).unwrap();

    // Bad params for every method that takes some: invalid params (-32602) naming the problem.
    let not_hex = "0xzz";
    let cases: Vec<(&str, ArrayParams, &str)> = vec![
        ("chain_getHeader", rpc_params![not_hex], "hex"),
        ("chain_getBlock", rpc_params![42], "string"),
        ("chain_getBlockHash", rpc_params!["twelve"], "number"),
        ("chain_getBlockHash", rpc_params![-1], "non-negative"),
        ("chain_getEvents", rpc_params![not_hex], "hex"),
        ("state_getStorage", rpc_params![], "invalid"),
        ("state_getStorage", rpc_params!["nothex"], "hex"),
        (
            "state_getStorage",
            rpc_params!["0x00", H256([1; 32])],
            "pruned, or not finalized",
        ),
        ("state_getReadProof", rpc_params![vec!["nothex"]], "hex"),
        (
            "state_getReadProof",
            rpc_params![vec!["0x00"; 65]],
            "at most 64",
        ),
        (
            "state_getReadProof",
            rpc_params![vec!["0x00"], H256([1; 32])],
            "pruned, or not finalized",
        ),
        ("author_submitExtrinsic", rpc_params!["0x00"], "decode"),
        ("author_submitExtrinsic", rpc_params!["0xq"], "hex"),
        ("author_submitExtrinsic", rpc_params![], "invalid"),
        ("system_accountNextIndex", rpc_params!["0x1234"], "bytes"),
        ("failover_service", rpc_params!["Bad Name"], "found"),
        ("failover_service", rpc_params![], "invalid"),
        (
            "failover_history",
            rpc_params!["demo-db", json!({"limit": 0})],
            "limit",
        ),
        (
            "failover_history",
            rpc_params!["demo-db", json!({"lim": 1})],
            "unknown field",
        ),
        ("status_heartbeats", rpc_params![7], "string"),
        ("status_node", rpc_params!["alice"], "hex"),
        ("config_endpoints", rpc_params![""], "bytes"),
        ("checkpoints_latest", rpc_params![["x"]], "string"),
        ("checkpoints_list", rpc_params![], "invalid"),
        ("checkpoints_acks", rpc_params!["UPPER"], "found"),
        ("membership_member", rpc_params!["0x00"], "bytes"),
        ("replication_fetch", rpc_params!["0x12"], "bytes"),
    ];
    for (method, params, needle) in cases {
        let (code, message) = error(&http, method, params).await;
        assert_eq!(code, -32602, "{method}: {message}");
        assert!(
            message.to_lowercase().contains(needle),
            "{method}: the message says what is wrong ({needle}): {message}"
        );
    }
    // Methods without params refuse some.
    for method in [
        "system_name",
        "system_version",
        "system_chain",
        "system_localPeerId",
        "system_genesisHash",
        "system_health",
        "system_peers",
        "rpc_methods",
        "chain_getFinalizedHead",
        "author_pendingExtrinsics",
        "failover_services",
        "config_params",
        "config_bootnodes",
        "membership_members",
        "membership_validators",
        "membership_validatorActivity",
        "membership_admins",
        "membership_trustAnchors",
    ] {
        let (code, message) = error(&http, method, rpc_params![1]).await;
        assert_eq!(code, -32602, "{method}: {message}");
        assert!(message.contains("takes no params"), "{method}: {message}");
    }
    // Unknown names are not-found errors, not empty answers.
    for (method, params) in [
        ("failover_service", rpc_params!["nope"]),
        ("status_heartbeats", rpc_params!["nope"]),
        ("config_endpoints", rpc_params!["nope"]),
        ("membership_member", rpc_params![H256([3; 32])]),
    ] {
        let (code, message) = error(&http, method, params).await;
        assert_eq!(code, -32004, "{method}: {message}");
        assert!(message.contains("not found"), "{method}: {message}");
    }
    // A transaction the runtime refuses: eve's heartbeat for a service she is no candidate of
    // is valid to pool; a forged signature is not.
    let mut forged = heartbeat(&net.genesis.hash(), "alice", "demo-db", 0);
    forged.nonce = 5;
    let (code, message) = error(
        &http,
        "author_submitExtrinsic",
        rpc_params![hex0x(&forged.encode())],
    )
    .await;
    assert_eq!(code, 1010, "{message}");
    assert!(message.contains("signature"), "{message}");
    // Safe mode refuses the raw transfer too.
    let (status, body) = tokio::task::spawn_blocking(move || raw_transfer(addr, &[0; 33]))
        .await
        .unwrap();
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("unsafe"));
    // Safe mode refuses unsafe methods with a message that says so.
    for (method, params) in [
        ("system_peers", rpc_params![]),
        ("author_removeExtrinsic", rpc_params![vec![H256([1; 32])]]),
        ("replication_fetch", rpc_params![H256([1; 32])]),
        ("replication_transfer", rpc_params!["0x00"]),
    ] {
        let (code, message) = error(&http, method, params).await;
        assert_eq!(code, -32601, "{method}");
        assert!(message.contains("unsafe"), "{method}: {message}");
    }

    // An oversized request is refused; the server keeps serving.
    let huge = "0x".to_owned() + &"00".repeat(2 * 1024 * 1024);
    let refused = http
        .request::<Value, _>("author_submitExtrinsic", rpc_params![huge])
        .await;
    assert!(refused.is_err(), "an oversized request is refused");
    let raw = reqwest_like_post(
        &url,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"system_name\"",
    )
    .await;
    assert!(
        raw.contains("Parse error") || raw.contains("-32700"),
        "malformed JSON: {raw}"
    );
    assert_eq!(
        call(&http, "system_name", rpc_params![]).await,
        json!("bob")
    );

    // More connections than allowed are refused; closing one makes room again.
    let ws_url = format!("ws://{addr}");
    let mut open: Vec<WsClient> = vec![];
    let mut refused = 0;
    for _ in 0..5 {
        match WsClientBuilder::default().build(&ws_url).await {
            Ok(c) => {
                // The connection is admitted only once it is used.
                if c.request::<Value, _>("system_name", rpc_params![])
                    .await
                    .is_ok()
                {
                    open.push(c);
                } else {
                    refused += 1;
                }
            }
            Err(_) => refused += 1,
        }
    }
    assert!(open.len() <= 3, "at most 3 connections: {}", open.len());
    assert!(refused >= 2, "surplus connections are refused");
    drop(open);
    let again = eventually("a free connection slot", || async {
        let c = WsClientBuilder::default().build(&ws_url).await.ok()?;
        c.request::<Value, _>("system_name", rpc_params![])
            .await
            .ok()
    })
    .await;
    assert_eq!(again, json!("bob"));
}

/// Posts a raw body (for malformed JSON a typed client cannot send).
async fn reqwest_like_post(url: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}
