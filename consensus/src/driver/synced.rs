//! Inputs that bring finalized data from outside consensus: a block fetched by block sync, and
//! a state fetched by state sync.

use std::collections::BTreeSet;

use drchain_runtime::{check_body, execute_block, Block, ExecutedBlock};
use malachitebft_core_types::{SigningProviderExt, ThresholdParams};

use super::height::HeightState;
use super::{ConsensusDriver, DriverError, Outputs, Phase};
use super::{Output, SyncRejected};
use crate::codec::{self, WireCertificate};
use crate::state_sync::Finished;
use crate::store::kv::KeyValueDb;

impl<D: KeyValueDb> ConsensusDriver<D> {
    /// A finalized block with its certificate, fetched from a peer. Blocks for other heights
    /// are ignored; a bad certificate or a body its header does not commit to is refused
    /// (`Ok(Err(..))`) so the host can penalize the peer and ask another. Only a block that
    /// passes both and still does not execute is [`DriverError::Diverged`].
    pub fn on_synced_block(
        &mut self,
        now_ms: u64,
        block: Block,
        certificate: WireCertificate,
    ) -> Result<Result<Vec<Output>, SyncRejected>, DriverError> {
        self.now_ms = now_ms;
        let number = block.header.number;
        if number != self.host.height {
            return Ok(Ok(vec![]));
        }
        // Only a body the certificate covers can show divergence when it fails to execute.
        let refused = match self.check_certificate(&block, &certificate) {
            Err(reason) => Some(SyncRejected::BadCertificate { number, reason }),
            Ok(()) => check_body(&block).err().map(|e| SyncRejected::BadBody {
                number,
                reason: e.to_string(),
            }),
        };
        if let Some(refused) = refused {
            // The next sign that peers are ahead asks again at once (the host asks another).
            self.last_sync_request = None;
            return Ok(Err(refused));
        }
        let executed = self.execute_finalized(&block)?;
        self.import(block, executed, certificate, true)?;
        self.after_input()?;
        Ok(Ok(self.finish()?))
    }

    /// The state of a block checked by state sync ([`crate::state_sync`]) becomes the
    /// finalized head; consensus then starts at the height after it: call [`Self::start`]
    /// next. The caller checked the target; the store checks the state against its root.
    pub fn on_synced_state(&mut self, now_ms: u64, finished: Finished) -> Outputs {
        self.now_ms = now_ms;
        let Finished { target, entries } = finished;
        self.host.store.install_state(&target, entries)?;
        self.stats.synced += 1;
        let block = target.block;
        self.host.outputs.push(Output::Finalized {
            hash: block.hash(),
            round: target.certificate.round,
            extrinsics: block.extrinsics.iter().map(|x| x.hash()).collect(),
            header: block.header,
            // Not part of the target: a node that joined by state sync has no event before it.
            events: vec![],
            synced: true,
        });
        let height = self.host.store.head().number + 1;
        self.host.height = height;
        self.host.current = HeightState::default();
        self.future.prune_below(height);
        self.phase = Phase::Idle;
        self.last_sync_request = None;
        self.finish()
    }

    /// Executes a block the network finalized. It must execute: if it does not, this node's
    /// state has diverged and it must stop.
    pub(super) fn execute_finalized(&self, block: &Block) -> Result<ExecutedBlock, DriverError> {
        let state = self.host.store.state();
        execute_block(
            &state,
            self.host.store.head(),
            block,
            self.host.ctx.genesis(),
        )
        .map_err(|e| DriverError::Diverged {
            number: block.header.number,
            reason: e.to_string(),
        })
    }

    fn check_certificate(&self, block: &Block, c: &WireCertificate) -> Result<(), String> {
        let number = block.header.number;
        if c.height != number || c.block_hash != block.hash() {
            return Err("it is for another block".into());
        }
        let vset = self
            .host
            .validator_set(number)
            .ok_or_else(|| "no validator set known for its height".to_string())?;
        let cert = codec::certificate_from_wire(c).map_err(|e| e.to_string())?;
        let mut seen = BTreeSet::new();
        if !c.signatures.iter().all(|(a, _)| seen.insert(*a)) {
            return Err("a validator signs twice".into());
        }
        self.host
            .signer
            .verify_commit_certificate(&self.host.ctx, &cert, &vset, ThresholdParams::default())
            .map_err(|e| format!("{e:?}"))
    }
}
