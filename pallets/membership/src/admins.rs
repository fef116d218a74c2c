//! The admins and their threshold: proposals of admin calls, approvals, and the checks on
//! an admin set.

use drchain_support::{AccountId, BlockNumber, Overlay, H256};

use crate::*;

/// Whether `account` is an admin.
pub fn is_admin(state: &Overlay<'_>, account: &AccountId) -> bool {
    Admins::get(state).unwrap_or_default().contains(account)
}

/// Approvals an admin call needs.
pub fn admin_threshold(state: &Overlay<'_>) -> u32 {
    AdminThreshold::get(state).unwrap_or(1)
}

/// What became of an admin proposal or approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// More approvals needed.
    Pending {
        /// Approvals so far.
        approvals: u32,
        /// Approvals needed.
        threshold: u32,
    },
    /// Threshold reached: the proposal was removed; dispatch this encoded call as admin.
    Approved {
        /// The encoded call.
        call: Vec<u8>,
    },
}

/// Records a new admin proposal by `who`. Returns its hash and whether it is already approved.
pub fn propose(
    state: &mut Overlay<'_>,
    who: AccountId,
    call: Vec<u8>,
    now: BlockNumber,
) -> Result<(H256, Approval), Error> {
    if !is_admin(state, &who) {
        return Err(Error::NotAnAdmin { account: who });
    }
    let proposal = drchain_support::blake3_hash(&call);
    if AdminProposals::contains(state, &proposal) {
        return Err(Error::ProposalExists { proposal });
    }
    AdminProposals::insert(
        state,
        &proposal,
        &AdminProposal {
            call,
            proposer: who,
            approvals: vec![],
            proposed_at: now,
        },
    );
    let approval = approve(state, who, proposal)?;
    Ok((proposal, approval))
}

/// Adds `who`'s approval to a proposal.
pub fn approve(state: &mut Overlay<'_>, who: AccountId, proposal: H256) -> Result<Approval, Error> {
    if !is_admin(state, &who) {
        return Err(Error::NotAnAdmin { account: who });
    }
    let mut p = AdminProposals::get(state, &proposal).ok_or(Error::UnknownProposal { proposal })?;
    if p.approvals.contains(&who) {
        return Err(Error::AlreadyApproved { account: who });
    }
    p.approvals.push(who);
    let threshold = admin_threshold(state);
    let admins = Admins::get(state).unwrap_or_default();
    let approvals = p.approvals.iter().filter(|a| admins.contains(a)).count() as u32;
    if approvals >= threshold {
        AdminProposals::remove(state, &proposal);
        Ok(Approval::Approved { call: p.call })
    } else {
        AdminProposals::insert(state, &proposal, &p);
        Ok(Approval::Pending {
            approvals,
            threshold,
        })
    }
}

/// Withdraws a proposal (any admin may).
pub fn cancel(state: &mut Overlay<'_>, who: AccountId, proposal: H256) -> Result<(), Error> {
    if !is_admin(state, &who) {
        return Err(Error::NotAnAdmin { account: who });
    }
    if !AdminProposals::contains(state, &proposal) {
        return Err(Error::UnknownProposal { proposal });
    }
    AdminProposals::remove(state, &proposal);
    Ok(())
}

pub(crate) fn check_admins(admins: &[AccountId], threshold: u32) -> Result<Vec<AccountId>, Error> {
    let mut sorted = admins.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != admins.len() {
        return Err(Error::InvalidAdmins {
            reason: "duplicate admin".into(),
        });
    }
    if sorted.is_empty() || sorted.len() > MAX_ADMINS {
        return Err(Error::InvalidAdmins {
            reason: format!("need 1 to {MAX_ADMINS} admins"),
        });
    }
    if threshold == 0 || threshold as usize > sorted.len() {
        return Err(Error::InvalidAdmins {
            reason: format!(
                "threshold {threshold} must be between 1 and {}",
                sorted.len()
            ),
        });
    }
    Ok(sorted)
}
