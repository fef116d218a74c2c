//! The agent's TOML config (`--agent-config`): parsed and validated.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = drchain_agent::config::AgentConfig::parse(text);
    }
});
