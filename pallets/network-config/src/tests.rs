use drchain_support::{BlockInfo, MemoryState, StaticDirectory, StaticService};

use super::*;

fn directory() -> StaticDirectory {
    let service = StaticService {
        candidates: vec![AccountId([1; 32])],
        ..Default::default()
    };
    StaticDirectory {
        services: [(db(), service)].into(),
    }
}

fn call(origin: Origin, c: Call) -> (Result<(), Error>, Vec<Event>, MemoryState) {
    let mut base = MemoryState::new();
    let mut events = vec![];
    let mut o = Overlay::new(&base);
    let r = {
        let mut env = Env::new(&mut o, BlockInfo::default(), &mut events);
        dispatch(&mut env, &directory(), origin, c)
    };
    let changes = o.into_changes();
    base.commit(changes);
    (r, events, base)
}

fn db() -> ServiceName {
    ServiceName::new("db").unwrap()
}

#[test]
fn params_are_validated_and_need_admin() {
    let good = ChainParams {
        max_block_interval_ms: 100,
        max_drift_ms: 250,
        live_clock_max_gap_ms: 300,
    };
    let (r, events, s) = call(Origin::Admin, Call::SetParams { params: good });
    r.unwrap();
    assert_eq!(events, vec![Event::ParamsChanged { params: good }]);
    assert_eq!(params(&Overlay::new(&s)), good);

    let gap_too_small = ChainParams {
        live_clock_max_gap_ms: 50,
        ..good
    };
    assert!(matches!(
        call(
            Origin::Admin,
            Call::SetParams {
                params: gap_too_small
            }
        )
        .0,
        Err(Error::InvalidParams { .. })
    ));
    let signed = Origin::Signed(AccountId([1; 32]));
    assert!(matches!(
        call(signed, Call::SetParams { params: good }).0,
        Err(Error::BadOrigin(_))
    ));
}

#[test]
fn bootnodes_must_be_multiaddresses() {
    let ok = vec!["/ip4/127.0.0.1/tcp/30333".to_string()];
    assert!(call(Origin::Admin, Call::SetBootnodes { bootnodes: ok })
        .0
        .is_ok());
    for bad in ["127.0.0.1:30333", "/ip4//tcp/1", "/"] {
        let r = call(
            Origin::Admin,
            Call::SetBootnodes {
                bootnodes: vec![bad.into()],
            },
        )
        .0;
        assert!(matches!(r, Err(Error::InvalidBootnode { .. })), "{bad}");
    }
}

#[test]
fn a_node_sets_its_own_endpoint_only() {
    let me = AccountId([1; 32]);
    let other = AccountId([2; 32]);
    let set = |node, e: &str| Call::SetEndpoint {
        service: db(),
        node,
        endpoint: Some(e.into()),
    };
    let (r, _, s) = call(Origin::Signed(me), set(me, "10.0.0.1:5432"));
    r.unwrap();
    assert_eq!(
        endpoint(&Overlay::new(&s), &db(), &me),
        Some("10.0.0.1:5432".into())
    );
    assert!(matches!(
        call(Origin::Signed(other), set(me, "h:1")).0,
        Err(Error::BadOrigin(_))
    ));
    assert!(matches!(
        call(Origin::Admin, set(other, "h:1")).0,
        Err(Error::Service(ServiceError::NotACandidate { .. }))
    ));
    for bad in ["nohost", "h:0", "h:99999", ":80", "bad host:1"] {
        assert!(
            matches!(
                call(Origin::Admin, set(me, bad)).0,
                Err(Error::InvalidEndpoint { .. })
            ),
            "{bad}"
        );
    }
    assert!(call(Origin::Admin, set(me, "[::1]:8080")).0.is_ok());
    let unknown = Call::SetEndpoint {
        service: ServiceName::new("x").unwrap(),
        node: me,
        endpoint: None,
    };
    assert!(matches!(
        call(Origin::Admin, unknown).0,
        Err(Error::Service(ServiceError::UnknownService { .. }))
    ));
}
