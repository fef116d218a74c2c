//! drchain's Malachite `Context`: heights, validator addresses (Ed25519 public keys), the
//! validator set, proposals carrying whole blocks, votes, and Ed25519 signing.
//!
//! Sign-bytes start with a domain tag and the genesis hash, so a vote or proposal can never be
//! replayed on another chain or mistaken for a transaction. A vote's sign-bytes cover only
//! (type, height, round, value id, address), as certificate checks rebuild votes from those.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use drchain_runtime::Block;
use drchain_support::{AccountId, Signature, H256};
use ed25519_dalek::{Signer as _, SigningKey};
use malachitebft_core_types as mc;
use mc::{NilOrVal, Round, SignedMessage, VoteType};
use parity_scale_codec::Encode;

/// Domain tag of vote sign-bytes.
pub const VOTE_DOMAIN: &[u8] = b"drchain/vote/v1";
/// Domain tag of proposal sign-bytes.
pub const PROPOSAL_DOMAIN: &[u8] = b"drchain/proposal/v1";

/// A block height (block number).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl mc::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A validator's address: its member account (Ed25519 public key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub AccountId);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.short())
    }
}

impl mc::Address for Address {}

/// The consensus value: a block, identified (and ordered) by its hash.
#[derive(Clone, Debug)]
pub struct BlockValue {
    hash: H256,
    block: Arc<Block>,
}

impl BlockValue {
    /// Wraps a block, hashing its header once.
    pub fn new(block: Block) -> Self {
        Self {
            hash: block.hash(),
            block: Arc::new(block),
        }
    }

    /// The block.
    pub fn block(&self) -> &Block {
        &self.block
    }

    /// The block hash (the value id).
    pub fn hash(&self) -> H256 {
        self.hash
    }
}

impl PartialEq for BlockValue {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
    }
}
impl Eq for BlockValue {}
impl PartialOrd for BlockValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for BlockValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.hash.cmp(&other.hash)
    }
}

impl mc::Value for BlockValue {
    type Id = H256;
    fn id(&self) -> H256 {
        self.hash
    }
}

/// A proposal: the block for (height, round), with its proof-of-lock round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    /// The proposed block.
    pub value: BlockValue,
    /// Round of the polka this value is re-proposed with, or `Nil` for a new value.
    pub pol_round: Round,
    pub proposer: Address,
}

impl Proposal {
    /// What the proposer signs: the block hash stands for the block.
    pub fn sign_bytes(&self, genesis: &H256) -> Vec<u8> {
        (
            PROPOSAL_DOMAIN,
            genesis,
            self.height.0,
            self.round.as_i64(),
            self.value.hash,
            self.pol_round.as_i64(),
            self.proposer.0,
        )
            .encode()
    }
}

impl mc::Proposal<Ctx> for Proposal {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &BlockValue {
        &self.value
    }
    fn take_value(self) -> BlockValue {
        self.value
    }
    fn pol_round(&self) -> Round {
        self.pol_round
    }
    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

/// Proposal parts are not used: proposals carry whole blocks (`ValuePayload::ProposalOnly`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalPart;

impl mc::ProposalPart<Ctx> for ProposalPart {
    fn is_first(&self) -> bool {
        true
    }
    fn is_last(&self) -> bool {
        true
    }
}

/// A prevote or precommit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vote {
    /// Prevote or precommit.
    pub vote_type: VoteType,
    pub height: Height,
    pub round: Round,
    /// The block hash voted for, or nil.
    pub value: NilOrVal<H256>,
    /// The voter.
    pub validator: Address,
}

/// A vote's value as we store and send it: `None` for nil.
pub fn nil_or_value(value: &NilOrVal<H256>) -> Option<H256> {
    match value {
        NilOrVal::Nil => None,
        NilOrVal::Val(v) => Some(*v),
    }
}

impl Vote {
    /// What the voter signs.
    pub fn sign_bytes(&self, genesis: &H256) -> Vec<u8> {
        let value = nil_or_value(&self.value);
        (
            VOTE_DOMAIN,
            genesis,
            vote_type_code(self.vote_type),
            self.height.0,
            self.round.as_i64(),
            value,
            self.validator.0,
        )
            .encode()
    }
}

/// Wire code of a vote type.
pub fn vote_type_code(t: VoteType) -> u8 {
    match t {
        VoteType::Prevote => 0,
        VoteType::Precommit => 1,
    }
}

impl mc::Vote<Ctx> for Vote {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &NilOrVal<H256> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<H256> {
        self.value
    }
    fn vote_type(&self) -> VoteType {
        self.vote_type
    }
    fn validator_address(&self) -> &Address {
        &self.validator
    }
    fn extension(&self) -> Option<&mc::SignedExtension<Ctx>> {
        None
    }
    fn take_extension(&mut self) -> Option<mc::SignedExtension<Ctx>> {
        None
    }
    fn extend(self, _extension: mc::SignedExtension<Ctx>) -> Self {
        self
    }
}

/// A validator: every validator has voting power 1 (the set is permissioned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    address: Address,
}

impl mc::Validator<Ctx> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }
    fn public_key(&self) -> &AccountId {
        &self.address.0
    }
    fn voting_power(&self) -> u64 {
        1
    }
}

/// The validators of a height, sorted by address (unique, deterministic order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    /// Validators that recently missed their proposer turn: last in the order (see
    /// `pallet_membership::proposers`).
    skipped: BTreeSet<AccountId>,
}

impl ValidatorSet {
    /// A set from accounts; duplicates are removed and the order made canonical.
    pub fn new(accounts: impl IntoIterator<Item = AccountId>) -> Self {
        let mut addresses: Vec<Address> = accounts.into_iter().map(Address).collect();
        addresses.sort();
        addresses.dedup();
        Self {
            validators: addresses
                .into_iter()
                .map(|address| Validator { address })
                .collect(),
            skipped: BTreeSet::new(),
        }
    }

    /// The set with `skipped` (validators that recently missed their turn) proposing last.
    pub fn skipping(mut self, skipped: BTreeSet<AccountId>) -> Self {
        self.skipped = skipped;
        self
    }

    /// Whether `account` is in the set.
    pub fn contains(&self, account: &AccountId) -> bool {
        self.validators
            .binary_search_by(|v| v.address.0.cmp(account))
            .is_ok()
    }

    /// The members' accounts, in canonical order.
    pub fn accounts(&self) -> impl Iterator<Item = AccountId> + '_ {
        self.validators.iter().map(|v| v.address.0)
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// The proposer of (height, round): round-robin over the set, shifted by height, with the
    /// validators that recently missed their turn last (`pallet_membership::proposer_order`,
    /// the order block execution records misses by).
    pub fn proposer(&self, height: Height, round: Round) -> Option<&Validator> {
        if self.validators.is_empty() {
            return None;
        }
        let accounts: Vec<AccountId> = self.accounts().collect();
        let order = pallet_membership::proposer_order(&accounts, &self.skipped, height.0);
        let round = round.as_u32().unwrap_or(0) as usize;
        let account = order.get(round % order.len())?;
        self.validators
            .binary_search_by(|v| v.address.0.cmp(account))
            .ok()
            .and_then(|i| self.validators.get(i))
    }
}

impl mc::ValidatorSet<Ctx> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }
    fn total_voting_power(&self) -> u64 {
        self.validators.len() as u64
    }
    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.validators
            .binary_search_by(|v| v.address.cmp(address))
            .ok()
            .and_then(|i| self.validators.get(i))
    }
    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// Ed25519 signing: the member key signs consensus messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ed25519;

impl mc::SigningScheme for Ed25519 {
    type DecodingError = String;
    type Signature = Signature;
    type PublicKey = AccountId;
    type PrivateKey = SigningKey;

    fn decode_signature(bytes: &[u8]) -> Result<Signature, String> {
        <[u8; 64]>::try_from(bytes)
            .map(Signature)
            .map_err(|_| format!("a signature has 64 bytes, got {}", bytes.len()))
    }

    fn encode_signature(signature: &Signature) -> Vec<u8> {
        signature.0.to_vec()
    }
}

/// The consensus context of one chain (identified by its genesis hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ctx {
    genesis: H256,
}

impl Ctx {
    /// The context of the chain with this genesis hash.
    pub fn new(genesis: H256) -> Self {
        Self { genesis }
    }

    /// The chain's genesis hash.
    pub fn genesis(&self) -> &H256 {
        &self.genesis
    }
}

impl mc::Context for Ctx {
    type Address = Address;
    type Height = Height;
    type ProposalPart = ProposalPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Value = BlockValue;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = Ed25519;

    fn select_proposer<'a>(&self, vs: &'a ValidatorSet, h: Height, r: Round) -> &'a Validator {
        // The core never passes an empty set (StartHeight refuses one) and wire rounds are
        // never Nil (the codec refuses them), so `proposer` always answers.
        #[allow(clippy::expect_used)]
        vs.proposer(h, r).expect("validator sets are never empty")
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: BlockValue,
        pol_round: Round,
        proposer: Address,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer,
        }
    }

    fn new_prevote(&self, h: Height, r: Round, id: NilOrVal<H256>, a: Address) -> Vote {
        Vote {
            vote_type: VoteType::Prevote,
            height: h,
            round: r,
            value: id,
            validator: a,
        }
    }

    fn new_precommit(&self, h: Height, r: Round, id: NilOrVal<H256>, a: Address) -> Vote {
        Vote {
            vote_type: VoteType::Precommit,
            height: h,
            round: r,
            value: id,
            validator: a,
        }
    }
}

/// Signs and verifies consensus messages of one chain.
#[derive(Clone)]
pub struct SigningProvider {
    genesis: H256,
    key: SigningKey,
}

impl fmt::Debug for SigningProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningProvider")
            .field("account", &AccountId::from(&self.key))
            .finish()
    }
}

impl SigningProvider {
    /// A provider signing with `key` for the chain `genesis`.
    pub fn new(genesis: H256, key: SigningKey) -> Self {
        Self { genesis, key }
    }

    /// The signer's account.
    pub fn account(&self) -> AccountId {
        AccountId::from(&self.key)
    }

    fn sign(&self, bytes: &[u8]) -> Signature {
        Signature(self.key.sign(bytes).to_bytes())
    }
}

impl mc::SigningProvider<Ctx> for SigningProvider {
    fn sign_vote(&self, vote: Vote) -> SignedMessage<Ctx, Vote> {
        let signature = self.sign(&vote.sign_bytes(&self.genesis));
        SignedMessage::new(vote, signature)
    }

    fn verify_signed_vote(&self, vote: &Vote, signature: &Signature, key: &AccountId) -> bool {
        key.verify(&vote.sign_bytes(&self.genesis), signature)
    }

    fn sign_proposal(&self, proposal: Proposal) -> SignedMessage<Ctx, Proposal> {
        let signature = self.sign(&proposal.sign_bytes(&self.genesis));
        SignedMessage::new(proposal, signature)
    }

    fn verify_signed_proposal(&self, p: &Proposal, signature: &Signature, key: &AccountId) -> bool {
        key.verify(&p.sign_bytes(&self.genesis), signature)
    }

    fn sign_proposal_part(&self, part: ProposalPart) -> SignedMessage<Ctx, ProposalPart> {
        SignedMessage::new(part, Signature([0; 64]))
    }

    fn verify_signed_proposal_part(&self, _: &ProposalPart, _: &Signature, _: &AccountId) -> bool {
        // Never used in ProposalOnly mode; refuse rather than accept anything.
        false
    }

    fn sign_vote_extension(&self, extension: ()) -> SignedMessage<Ctx, ()> {
        SignedMessage::new(extension, Signature([0; 64]))
    }

    fn verify_signed_vote_extension(&self, _: &(), _: &Signature, _: &AccountId) -> bool {
        false
    }
}
