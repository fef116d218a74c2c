//! JSON-RPC calls of every method with fuzzed params, through the real module (its param
//! parsing, checks and handlers) over a node with the local chain's genesis. The first byte
//! picks the method; the rest is the params' JSON text.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;

struct Rpc {
    runtime: tokio::runtime::Runtime,
    module: jsonrpsee::RpcModule<()>,
    methods: Vec<String>,
}

fn rpc() -> &'static Rpc {
    static RPC: OnceLock<Rpc> = OnceLock::new();
    RPC.get_or_init(|| {
        let node = Arc::new(drchain_fuzz::FuzzNode::new());
        let info = drchain_rpc::NodeInfo {
            name: "fuzz".into(),
            chain: "local".into(),
            version: "fuzz".into(),
            peer_id: String::new(),
            genesis: drchain_fuzz::genesis().hash(),
        };
        let module = drchain_rpc::module(node, info, false);
        let mut methods: Vec<String> = module.method_names().map(str::to_owned).collect();
        methods.sort_unstable();
        Rpc {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            module,
            methods,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, params)) = data.split_first() else {
        return;
    };
    let Ok(params) = std::str::from_utf8(params) else {
        return;
    };
    let rpc = rpc();
    let method = &rpc.methods[pick as usize % rpc.methods.len()];
    let request = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#);
    let _ = rpc
        .runtime
        .block_on(rpc.module.raw_json_request(&request, 1));
});
