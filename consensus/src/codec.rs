//! Wire and disk encodings of consensus messages, WAL records and commit certificates (SCALE
//! with explicit indices). Everything decoded here came from outside the process: decoding is
//! bounded in size and nesting, and a `Round::Nil` where a round is required is refused, since
//! the core would otherwise ask for the proposer of a nil round.

use drchain_runtime::{Block, MAX_DECODE_DEPTH};
use drchain_support::{AccountId, Signature, H256};
use malachitebft_core_consensus::{ProposedValue, SignedConsensusMsg, WalEntry};
use malachitebft_core_types::{
    CommitCertificate, CommitSignature, NilOrVal, PolkaCertificate, PolkaSignature, Round,
    RoundCertificate, RoundCertificateType, RoundSignature, SignedProposal, SignedVote, Timeout,
    TimeoutKind, Validity, VoteType,
};
use parity_scale_codec::{Decode, DecodeLimit, Encode};

use crate::context::{Address, BlockValue, Ctx, Height, Proposal, Vote};

/// Largest consensus message accepted (a proposal carries a whole block).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Bigger than allowed.
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not a valid encoding.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The codec's complaint.
        reason: String,
    },
    /// A round that must be defined was nil.
    #[error("{what} has a nil round")]
    NilRound {
        /// What carried it.
        what: &'static str,
    },
}

/// Decodes untrusted bytes with the size and depth limits, requiring every byte to be used.
pub fn decode_bounded<T: Decode>(
    bytes: &[u8],
    max: usize,
    what: &'static str,
) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    let mut input = bytes;
    let value = T::decode_with_depth_limit(MAX_DECODE_DEPTH, &mut input).map_err(|e| {
        DecodeError::Malformed {
            what,
            reason: e.to_string(),
        }
    })?;
    if !input.is_empty() {
        return Err(DecodeError::Malformed {
            what,
            reason: format!("{} trailing bytes", input.len()),
        });
    }
    Ok(value)
}

pub(crate) fn round_from_wire(round: i64, what: &'static str) -> Result<Round, DecodeError> {
    match u32::try_from(round) {
        Ok(r) => Ok(Round::new(r)),
        Err(_) => Err(DecodeError::NilRound { what }),
    }
}

fn pol_round_from_wire(round: i64) -> Round {
    u32::try_from(round).map(Round::new).unwrap_or(Round::Nil)
}

/// A signed proposal on the wire: the whole block travels with it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WireProposal {
    pub height: u64,
    /// Round (never negative).
    pub round: i64,
    /// Proof-of-lock round, -1 for none.
    pub pol_round: i64,
    pub proposer: AccountId,
    pub block: Block,
    /// Proposer's signature over [`Proposal::sign_bytes`].
    pub signature: Signature,
}

/// A signed vote on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WireVote {
    /// 0 prevote, 1 precommit.
    pub vote_type: u8,
    pub height: u64,
    /// Round (never negative).
    pub round: i64,
    /// Block hash, or `None` for nil.
    pub value: Option<H256>,
    /// Voter.
    pub validator: AccountId,
    /// Voter's signature over [`Vote::sign_bytes`].
    pub signature: Signature,
}

/// A decided block's commit certificate: 2/3+ precommit signatures for its hash. Anyone can
/// check it against the validator set of its height.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WireCertificate {
    pub height: u64,
    /// Round of the decision.
    pub round: i64,
    /// The decided block hash.
    pub block_hash: H256,
    /// Precommit signatures.
    pub signatures: Vec<(AccountId, Signature)>,
}

impl WireCertificate {
    /// A round-0 commit certificate for block `hash` at `height`, signed by `keys`: how a tool
    /// that builds a chain outside consensus (a benchmark's long chain, tests) certifies it.
    pub fn signed_by(
        genesis: &H256,
        height: u64,
        hash: H256,
        keys: &[ed25519_dalek::SigningKey],
    ) -> Self {
        use ed25519_dalek::Signer;
        let signatures = keys
            .iter()
            .map(|key| {
                let account = AccountId::from(key);
                let vote = Vote {
                    vote_type: VoteType::Precommit,
                    height: Height(height),
                    round: Round::new(0),
                    value: NilOrVal::Val(hash),
                    validator: Address(account),
                };
                let signature = Signature(key.sign(&vote.sign_bytes(genesis)).to_bytes());
                (account, signature)
            })
            .collect();
        Self {
            height,
            round: 0,
            block_hash: hash,
            signatures,
        }
    }
}

/// 2/3+ prevotes for one value in one round (a "polka"): sent with a re-proposal so peers
/// that missed those prevotes can still accept the value.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WirePolkaCertificate {
    pub height: u64,
    /// Round of the prevotes.
    pub round: i64,
    pub block_hash: H256,
    /// Prevote signatures.
    pub signatures: Vec<(AccountId, Signature)>,
}

/// Votes of one round that let a lagging peer skip to it (a "skip" certificate: 1/3+ of any
/// votes at a higher round) or leave it (a "precommit" certificate: 2/3+ precommits of any).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WireRoundCertificate {
    pub height: u64,
    pub round: i64,
    /// 0 skip, 1 precommit.
    pub kind: u8,
    /// (vote type, value or nil, voter, signature).
    pub signatures: Vec<(u8, Option<H256>, AccountId, Signature)>,
}

/// A message on the consensus gossip topic.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ConsensusMessage {
    /// A proposal with its block.
    #[codec(index = 0)]
    Proposal(WireProposal),
    /// A vote (fresh or republished for liveness).
    #[codec(index = 1)]
    Vote(WireVote),
    /// A polka certificate (liveness).
    #[codec(index = 2)]
    PolkaCertificate(WirePolkaCertificate),
    /// A round certificate (liveness).
    #[codec(index = 3)]
    RoundCertificate(WireRoundCertificate),
}

impl ConsensusMessage {
    /// The height the message belongs to.
    pub fn height(&self) -> u64 {
        match self {
            ConsensusMessage::Proposal(p) => p.height,
            ConsensusMessage::Vote(v) => v.height,
            ConsensusMessage::PolkaCertificate(c) => c.height,
            ConsensusMessage::RoundCertificate(c) => c.height,
        }
    }

    /// Decodes a message received from a peer.
    pub fn decode_untrusted(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_bounded(bytes, MAX_MESSAGE_BYTES, "consensus message")
    }
}

/// From the core's signed proposal.
pub fn proposal_to_wire(p: &SignedProposal<Ctx>) -> WireProposal {
    WireProposal {
        height: p.message.height.0,
        round: p.message.round.as_i64(),
        pol_round: p.message.pol_round.as_i64(),
        proposer: p.message.proposer.0,
        block: p.message.value.block().clone(),
        signature: p.signature,
    }
}

/// To the core's signed proposal.
pub fn proposal_from_wire(p: WireProposal) -> Result<SignedProposal<Ctx>, DecodeError> {
    let proposal = Proposal {
        height: Height(p.height),
        round: round_from_wire(p.round, "proposal")?,
        value: BlockValue::new(p.block),
        pol_round: pol_round_from_wire(p.pol_round),
        proposer: Address(p.proposer),
    };
    Ok(SignedProposal::new(proposal, p.signature))
}

/// From the core's signed vote.
pub fn vote_to_wire(v: &SignedVote<Ctx>) -> WireVote {
    WireVote {
        vote_type: crate::context::vote_type_code(v.message.vote_type),
        height: v.message.height.0,
        round: v.message.round.as_i64(),
        value: crate::context::nil_or_value(&v.message.value),
        validator: v.message.validator.0,
        signature: v.signature,
    }
}

/// To the core's signed vote.
pub fn vote_from_wire(v: WireVote) -> Result<SignedVote<Ctx>, DecodeError> {
    let vote_type = vote_type_from_wire(v.vote_type, "vote")?;
    let vote = Vote {
        vote_type,
        height: Height(v.height),
        round: round_from_wire(v.round, "vote")?,
        value: v.value.map_or(NilOrVal::Nil, NilOrVal::Val),
        validator: Address(v.validator),
    };
    Ok(SignedVote::new(vote, v.signature))
}

fn vote_type_from_wire(code: u8, what: &'static str) -> Result<VoteType, DecodeError> {
    match code {
        0 => Ok(VoteType::Prevote),
        1 => Ok(VoteType::Precommit),
        other => Err(DecodeError::Malformed {
            what,
            reason: format!("unknown vote type {other}"),
        }),
    }
}

/// From the core's polka certificate.
pub fn polka_to_wire(c: &PolkaCertificate<Ctx>) -> WirePolkaCertificate {
    WirePolkaCertificate {
        height: c.height.0,
        round: c.round.as_i64(),
        block_hash: c.value_id,
        signatures: c
            .polka_signatures
            .iter()
            .map(|s| (s.address.0, s.signature))
            .collect(),
    }
}

/// To the core's polka certificate.
pub fn polka_from_wire(c: WirePolkaCertificate) -> Result<PolkaCertificate<Ctx>, DecodeError> {
    Ok(PolkaCertificate {
        height: Height(c.height),
        round: round_from_wire(c.round, "polka certificate")?,
        value_id: c.block_hash,
        polka_signatures: c
            .signatures
            .into_iter()
            .map(|(a, s)| PolkaSignature::new(Address(a), s))
            .collect(),
    })
}

/// From the core's round certificate.
pub fn round_certificate_to_wire(c: &RoundCertificate<Ctx>) -> WireRoundCertificate {
    WireRoundCertificate {
        height: c.height.0,
        round: c.round.as_i64(),
        kind: match c.cert_type {
            RoundCertificateType::Skip => 0,
            RoundCertificateType::Precommit => 1,
        },
        signatures: c
            .round_signatures
            .iter()
            .map(|s| {
                let value = crate::context::nil_or_value(&s.value_id);
                (
                    crate::context::vote_type_code(s.vote_type),
                    value,
                    s.address.0,
                    s.signature,
                )
            })
            .collect(),
    }
}

/// To the core's round certificate.
pub fn round_certificate_from_wire(
    c: WireRoundCertificate,
) -> Result<RoundCertificate<Ctx>, DecodeError> {
    let cert_type = match c.kind {
        0 => RoundCertificateType::Skip,
        1 => RoundCertificateType::Precommit,
        other => {
            return Err(DecodeError::Malformed {
                what: "round certificate",
                reason: format!("unknown kind {other}"),
            })
        }
    };
    let round_signatures = c
        .signatures
        .into_iter()
        .map(|(t, value, a, s)| {
            Ok(RoundSignature {
                vote_type: vote_type_from_wire(t, "round certificate")?,
                value_id: value.map_or(NilOrVal::Nil, NilOrVal::Val),
                address: Address(a),
                signature: s,
            })
        })
        .collect::<Result<_, DecodeError>>()?;
    Ok(RoundCertificate {
        height: Height(c.height),
        round: round_from_wire(c.round, "round certificate")?,
        cert_type,
        round_signatures,
    })
}

/// From the core's certificate.
pub fn certificate_to_wire(c: &CommitCertificate<Ctx>) -> WireCertificate {
    WireCertificate {
        height: c.height.0,
        round: c.round.as_i64(),
        block_hash: c.value_id,
        signatures: c
            .commit_signatures
            .iter()
            .map(|s| (s.address.0, s.signature))
            .collect(),
    }
}

/// To the core's certificate.
pub fn certificate_from_wire(c: &WireCertificate) -> Result<CommitCertificate<Ctx>, DecodeError> {
    Ok(CommitCertificate {
        height: Height(c.height),
        round: round_from_wire(c.round, "certificate")?,
        value_id: c.block_hash,
        commit_signatures: c
            .signatures
            .iter()
            .map(|(a, s)| CommitSignature::new(Address(*a), *s))
            .collect(),
    })
}

/// A consensus WAL record, as stored on disk.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum WalRecord {
    /// A proposal or vote the core accepted (ours included).
    #[codec(index = 0)]
    Message(ConsensusMessage),
    /// A timeout that elapsed: kind (0 propose, 1 prevote, 2 precommit) and round.
    #[codec(index = 1)]
    Timeout {
        /// Kind code.
        kind: u8,
        round: i64,
    },
    /// A proposed value with its validity.
    #[codec(index = 2)]
    ProposedValue {
        height: u64,
        round: i64,
        /// Valid (POL) round, -1 for none.
        valid_round: i64,
        proposer: AccountId,
        block: Block,
        /// Whether it was valid.
        valid: bool,
    },
}

/// A WAL entry of the core as a record; `None` for entries we do not log (rebroadcast timers).
pub fn wal_record(entry: &WalEntry<Ctx>) -> Option<WalRecord> {
    Some(match entry {
        WalEntry::ConsensusMsg(SignedConsensusMsg::Vote(v)) => {
            WalRecord::Message(ConsensusMessage::Vote(vote_to_wire(v)))
        }
        WalEntry::ConsensusMsg(SignedConsensusMsg::Proposal(p)) => {
            WalRecord::Message(ConsensusMessage::Proposal(proposal_to_wire(p)))
        }
        WalEntry::Timeout(t) => WalRecord::Timeout {
            kind: match t.kind {
                TimeoutKind::Propose => 0,
                TimeoutKind::Prevote => 1,
                TimeoutKind::Precommit => 2,
                TimeoutKind::Rebroadcast => return None,
            },
            round: t.round.as_i64(),
        },
        WalEntry::ProposedValue(v) => WalRecord::ProposedValue {
            height: v.height.0,
            round: v.round.as_i64(),
            valid_round: v.valid_round.as_i64(),
            proposer: v.proposer.0,
            block: v.value.block().clone(),
            valid: v.validity.is_valid(),
        },
    })
}

/// What a WAL record replays as.
#[derive(Debug, Clone)]
pub enum Replayed {
    Proposal(SignedProposal<Ctx>),
    Vote(SignedVote<Ctx>),
    /// A polka certificate we applied.
    PolkaCertificate(PolkaCertificate<Ctx>),
    /// A round certificate we applied.
    RoundCertificate(RoundCertificate<Ctx>),
    /// An elapsed timeout.
    Timeout(Timeout),
    ProposedValue(ProposedValue<Ctx>),
}

/// Decodes a WAL record back into the input it replays as.
pub fn replay_record(record: WalRecord) -> Result<Replayed, DecodeError> {
    Ok(match record {
        WalRecord::Message(ConsensusMessage::Proposal(p)) => {
            Replayed::Proposal(proposal_from_wire(p)?)
        }
        WalRecord::Message(ConsensusMessage::Vote(v)) => Replayed::Vote(vote_from_wire(v)?),
        WalRecord::Message(ConsensusMessage::PolkaCertificate(c)) => {
            Replayed::PolkaCertificate(polka_from_wire(c)?)
        }
        WalRecord::Message(ConsensusMessage::RoundCertificate(c)) => {
            Replayed::RoundCertificate(round_certificate_from_wire(c)?)
        }
        WalRecord::Timeout { kind, round } => {
            let round = round_from_wire(round, "timeout")?;
            let kind = match kind {
                0 => TimeoutKind::Propose,
                1 => TimeoutKind::Prevote,
                2 => TimeoutKind::Precommit,
                other => {
                    return Err(DecodeError::Malformed {
                        what: "WAL timeout",
                        reason: format!("unknown kind {other}"),
                    })
                }
            };
            Replayed::Timeout(Timeout::new(round, kind))
        }
        WalRecord::ProposedValue {
            height,
            round,
            valid_round,
            proposer,
            block,
            valid,
        } => Replayed::ProposedValue(ProposedValue {
            height: Height(height),
            round: round_from_wire(round, "WAL proposed value")?,
            valid_round: pol_round_from_wire(valid_round),
            proposer: Address(proposer),
            value: BlockValue::new(block),
            validity: Validity::from_bool(valid),
        }),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use drchain_runtime::dev::{dev_account, specs};
    use proptest::prelude::*;

    use super::*;

    fn block() -> Block {
        let g = specs::local().unwrap().build_genesis().unwrap();
        let built = drchain_runtime::build_block(
            &g.state,
            &g.header,
            g.header.timestamp + 10,
            &g.hash(),
            [],
            1,
        )
        .unwrap();
        built.block
    }

    fn vote(round: i64) -> WireVote {
        WireVote {
            vote_type: 1,
            height: 3,
            round,
            value: Some(H256([9; 32])),
            validator: dev_account("bob"),
            signature: Signature([7; 64]),
        }
    }

    fn messages() -> Vec<ConsensusMessage> {
        vec![
            ConsensusMessage::Proposal(WireProposal {
                height: 1,
                round: 2,
                pol_round: -1,
                proposer: dev_account("alice"),
                block: block(),
                signature: Signature([3; 64]),
            }),
            ConsensusMessage::Vote(vote(0)),
            ConsensusMessage::PolkaCertificate(WirePolkaCertificate {
                height: 3,
                round: 1,
                block_hash: H256([9; 32]),
                signatures: vec![(dev_account("bob"), Signature([7; 64]))],
            }),
            ConsensusMessage::RoundCertificate(WireRoundCertificate {
                height: 3,
                round: 4,
                kind: 0,
                signatures: vec![(0, None, dev_account("bob"), Signature([7; 64]))],
            }),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in messages() {
            let bytes = m.encode();
            assert_eq!(ConsensusMessage::decode_untrusted(&bytes).unwrap(), m);
        }
        let p = match &messages()[0] {
            ConsensusMessage::Proposal(p) => p.clone(),
            _ => unreachable!(),
        };
        let core = proposal_from_wire(p.clone()).unwrap();
        assert_eq!(proposal_to_wire(&core), p);
        let core = vote_from_wire(vote(5)).unwrap();
        assert_eq!(vote_to_wire(&core), vote(5));
    }

    #[test]
    fn trailing_oversized_and_unknown_bytes_are_refused() {
        let mut bytes = ConsensusMessage::Vote(vote(0)).encode();
        bytes.push(0);
        assert!(matches!(
            ConsensusMessage::decode_untrusted(&bytes),
            Err(DecodeError::Malformed { .. })
        ));
        let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            ConsensusMessage::decode_untrusted(&big),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(ConsensusMessage::decode_untrusted(&[9]).is_err());
        let mut bad_type = vote(0);
        bad_type.vote_type = 7;
        assert!(vote_from_wire(bad_type).is_err());
    }

    #[test]
    fn a_nil_round_is_refused_where_a_round_is_required() {
        assert_eq!(
            vote_from_wire(vote(-1)).unwrap_err(),
            DecodeError::NilRound { what: "vote" }
        );
        let mut cert = certificate_to_wire(&CommitCertificate {
            height: Height(1),
            round: Round::new(0),
            value_id: H256([1; 32]),
            commit_signatures: vec![],
        });
        cert.round = -5;
        assert!(certificate_from_wire(&cert).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(m) = ConsensusMessage::decode_untrusted(&bytes) {
                // Whatever decodes re-encodes to the same bytes (no ambiguity on the wire).
                prop_assert_eq!(m.encode(), bytes);
            }
        }

        #[test]
        fn corrupted_messages_never_panic(index in 0usize..4, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = messages()[index].encode();
            for (at, x) in flips {
                let at = at % bytes.len();
                bytes[at] ^= x;
            }
            if let Ok(m) = ConsensusMessage::decode_untrusted(&bytes) {
                let _ = match m {
                    ConsensusMessage::Proposal(p) => proposal_from_wire(p).map(|_| ()),
                    ConsensusMessage::Vote(v) => vote_from_wire(v).map(|_| ()),
                    ConsensusMessage::PolkaCertificate(c) => polka_from_wire(c).map(|_| ()),
                    ConsensusMessage::RoundCertificate(c) => {
                        round_certificate_from_wire(c).map(|_| ())
                    }
                };
            }
        }
    }
}
