//! On the virtual clock (`common`): the session limits. `max_sessions` bounds publishers and
//! viewers together, with `publisher_reserve` of them kept for publishers (`Overloaded`);
//! `max_sessions_per_address` bounds one client address, an IPv6 /64 counting as one
//! (`TooManyFromAddress`). Sessions count from their offer, connected or not, and their places
//! are freed when they close or when an offer that never connects times out.

use std::time::Duration;

use crate::common::Net;
use media::{MediaConfig, MediaError};

fn config(max_sessions: usize, publisher_reserve: usize, per_address: usize) -> MediaConfig {
    MediaConfig {
        max_sessions,
        publisher_reserve,
        max_sessions_per_address: per_address,
        ..MediaConfig::default()
    }
}

/// The error an offer was refused with.
fn refused(result: Result<usize, MediaError>) -> MediaError {
    match result {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    }
}

fn close(net: &mut Net, peer: usize) {
    let session = net.peers[peer].session.expect("a session");
    net.sfu.close(net.now, session).expect("open");
}

#[test]
fn viewers_stop_at_the_publisher_reserve_and_publishers_at_the_limit() {
    let mut net = Net::new(config(4, 2, 32));
    let p1 = net.publisher("10.0.0.2:5000", "a");
    let v1 = net.viewer("10.0.1.1:6000", "a");
    // Two sessions: the other two are the publishers'.
    assert!(matches!(
        refused(net.try_viewer("10.0.1.2:6000", "a")),
        MediaError::Overloaded
    ),);
    let p2 = net.publisher("10.0.0.3:5000", "b");
    let p3 = net.publisher("10.0.0.4:5000", "c");
    assert!(matches!(
        refused(net.try_publisher("10.0.0.5:5000", "d")),
        MediaError::Overloaded
    ),);
    assert_eq!(net.sfu.session_count(), 4);
    assert_eq!(net.count(|m| &m.sessions_rejected), 2);

    // A publisher leaving frees a place for one.
    close(&mut net, p3);
    let p4 = net.publisher("10.0.0.5:5000", "d");
    // A viewer leaving does not make room for viewers while publishers hold the reserve...
    close(&mut net, v1);
    assert!(matches!(
        refused(net.try_viewer("10.0.1.2:6000", "a")),
        MediaError::Overloaded
    ),);
    // ...publishers leaving does.
    close(&mut net, p2);
    close(&mut net, p4);
    assert_eq!(net.sfu.session_count(), 1);
    net.viewer("10.0.1.2:6000", "a");
    let _ = p1;
}

#[test]
fn one_address_holds_at_most_its_share_an_ipv6_64_counting_as_one() {
    let mut net = Net::new(config(100, 0, 2));
    net.publisher("10.0.0.2:5000", "a");
    net.viewer("10.0.0.2:5001", "a");
    assert!(matches!(
        refused(net.try_viewer("10.0.0.2:5002", "a")),
        MediaError::TooManyFromAddress(2)
    ),);
    assert!(
        matches!(
            refused(net.try_publisher("10.0.0.2:5003", "b")),
            MediaError::TooManyFromAddress(2)
        ),
        "publishers too"
    );
    net.viewer("10.0.0.3:5000", "a");

    // Two addresses of one /64 are one client; the next /64 is another.
    let v6 = net.viewer("[2001:db8:0:1::1]:5000", "a");
    net.viewer("[2001:db8:0:1::2]:5000", "a");
    assert!(matches!(
        refused(net.try_viewer("[2001:db8:0:1:ffff::3]:5000", "a")),
        MediaError::TooManyFromAddress(2)
    ),);
    net.viewer("[2001:db8:0:2::1]:5000", "a");

    // Leaving frees the address's place.
    close(&mut net, v6);
    net.viewer("[2001:db8:0:1::3]:5000", "a");
}

#[test]
fn offers_that_never_connect_give_their_places_back_at_the_connect_timeout() {
    let config = MediaConfig {
        connect_timeout: Duration::from_secs(2),
        ..config(2, 0, 2)
    };
    let timeout = config.connect_timeout;
    let mut net = Net::new(config);
    // Answered, then gone: their checks never arrive.
    let p = net.publisher("10.0.0.2:5000", "a");
    let v = net.viewer("10.0.0.2:5001", "a");
    net.peers[p].cut = true;
    net.peers[v].cut = true;
    assert!(matches!(
        refused(net.try_publisher("10.0.0.3:5000", "b")),
        MediaError::Overloaded
    ),);
    assert!(matches!(
        refused(net.try_viewer("10.0.0.2:5002", "a")),
        MediaError::Overloaded
    ),);

    net.advance(timeout + Duration::from_millis(100));
    assert_eq!(net.sfu.session_count(), 0);
    // Both the total and the address's count are free again: the same address publishes
    // twice, and connects.
    let p = net.publisher("10.0.0.2:5003", "a");
    net.publisher("10.0.0.2:5004", "b");
    net.run_until(Duration::from_secs(2), |n| n.peers[p].connected());
    assert_eq!(net.sfu.session_count(), 2);
}
