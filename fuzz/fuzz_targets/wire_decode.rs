//! Every JSON wire message decoder (`kiosk_schemas::wire::decode`) on
//! arbitrary bytes: never a panic, and whatever decodes re-encodes and
//! decodes again to the same value.
#![no_main]

use kiosk_schemas::{
    CashAck, CashControl, CashEvent, Command, JobResult, KioskStatus, PrintJob, wire,
};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(msg) = wire::decode::<T>(data, LIMIT) {
        let again: T = wire::decode(&wire::encode(&msg), LIMIT).expect("re-decodes");
        assert_eq!(msg, again);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<PrintJob>(data);
    round_trip::<JobResult>(data);
    round_trip::<KioskStatus>(data);
    round_trip::<CashEvent>(data);
    round_trip::<CashAck>(data);
    round_trip::<CashControl>(data);
    round_trip::<Command>(data);
    let _ = wire::peek_job_id(data);
});
