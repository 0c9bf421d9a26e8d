//! The stored-record decoder: arbitrary bytes from disk must decode to a
//! valid record or a clean error, never a panic; and whatever decodes must
//! survive an encode/decode round trip unchanged. The first byte picks the
//! resource, so every resource's path is covered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settingsd::{
    domain::AccountSid,
    resource::Resource,
    store::sled::codec::{decode, encode},
};

fuzz_target!(|data: &[u8]| {
    let Some((pick, data)) = data.split_first() else {
        return;
    };
    let resource = Resource::ALL[usize::from(*pick) % Resource::ALL.len()];
    let account = AccountSid::parse("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
    if let Ok(record) = decode(resource, &account, data) {
        let again =
            decode(resource, &account, &encode(&record)).expect("a re-encoded record decodes");
        assert_eq!(again, record);
    }
});
