//! The broker's per-connection codec (`FleetProtocol`: rumqttd's v4 codec
//! plus the topic ACL) on arbitrary bytes from a client: never a panic.
#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use kiosk_broker::{Acl, BrokerMetrics, FleetProtocol};
use libfuzzer_sys::fuzz_target;
use rumqttd::protocol::Protocol;

fuzz_target!(|data: &[u8]| {
    let acl = Arc::new(Acl::parse("pattern read k/%u/#\npattern write k/%c/out\n").expect("acl"));
    let mut codec = FleetProtocol::without_roles(acl, Arc::new(BrokerMetrics::new()));
    let mut stream = BytesMut::from(data);
    // Read packets until the codec wants more bytes or refuses.
    for _ in 0..64 {
        if codec.read_mut(&mut stream, 64 * 1024).is_err() {
            break;
        }
    }
});
