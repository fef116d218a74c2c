//! Maintenance mode (Patroni's `pause`): while a service is paused the chain makes no
//! automatic election for it, so operators can restart or upgrade its nodes without a
//! failover. Holder faults from heartbeats, health and promotion deadlines are ignored; a
//! holder that is no longer admitted or no longer a candidate is still deposed (it must not
//! serve), and the service is then left vacant. An admin switchover still works.

use drchain_support::{storage_map, BlockNumber, Env, Overlay, ServiceError, ServiceName};
use parity_scale_codec::{Decode, Encode};
use serde::Serialize;

use crate::{Error, Event, Reason, Services};

/// Since when a service is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct PauseRecord {
    /// The block that paused it.
    pub since_block: BlockNumber,
}

storage_map!(
    /// Services in maintenance mode.
    pub Paused: ServiceName => PauseRecord, "Failover"
);

/// Whether `service` is paused, and since when.
pub fn paused(state: &Overlay<'_>, service: &ServiceName) -> Option<PauseRecord> {
    Paused::get(state, service)
}

/// Whether a holder fault of this kind is acted on while the service is paused: only the ones
/// that mean the holder must not serve at all.
pub(crate) fn overrides_pause(reason: Reason) -> bool {
    matches!(reason, Reason::NotAdmitted | Reason::RemovedFromCandidates)
}

pub(crate) fn pause<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    service: ServiceName,
) -> Result<(), Error> {
    if !Services::contains(env.state, &service) {
        return Err(ServiceError::UnknownService { service }.into());
    }
    if Paused::contains(env.state, &service) {
        return Err(Error::AlreadyPaused { service });
    }
    let record = PauseRecord {
        since_block: env.block.number,
    };
    Paused::insert(env.state, &service, &record);
    env.deposit(Event::Paused { service });
    Ok(())
}

pub(crate) fn resume<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    service: ServiceName,
) -> Result<(), Error> {
    if !Services::contains(env.state, &service) {
        return Err(ServiceError::UnknownService { service }.into());
    }
    if !Paused::contains(env.state, &service) {
        return Err(Error::NotPaused { service });
    }
    Paused::remove(env.state, &service);
    env.deposit(Event::Resumed { service });
    Ok(())
}
