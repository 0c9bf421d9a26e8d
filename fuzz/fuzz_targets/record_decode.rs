//! The stored-record decoder: arbitrary bytes from disk must decode to a
//! valid record or a clean error, never a panic; and whatever decodes must
//! survive an encode/decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settingsd::{
    domain::AccountSid,
    store::{decode, encode},
};

fuzz_target!(|data: &[u8]| {
    let account = AccountSid::parse("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
    if let Ok(record) = decode(&account, data) {
        let again = decode(&account, &encode(&record)).expect("a re-encoded record decodes");
        assert_eq!(again, record);
    }
});
