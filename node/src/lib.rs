//! drchain-node: everything that does I/O — CLI, storage, network, the consensus host.
//!
//! The binary `drchain` is a thin `main` over [`command::run`]. The consensus driver
//! ([`consensus::driver`]) is sans-I/O so the deterministic simulation in `drchain-tests`
//! runs the same code as a real node.

#![forbid(unsafe_code)]

pub mod bench;
pub mod bench_disk;
pub mod bench_join;
pub mod chain_io;
pub mod chain_spec;
pub mod checkpoint_push;
pub mod cli;
pub mod client;
pub mod command;
pub mod discovery;
pub mod disk;
pub mod informant;
pub mod keys;
pub mod metrics;
pub mod network;
pub mod node_loop;
pub mod operator;
pub mod proxy;
pub mod replication;
pub mod restore;
pub mod rocks;
pub mod run;
pub mod status;
pub mod words;
