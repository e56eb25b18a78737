//! Every decoder of the fleet state, on bytes from a store that may hold anything: the raw
//! value, and the same bytes inside a valid envelope of each kind (so the body decoders are
//! reached past the checksum). Also the change events and key parsing. A decoder may refuse;
//! it must never panic, loop or allocate without bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mirrorfleet_crds::state::envelope::{self, Kind};
use mirrorfleet_crds::state::{
    Availability, ChangeEvent, FleetState, IndexChunk, IndexMeta, KeyRef, MirrorHealth,
};

fn all(value: &[u8]) {
    let _ = FleetState::decode(value);
    let _ = IndexMeta::decode(value);
    let _ = IndexChunk::decode(value);
    let _ = Availability::decode(value);
    let _ = MirrorHealth::decode(value);
}

fuzz_target!(|data: &[u8]| {
    all(data);
    for kind in [
        Kind::Fleet,
        Kind::IndexMeta,
        Kind::IndexChunk,
        Kind::Availability,
        Kind::Health,
    ] {
        all(&envelope::encode(kind, data));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ChangeEvent::parse(text);
        let _ = KeyRef::parse(text);
    }
});
