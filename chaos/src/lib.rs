//! drchain-chaos: failover under real faults, judged from outside.
//!
//! Each node runs in its own Linux network namespace; a seeded schedule ([`schedule`]) of
//! partitions, packet loss, crashes, pauses, clock steps and full disks is applied to a real
//! cluster ([`cluster`], [`netns`]) while clients write through HAProxy and `drchain proxy`
//! ([`workload`]); the [`checker`] judges the run from the clients' history alone. Needs root
//! (namespaces, nftables, tmpfs); `scripts/chaos.sh` is the way in.

#![forbid(unsafe_code)]

pub mod checker;
pub mod cluster;
pub mod netns;
pub mod report;
pub mod run;
pub mod schedule;
pub mod service;
pub mod stop;
pub mod workload;
