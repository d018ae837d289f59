//! The ACL file parser and its decisions on arbitrary text: never a panic;
//! the first input line is also used as username, client id and topic.
#![no_main]

use kiosk_broker::Acl;
use kiosk_broker::credentials::Role;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let probe = text.lines().next().unwrap_or_default();
    if let Ok(acl) = Acl::parse(text) {
        for role in [None, Some(Role::Kiosk), Some(Role::Technician)] {
            let client = acl.for_client(probe, probe, role);
            let _ = client.may_subscribe(probe);
            let _ = client.may_publish(probe);
            let _ = client.may_subscribe("kiosk/+/#");
        }
    }
    // The built-in policy on arbitrary identities and topics.
    let client = Acl::default_policy().for_client(probe, probe, Some(Role::Kiosk));
    let _ = client.may_subscribe(probe);
    let _ = client.may_publish(probe);
});
